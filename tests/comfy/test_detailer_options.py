"""Each Detailer option through ComfyUI's real executor on the tiny models: conditioning cut to the crops
(ControlNet, area, mask), per-region prompts, inpaint model, soft denoise mask, SAM controls, Impact's sizing,
tiled VAE, cycles and the per-stage record."""
import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder

import detailer_models
from graphs import detailer, save_input
from comfy_client import CHECKPOINT

SIDE = 24
SQUARES = ((10, 10), (80, 12), (12, 84), (86, 86))
OUTSIDE_CROPS = (slice(48, 76), slice(46, 76))  # rows, cols no region's crop (crop_factor 1.5) reaches


def _squares_array():
    img = np.full((128, 128, 3), 0.3, np.float32)
    for (x, y), c in zip(SQUARES, ((0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9), (0.9, 0.9, 0.1))):
        img[y:y + SIDE, x:x + SIDE] = c
    return img


@pytest.fixture(scope="module")
def squares(comfy):
    detailer_models.ensure()
    return save_input("ps_opts_squares.png", _squares_array())


def _segs(g, image, boxes=SQUARES):
    text = ";".join(f"{x},{y},{x + SIDE},{y + SIDE}" for x, y in boxes)
    return g.node("PSTest_ImpactSEGS", image=image, boxes=text, labels=",".join("A" * len(boxes)), crop_factor=1.5)


TWO = SQUARES[:2]
SMALL = "batch 1/1: 2 region(s) at 40x40"  # guide_size 16: the 36-px crops are sampled at their own size


def run_detailer(comfy, squares, positive=None, negative=None, model=None, boxes=TWO, with_clip=False, **over):
    """Impact-style SEGS of the squares -> Detailer; `positive` / `negative` / `model` build on (g, ckpt, pos, neg).
    Small on purpose (two regions sampled at 40x40, one step). Returns (source image, detailed image, paste mask,
    record, text)."""
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=squares)
    pos = g.node("CLIPTextEncode", text="a shape", clip=ckpt.out(1)).out(0)
    neg = g.node("CLIPTextEncode", text="", clip=ckpt.out(1)).out(0)
    kw = dict(detector=None, sam=False, segs=_segs(g, load.out(0), boxes).out(0), steps=1, feather=0, guide_size=16)
    if positive:
        kw["positive"] = positive(g, ckpt, pos, neg)
    if negative:
        kw["negative"] = negative(g, ckpt, pos, neg)
    if model:
        kw["model"] = model(g, ckpt)
    if with_clip:
        kw["clip"] = ckpt.out(1)
    kw.update(over)
    d = detailer(g, load.out(0), ckpt, **kw)
    g.node("PreviewImage", images=d.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    ui = r.ui(d.id)
    return comfy.output(load.id), comfy.output(d.id, 0), comfy.output(d.id, 1), ui["precision_safe"][0], ui["text"][0]


def _outside_unchanged(src, out, mask):
    assert torch.equal(out[0][mask[0] == 0], src[0][mask[0] == 0])


def _hint(name, change=None):
    img = _squares_array()
    if change is not None:
        img[change] = 1.0
    return save_input(name, img)


# -- conditioning cut to each crop ---------------------------------------------------------------------------------

def _controlnet(hint_name):
    def positive(g, ckpt, pos, neg):
        cn = g.node("ControlNetLoader", control_net_name=detailer_models.CONTROLNET)
        hint = g.node("LoadImage", image=hint_name)
        return g.node("ControlNetApplyAdvanced", positive=pos, negative=neg, control_net=cn.out(0),
                      image=hint.out(0), strength=1.0, start_percent=0.0, end_percent=1.0).out(0)
    return positive


def test_controlnet_hint_is_cut_to_each_region(comfy, squares):
    same = _hint("ps_hint_same.png")
    outside = _hint("ps_hint_outside.png", OUTSIDE_CROPS)  # differs only where no crop reaches
    inside = _hint("ps_hint_inside.png", (slice(14, 30), slice(84, 100)))  # differs inside square 1
    a = run_detailer(comfy, squares, positive=_controlnet(same))
    b = run_detailer(comfy, squares, positive=_controlnet(outside))
    c = run_detailer(comfy, squares, positive=_controlnet(inside))
    assert torch.equal(a[1], b[1])  # each region saw its own part of the hint only
    assert not torch.equal(a[1], c[1])  # and the hint matters
    one_by_one = run_detailer(comfy, squares, positive=_controlnet(same), max_batch=1)
    assert len(one_by_one[3]["notes"]) == 2 and a[3]["notes"] == [SMALL]
    torch.testing.assert_close(a[1], one_by_one[1], atol=2e-3, rtol=0)  # per-region hints within one batch


def _masked(mask_name):
    def positive(g, ckpt, pos, neg):
        m = g.node("ImageToMask", image=g.node("LoadImage", image=mask_name).out(0), channel="red")
        return g.node("ConditioningSetMask", conditioning=pos, mask=m.out(0), strength=1.0,
                      set_cond_area="default").out(0)
    return positive


def test_conditioning_mask_is_cut_to_each_region(comfy, squares):
    ones = np.ones((128, 128, 3), np.float32)
    hole = ones.copy()
    hole[OUTSIDE_CROPS] = 0
    inside = ones.copy()
    inside[14:30, 84:100] = 0
    a, b, c = (run_detailer(comfy, squares, positive=_masked(save_input(f"ps_cmask_{i}.png", m)))
               for i, m in enumerate((ones, hole, inside)))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def _area(x, y, w, h):
    def positive(g, ckpt, pos, neg):
        return g.node("ConditioningSetArea", conditioning=pos, width=w, height=h, x=x, y=y, strength=1.0).out(0)
    return positive


def test_area_conditioning_is_moved_into_the_crop_or_dropped(comfy, squares):
    one = [SQUARES[1]]  # box 80..104 x 12..36, crop 74..110 x 6..42
    plain = run_detailer(comfy, squares, boxes=one)
    covering = run_detailer(comfy, squares, positive=_area(64, 0, 64, 64), boxes=one)
    torch.testing.assert_close(covering[1], plain[1], atol=1e-5, rtol=0)  # covers the whole crop: as no area
    src, out, mask, rec, _ = run_detailer(comfy, squares, positive=_area(0, 64, 64, 64), boxes=one)
    assert "no positive/negative conditioning area covers it: left unchanged" in " ".join(rec["notes"])
    assert torch.equal(out, src) and mask.sum() == 0


# -- per-region prompts --------------------------------------------------------------------------------------------

def test_region_negative_prompts_split_batches(comfy, squares):
    base = run_detailer(comfy, squares, seed=5)
    src, out, mask, rec, _ = run_detailer(comfy, squares, seed=5, region_negative_prompts="[#1] blurry, dark",
                                          with_clip=True)
    assert rec["notes"] == ["batch 1/2: 1 region(s) at 40x40", "batch 2/2: 1 region(s) at 40x40"]
    x, y = SQUARES[1]
    region = (slice(y, y + SIDE), slice(x, x + SIDE))
    assert not torch.equal(out[0][region], base[1][0][region])
    x, y = SQUARES[0]
    torch.testing.assert_close(out[0, y:y + SIDE, x:x + SIDE], base[1][0, y:y + SIDE, x:x + SIDE], atol=2e-3,
                               rtol=0)  # the other region as before (now in a batch of its own)


def test_skip_leaves_a_region_and_drops_it_from_the_segs(comfy, squares):
    src, out, mask, rec, text = run_detailer(comfy, squares, region_prompts="[skip]")
    x, y = SQUARES[0]
    assert "region #0 (A): [skip]" in rec["notes"] and mask[0, y:y + SIDE, x:x + SIDE].sum() == 0
    assert torch.equal(out[0, y - 6:y + SIDE + 6, x - 6:x + SIDE + 6], src[0, y - 6:y + SIDE + 6, x - 6:x + SIDE + 6])
    assert rec["notes"][-1] == "batch 1/1: 1 region(s) at 40x40"


# -- inpainting ----------------------------------------------------------------------------------------------------

def _inpaint_unet(g, ckpt):
    return g.node("UNETLoader", unet_name=detailer_models.INPAINT_UNET, weight_dtype="default").out(0)


def test_inpaint_model_gets_the_greyed_crop_and_mask(comfy, squares):
    off = run_detailer(comfy, squares, model=_inpaint_unet)
    src, out, mask, rec, _ = run_detailer(comfy, squares, model=_inpaint_unet, inpaint_model=True)
    assert torch.isfinite(out).all() and not torch.equal(out, off[1]) and rec["warnings"] == []
    _outside_unchanged(src, out, mask)
    plain = run_detailer(comfy, squares, inpaint_model=True)  # a 4-channel model: said so, sampled as usual
    assert any("no inpaint channels" in w for w in plain[3]["warnings"])


def test_noise_mask_feather_softens_the_denoise_mask(comfy, squares):
    hard = run_detailer(comfy, squares, seed=4)
    src, out, mask, rec, _ = run_detailer(comfy, squares, seed=4, noise_mask_feather=6)
    assert not torch.equal(out, hard[1]) and torch.isfinite(out).all()
    _outside_unchanged(src, out, mask)


# -- SAM controls ----------------------------------------------------------------------------------------------------

def _sam_mask(comfy, squares, **sam):
    """The regions' masks (read from the Detailer's SEGS the way Impact reads them), with nothing sampled."""
    from testing_nodes.impact_style import combined_mask
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d = detailer(g, g.node("LoadImage", image=squares).out(0), ckpt, denoise=0.0,
                 **{"dilation": 0, "sam_dilation": 0, **sam})
    g.node("PreviewImage", images=d.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    return combined_mask(comfy.output(d.id, 5)), r.ui(d.id)["precision_safe"][0]


def test_sam_hint_multimask_expansion_and_its_own_dilation(comfy, squares):
    box, rec = _sam_mask(comfy, squares, hint="box")
    assert rec["ran"]["sam"].startswith("fp32 encoder") and box.sum() > 0
    for option in (dict(hint="center-1"), dict(hint="mask-area"), dict(bbox_expansion=12), dict(multimask=True)):
        assert not torch.equal(_sam_mask(comfy, squares, **option)[0], box), option
    grown, _ = _sam_mask(comfy, squares, sam_dilation=3, dilation=-64)  # the detector's erosion does not apply
    assert (grown >= box).all() and grown.sum() > box.sum()
    _, eroded = _sam_mask(comfy, squares, sam_dilation=-64, dilation=8)
    assert sum("empty mask: skipped" in n for n in eroded["notes"]) == 4


# -- sizing like Impact ----------------------------------------------------------------------------------------------

def test_guide_size_for_crop_region_and_large_regions_left_alone(comfy, squares):
    *_, rec, _ = run_detailer(comfy, squares, guide_size=48, guide_size_for="crop_region")
    assert rec["notes"] == ["batch 1/1: 2 region(s) at 48x48"]  # the 36-px crop, not the 24-px box, reaches 48
    *_, rec, _ = run_detailer(comfy, squares, guide_size=32, guide_size_for="bbox")
    assert rec["notes"] == ["batch 1/1: 2 region(s) at 48x48"]  # the 24-px box reaches 32: x4/3
    src, out, mask, rec, text = run_detailer(comfy, squares, force_inpaint=False)
    assert sum("left alone" in n for n in rec["notes"]) == 2 and torch.equal(out, src) and mask.sum() == 0
    *_, rec, _ = run_detailer(comfy, squares)
    assert rec["notes"] == [SMALL]  # force_inpaint: at their own (36 -> 40 px) size, not shrunk


# -- VAE tiling, cycles, the record --------------------------------------------------------------------------------

def test_tiled_vae_encode_and_decode(comfy, squares):
    plain = run_detailer(comfy, squares, seed=2)
    src, out, mask, rec, _ = run_detailer(comfy, squares, seed=2, tiled_vae="encode and decode", tile_size=64)
    assert "vae encode and decode tiled in 64-px tiles" in rec["notes"]
    assert torch.isfinite(out).all() and not torch.equal(out, plain[1])
    _outside_unchanged(src, out, mask)


def test_cycles_resample_the_latent_again(comfy, squares):
    one = run_detailer(comfy, squares, seed=3)
    src, out, mask, rec, _ = run_detailer(comfy, squares, seed=3, cycles=2)
    assert not torch.equal(out, one[1]) and rec["notes"] == [SMALL]
    _outside_unchanged(src, out, mask)


def test_each_stage_is_timed_in_the_record(comfy, squares):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d = detailer(g, g.node("LoadImage", image=squares).out(0), ckpt, steps=1, guide_size=16, seed=11)
    g.node("PreviewImage", images=d.out(0))
    r = comfy.run(g.finalize())
    rec = r.ui(d.id)["precision_safe"][0]
    assert list(rec["stages"]) == ["detect", "sam", "crop", "encode", "sample", "decode", "paste"]
    assert all(v > 0 for v in rec["stages"].values()), rec["stages"]
    assert sum(rec["stages"].values()) <= rec["seconds"]
    assert "stages detect" in r.ui(d.id)["text"][0]
