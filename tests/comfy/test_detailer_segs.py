"""The Detailer in Impact Pack's SEGS ecosystem, through ComfyUI's real executor: SEGS built the way Impact builds
them are detailed; the Detailer's and Detect SEGS' output is read the way Impact reads SEGS; a MASK as the region
source; SEG ControlNet wrappers called the way Impact's detailers call them."""
import numpy as np
import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import detailer, save_input
from comfy_client import CHECKPOINT

SIDE = 24
SQUARES = ((10, 10), (80, 12), (12, 84), (86, 86))


def _squares():
    img = np.full((128, 128, 3), 0.3, np.float32)
    colours = ((0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9), (0.9, 0.9, 0.1))
    for (x, y), c in zip(SQUARES, colours):
        img[y:y + SIDE, x:x + SIDE] = c
    return save_input("ps_segs_squares.png", img)


BOXES = ";".join(f"{x},{y},{x + SIDE},{y + SIDE}" for x, y in SQUARES)


FAST = dict(steps=1, guide_size=16)  # crops sampled at their own (36 -> 40 px) size, one step


def _run(comfy, g, *outputs):
    for out in outputs:
        g.node("PreviewImage", images=out)
    r = comfy.run(g.finalize())
    assert r.success, r.error
    return r


def _impact_segs(g, image, labels="face,face,hand,face"):
    return g.node("PSTest_ImpactSEGS", image=image, boxes=BOXES, labels=labels, crop_factor=1.5)


def test_impact_built_segs_are_detailed_and_pixels_outside_stay(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=_squares())
    segs = _impact_segs(g, load.out(0))
    d = detailer(g, load.out(0), ckpt, detector=None, sam=False, segs=segs.out(0), feather=0, **FAST)
    r = _run(comfy, g, d.out(0))
    src, out, mask = comfy.output(load.id), comfy.output(d.id, 0), comfy.output(d.id, 1)
    rec = r.ui(d.id)["precision_safe"][0]
    assert rec["notes"] == ["batch 1/1: 4 region(s) at 40x40"]  # as given: 36-px crops, sampled at their own size
    assert "detector" not in rec["ran"]
    for x, y in SQUARES:  # the SEG masks (the boxes) were detailed, nothing else
        assert (mask[0, y:y + SIDE, x:x + SIDE] == 1).all()
        assert not torch.equal(out[0, y:y + SIDE, x:x + SIDE], src[0, y:y + SIDE, x:x + SIDE])
    assert mask[0].sum() == 4 * SIDE * SIDE and torch.equal(out[0][mask[0] == 0], src[0][mask[0] == 0])


def test_label_filter_and_label_keyed_prompts_on_segs(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=_squares())
    segs = _impact_segs(g, load.out(0))
    d = detailer(g, load.out(0), ckpt, detector=None, sam=False, segs=segs.out(0), labels="face",
                 region_prompts="[face] a detailed face", clip=ckpt.out(1), **FAST)
    r = _run(comfy, g, d.out(0))
    mask = comfy.output(d.id, 1)
    assert r.ui(d.id)["precision_safe"][0]["notes"] == ["batch 1/1: 3 region(s) at 40x40"]
    x, y = SQUARES[2]  # the hand
    assert mask[0, y:y + SIDE, x:x + SIDE].sum() == 0 and mask[0].sum() > 0


def test_detailer_segs_output_is_read_the_way_impact_reads_segs(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=_squares())
    d = detailer(g, load.out(0), ckpt, feather=0, sam=False, dilation=0, **FAST)
    pasted = g.node("PSTest_ImpactSEGSPaste", image=load.out(0), segs=d.out(5))
    combined = g.node("PSTest_ImpactCombinedMask", segs=d.out(5))
    _run(comfy, g, d.out(0), pasted.out(0), g.node("MaskToImage", mask=combined.out(0)).out(0))
    segs = comfy.output(d.id, 5)
    assert len(segs[1]) == 4 and all(isinstance(s.cropped_mask, np.ndarray) for s in segs[1])
    # SEGSPaste-style pasting of our crops onto the input gives the Detailer's own output
    torch.testing.assert_close(comfy.output(pasted.id), comfy.output(d.id, 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(comfy.output(combined.id), comfy.output(d.id, 1), atol=1 / 255, rtol=0)


def test_detect_segs_node_feeds_impact_readers_and_the_detailer(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=_squares())
    det = g.node("PrecisionSafeDetectorLoader", model_name="bbox/tiny_shapes_bbox.pt")
    opts = g.node("PrecisionSafeDetailerDetectionOptions", threshold=0.5, labels="", dilation=0, crop_factor=1.5,
                  drop_size=4, min_area_ratio=0.0, max_area_ratio=1.0, top_k=0, sort_by="left-right")
    found = g.node("PrecisionSafeDetectSEGS", image=load.out(0), detector=det.out(0), detection=opts.out(0))
    combined = g.node("PSTest_ImpactCombinedMask", segs=found.out(0))
    d = detailer(g, load.out(0), ckpt, detector=None, sam=False, segs=found.out(0), **FAST)
    r = _run(comfy, g, d.out(0), g.node("MaskToImage", mask=combined.out(0)).out(0))
    segs = comfy.output(found.id, 0)
    assert segs[0] == (128, 128) and len(segs[1]) == 4
    assert r.ui(found.id)["precision_safe"][0]["ran"]["detector"] == "fp32 · cpu"
    union = comfy.output(combined.id)
    for x, y in SQUARES:
        assert union[0, y + 2:y + SIDE - 2, x + 2:x + SIDE - 2].min() == 1
    assert torch.equal(union, comfy.output(found.id, 1))
    assert r.ui(d.id)["precision_safe"][0]["notes"] == ["batch 1/1: 4 region(s) at 40x40"]


def test_mask_as_the_region_source(comfy):
    m = np.zeros((128, 128, 3), np.float32)
    m[20:44, 30:54] = 1
    m[70:100, 60:100] = 1
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=_squares())
    mask = g.node("ImageToMask", image=g.node("LoadImage", image=save_input("ps_regions_mask.png", m)).out(0),
                  channel="red")
    d = detailer(g, load.out(0), ckpt, detector=None, sam=False, mask=mask.out(0), dilation=0, feather=0, **FAST)
    r = _run(comfy, g, d.out(0))
    out, src, used = comfy.output(d.id, 0), comfy.output(load.id), comfy.output(d.id, 1)
    assert "2 region(s)" in r.ui(d.id)["text"][0]
    assert torch.equal(used[0] > 0, torch.from_numpy(m[..., 0] > 0))
    assert torch.equal(out[0][used[0] == 0], src[0][used[0] == 0])


def test_segs_controlnet_wrappers_are_applied_per_region(comfy):
    import detailer_models
    detailer_models.ensure()
    outs = {}
    for wrapped in (False, True):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        load = g.node("LoadImage", image=_squares())
        segs = _impact_segs(g, load.out(0))
        if wrapped:
            cn = g.node("ControlNetLoader", control_net_name=detailer_models.CONTROLNET)
            segs = g.node("PSTest_ImpactControlNetSEGS", segs=segs.out(0), control_net=cn.out(0), hint=load.out(0),
                          strength=1.0)
        d = detailer(g, load.out(0), ckpt, detector=None, sam=False, segs=segs.out(0), **FAST)
        r = _run(comfy, g, d.out(0))
        outs[wrapped] = (comfy.output(d.id, 0), r.ui(d.id)["precision_safe"][0]["notes"])
    assert outs[False][1] == ["batch 1/1: 4 region(s) at 40x40"]
    assert len(outs[True][1]) == 4  # each SEG its own wrapper: sampled one by one, as Impact's detailers do
    assert not torch.equal(outs[True][0], outs[False][0])


def test_region_source_must_be_exactly_one(comfy):
    for extra in ({}, {"mask": "mask"}):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        load = g.node("LoadImage", image=_squares())
        kw = {"detector": None} if not extra else {"mask": load.out(1)}
        d = detailer(g, load.out(0), ckpt, sam=False, **kw)
        g.node("PreviewImage", images=d.out(0))
        r = comfy.run(g.finalize())
        assert not r.success and r.error["node_id"] == d.id
        msg = r.error["exception_message"]
        assert ("no region source is connected" if not extra else "detector and mask are connected") in msg
        assert "connect exactly one of" in msg
