"""The Detailer through ComfyUI's real executor: tiny detector + SAM + tiny SD checkpoint, fixture shape images."""
import os

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from PIL import Image

from graphs import detailer, policy
from comfy_client import CHECKPOINT
from shapes import make_scene, make_scenes


def _save_input(name, image: np.ndarray) -> str:
    import folder_paths
    Image.fromarray((image * 255).round().astype(np.uint8)).save(os.path.join(folder_paths.get_input_directory(), name))
    return name


def _load(g, name):
    return g.node("LoadImage", image=name)


def _run(comfy, g, node):
    g.node("PreviewImage", images=node.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    return r


def _equal_squares_scene(size=128, side=24):
    """Four squares of one size: four regions of one sampling size."""
    img = np.full((size, size, 3), 0.3, np.float32)
    boxes = []
    for x, y, colour in ((10, 10, (0.9, 0.1, 0.1)), (80, 12, (0.1, 0.9, 0.1)), (12, 84, (0.1, 0.1, 0.9)),
                         (86, 86, (0.9, 0.9, 0.1))):
        img[y:y + side, x:x + side] = colour
        boxes.append((x, y, x + side, y + side))
    return img, boxes


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_shapes_are_found_masked_and_outside_pixels_unchanged(comfy, seed):
    scene = make_scenes(seed, 1, n_min=2, n_max=3)[0]
    name = _save_input(f"ps_scene_{seed}.png", scene.image)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d = detailer(g, _load(g, name).out(0), ckpt)
    r = _run(comfy, g, d)
    src = comfy.output(_load_id(g, "LoadImage"))
    out, mask = comfy.output(d.id, 0), comfy.output(d.id, 1)
    assert out.shape == src.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    outside = mask[0] == 0
    assert torch.equal(out[0][outside], src[0][outside]), "pixels outside the masks changed"
    covered = [(mask[0][torch.from_numpy(m)] > 0).float().mean().item() for m in scene.masks]
    assert sum(c >= 0.9 for c in covered) / len(covered) >= 0.9, covered  # recall: shapes found and covered
    assert not torch.equal(out, src)  # something was re-sampled
    rec = r.ui(d.id)["precision_safe"][0]
    assert rec["ran"]["detector"] == "fp32 · cpu" and rec["ran"]["vae"] == "fp32 · cpu"
    assert rec["ran"]["sam"].startswith("fp32 encoder")


def _load_id(g, class_type):
    return next(nid for nid, n in g.finalize().items() if n["class_type"] == class_type)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_image_input_is_cast_and_works(comfy, dtype):
    scene = make_scenes(7, 1, n_min=2, n_max=2)[0]
    name = _save_input("ps_scene_half.png", scene.image)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    half = g.node("PSTest_CastImage", image=_load(g, name).out(0), dtype=dtype)
    d = detailer(g, half.out(0), ckpt)
    r = _run(comfy, g, d)
    rec = r.ui(d.id)["precision_safe"][0]
    assert rec["casts"] == [f"image: {dtype} -> fp32"]
    src, out, mask = comfy.output(half.id), comfy.output(d.id, 0), comfy.output(d.id, 1)
    assert out.dtype == torch.float32
    outside = mask[0] == 0
    assert torch.equal(out[0][outside], src[0].float()[outside])


def test_batched_equals_one_by_one(comfy):
    img, _ = _equal_squares_scene()
    name = _save_input("ps_four_squares.png", img)
    outs = {}
    for max_batch in (0, 1):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        d = detailer(g, _load(g, name).out(0), ckpt, sam=False, max_batch=max_batch, dilation=0)
        r = _run(comfy, g, d)
        notes = r.ui(d.id)["precision_safe"][0]["notes"]
        outs[max_batch] = (comfy.output(d.id, 0), notes)
    assert outs[0][1] == ["batch 1/1: 4 region(s) at 64x64"]
    assert len(outs[1][1]) == 4
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=2e-3, rtol=0)


def test_no_detection_passes_through_unchanged(comfy):
    name = _save_input("ps_plain.png", np.full((96, 96, 3), 0.5, np.float32))
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = _load(g, name)
    d = detailer(g, load.out(0), ckpt)
    r = _run(comfy, g, d)
    assert torch.equal(comfy.output(d.id, 0), comfy.output(load.id))
    assert "no regions found" in r.ui(d.id)["text"][0]


def test_segm_masks_border_regions_and_image_batches(comfy):
    # shapes touching the border, two images in one batch, the segm model's own masks
    a = make_scene(np.random.default_rng(11), n_min=3, n_max=3)
    b = make_scene(np.random.default_rng(12), n_min=2, n_max=2)
    border = np.full((128, 128, 3), 0.2, np.float32)
    border[0:30, 0:30] = (0.9, 0.2, 0.2)
    border[100:128, 90:128] = (0.2, 0.9, 0.2)
    names = [_save_input(f"ps_batch_{i}.png", im) for i, im in enumerate((a.image, b.image, border))]
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    loads = [_load(g, n) for n in names]
    batch = g.node("ImageBatch", image1=loads[0].out(0), image2=loads[1].out(0))
    batch = g.node("ImageBatch", image1=batch.out(0), image2=loads[2].out(0))
    d = detailer(g, batch.out(0), ckpt, detector="segm/tiny_shapes_seg.pt", sam=False)
    _run(comfy, g, d)
    src, out, mask = comfy.output(batch.id), comfy.output(d.id, 0), comfy.output(d.id, 1)
    assert out.shape == (3, 128, 128, 3)
    for i in range(3):
        assert mask[i].sum() > 0, f"image {i}: nothing detailed"
        assert torch.equal(out[i][mask[i] == 0], src[i][mask[i] == 0])
    assert mask[2][0, 0] > 0  # the region at the image's corner was detailed


def test_fully_eroded_mask_is_skipped_with_a_note(comfy):
    scene = make_scenes(3, 1, n_min=1, n_max=1)[0]
    name = _save_input("ps_erode.png", scene.image)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = _load(g, name)
    d = detailer(g, load.out(0), ckpt, sam=False, dilation=-64)
    r = _run(comfy, g, d)
    assert "empty mask: skipped" in r.ui(d.id)["text"][0]
    assert torch.equal(comfy.output(d.id, 0), comfy.output(load.id))


def test_policy_dtypes_reach_every_sub_step(comfy):
    scene = make_scenes(5, 1, n_min=1, n_max=1)[0]
    name = _save_input("ps_policy.png", scene.image)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    p = policy(g, unet_dtype="bf16", vae_dtype="bf16", detector_dtype="bf16", sam_dtype="bf16")
    d = detailer(g, _load(g, name).out(0), ckpt, context=p.out(0))
    r = _run(comfy, g, d)
    ran = r.ui(d.id)["precision_safe"][0]["ran"]
    assert ran["detector"] == "bf16 · cpu" and ran["unet"] == "bf16 · cpu" and ran["vae"] == "bf16 · cpu"
    assert ran["sam"] == "bf16 encoder, fp32 prompt/decoder · cpu"
    assert torch.isfinite(comfy.output(d.id, 0)).all()


def test_nonfinite_image_input_is_blamed_upstream(comfy):
    scene = make_scenes(3, 1, n_min=1, n_max=1)[0]
    name = _save_input("ps_nan_in.png", scene.image)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    poisoned = g.node("PSTest_PoisonImage", image=_load(g, name).out(0), items="0")
    p = policy(g, on_nonfinite="error")
    d = detailer(g, poisoned.out(0), ckpt, context=p.out(0))
    g.node("PreviewImage", images=d.out(0))
    r = comfy.run(g.finalize())
    assert not r.success and r.error["node_id"] == d.id
    assert "already non-finite" in r.error["exception_message"] and "upstream" in r.error["exception_message"]


def test_region_prompts_split_batches_and_need_a_clip(comfy):
    img, _ = _equal_squares_scene()
    name = _save_input("ps_four_squares.png", img)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d = detailer(g, _load(g, name).out(0), ckpt, sam=False, dilation=0, region_prompts="a red square\n\nblue",
                 clip=ckpt.out(1))
    r = _run(comfy, g, d)
    notes = r.ui(d.id)["precision_safe"][0]["notes"]
    assert notes == ["batch 1/3: 1 region(s) at 64x64", "batch 2/3: 2 region(s) at 64x64",
                     "batch 3/3: 1 region(s) at 64x64"]
    g2 = GraphBuilder()
    ckpt2 = g2.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d2 = detailer(g2, _load(g2, name).out(0), ckpt2, sam=False, region_prompts="a red square")
    g2.node("PreviewImage", images=d2.out(0))
    r2 = comfy.run(g2.finalize())
    assert not r2.success and r2.error["node_id"] == d2.id and "no CLIP is connected" in r2.error["exception_message"]


# -- issue 11: NaN regions, denoise 0, the interrupt between batches, model files ------------------------------------

def test_nan_samples_are_never_pasted_and_are_blamed_on_the_model(comfy):
    """Issue 11 #2: a LoRA holding a NaN makes every sample NaN; the Detailer must not paste black regions nor blame
    the VAE."""
    import detailer_models
    detailer_models.ensure()
    img, _ = _equal_squares_scene()
    name = _save_input("ps_nan_lora.png", img)
    def run(mode):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        lora = g.node("LoraLoaderModelOnly", model=ckpt.out(0), lora_name=detailer_models.NAN_LORA, strength_model=1.0)
        load = _load(g, name)
        d = detailer(g, load.out(0), ckpt, sam=False, model=lora.out(0), steps=1, guide_size=16,
                     context=policy(g, on_nonfinite=mode).out(0))
        g.node("PreviewImage", images=d.out(0))
        return comfy.run(g.finalize()), d.id, load.id

    r, did, lid = run("retry")
    assert r.success, r.error
    rec = r.ui(did)["precision_safe"][0]
    assert torch.equal(comfy.output(did, 0), comfy.output(lid)) and comfy.output(did, 1).sum() == 0
    assert len(rec["warnings"]) == 1, rec["warnings"]
    assert "the model or sampler produced it" in rec["warnings"][0] and "not the VAE" in rec["warnings"][0]
    assert "keep their original pixels" in rec["warnings"][0]
    r, did, _ = run("error")
    assert not r.success and r.error["node_id"] == did
    msg = r.error["exception_message"]
    assert "input 'model'" in msg and "model or sampler" in msg and "unet_dtype" in msg
    assert "'vae'" not in msg


def test_denoise_zero_changes_nothing_and_samples_nothing(comfy):
    """Issue 11 #6: denoise 0 re-encoded and pasted every region (the VAE round trip)."""
    scene = make_scenes(4, 1, n_min=2, n_max=2)[0]
    name = _save_input("ps_denoise0.png", scene.image)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = _load(g, name)
    d = detailer(g, load.out(0), ckpt, denoise=0.0)
    r = _run(comfy, g, d)
    rec = r.ui(d.id)["precision_safe"][0]
    assert torch.equal(comfy.output(d.id, 0), comfy.output(load.id)) and comfy.output(d.id, 1).sum() == 0
    assert "denoise 0: nothing re-sampled, the image is unchanged" in rec["notes"]
    assert rec["stages"]["encode"] == rec["stages"]["sample"] == rec["stages"]["decode"] == 0
    assert "unet" not in rec["ran"] and "vae" not in rec["ran"]


def test_interrupt_between_batches_stops_the_detailer_and_the_next_prompt_runs(comfy):
    from comfy import model_management, utils
    img, _ = _equal_squares_scene()
    name = _save_input("ps_interrupt.png", img)
    batches = []

    def after_batch(value, total, preview, node_id=None):  # the Detailer's progress after each batch
        batches.append((value, total))
        model_management.interrupt_current_processing(True)  # as POST /interrupt does

    def graph(seed):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        d = detailer(g, _load(g, name).out(0), ckpt, sam=False, max_batch=1, steps=1, guide_size=16, seed=seed)
        g.node("PreviewImage", images=d.out(0))
        return g.finalize(), d.id

    prompt, did = graph(seed=5)
    utils.set_progress_bar_global_hook(after_batch)
    try:
        r = comfy.run(prompt)
    finally:
        utils.set_progress_bar_global_hook(None)
    assert not r.success and any(e == "execution_interrupted" for e, _ in r.messages)
    assert batches == [(1, 4)]  # the first of four batches ran, the second never started
    prompt, did = graph(seed=6)
    r = comfy.run(prompt)
    assert r.success, r.error  # the interrupt is over: the next prompt runs
    assert r.ui(did)["precision_safe"][0]["notes"][-1] == "batch 4/4: 1 region(s) at 40x40"


def _detector_file(name, make):
    import folder_paths
    path = os.path.join(folder_paths.get_folder_paths("ultralytics_bbox")[0], name)
    make(path)
    return path


def _load_detector(comfy, model_name):
    g = GraphBuilder()
    det = g.node("PrecisionSafeDetectorLoader", model_name=model_name)
    found = g.node("PrecisionSafeDetectSEGS", image=_load(g, _save_input("ps_det.png", _equal_squares_scene()[0])).out(0),
                   detector=det.out(0))
    g.node("PreviewImage", images=g.node("MaskToImage", mask=found.out(1)).out(0))
    return comfy.run(g.finalize()), det.id


def test_broken_detector_file_is_explained_on_the_loader_node(comfy):
    """Issue 11 #3 through the executor: an empty file gave a bare EOFError."""
    path = _detector_file("ps_empty.pt", lambda p: open(p, "wb").close())
    try:
        r, det_id = _load_detector(comfy, "bbox/ps_empty.pt")
    finally:
        os.remove(path)
    assert not r.success and r.error["node_id"] == det_id
    msg = r.error["exception_message"]
    assert "ps_empty.pt is empty (0 bytes)" in msg and "re-download" in msg and "input 'model_name'" in msg
    assert "weights_only" not in msg


def test_malformed_sam_sidecar_is_explained_on_the_loader_node(comfy):
    """Issue 21 #2 through the executor: a broken sidecar json gave a bare JSONDecodeError naming no file or node."""
    import shutil

    import folder_paths
    from pathlib import Path
    folder = Path(folder_paths.get_folder_paths("sams")[0])
    tiny = Path(__file__).resolve().parents[1] / "assets" / "models" / "sams" / "tiny_sam_shapes.pth"
    shutil.copyfile(tiny, folder / "ps_badjson.pth")
    (folder / "ps_badjson.json").write_text('{"decoder_num_heads": 4')
    try:
        g = GraphBuilder()
        sam = g.node("PrecisionSafeSAMLoader", model_name="ps_badjson.pth")
        det = g.node("PrecisionSafeDetectorLoader", model_name="bbox/tiny_shapes_bbox.pt")
        image = _load(g, _save_input("ps_sam.png", _equal_squares_scene()[0]))
        found = g.node("PrecisionSafeDetectSEGS", image=image.out(0), detector=det.out(0), sam=sam.out(0))
        g.node("PreviewImage", images=g.node("MaskToImage", mask=found.out(1)).out(0))
        r = comfy.run(g.finalize())
    finally:
        os.remove(folder / "ps_badjson.pth")
        os.remove(folder / "ps_badjson.json")
    assert not r.success and r.error["node_id"] == sam.id
    msg = r.error["exception_message"]
    assert f"the SAM config {folder / 'ps_badjson.json'} for ps_badjson.pth is not valid JSON (line 1" in msg
    assert "input 'model_name'" in msg and "Fix: make ps_badjson.json one JSON object" in msg


def test_symlinked_detector_file_loads(comfy):
    """Issue 11 #7 through the executor: a detector symlinked into models/ultralytics/bbox from elsewhere."""
    from third_party_models import BBOX
    path = _detector_file("ps_linked.pt", lambda p: os.symlink(BBOX, p))
    try:
        r, det_id = _load_detector(comfy, "bbox/ps_linked.pt")
    finally:
        os.remove(path)
    assert r.success, r.error


def test_a_trusted_third_party_detector_loads_and_an_untrusted_one_is_refused_on_the_node(comfy):
    import hashlib
    import json

    import folder_paths
    from pathlib import Path

    from third_party_models import save_legacy_style
    extra = []
    path = _detector_file("ps_face_yolov8m.pt", lambda p: extra.extend(save_legacy_style(Path(p))))
    config = Path(folder_paths.get_user_directory()) / "precision_safe" / "trusted_models.json"
    try:
        r, det_id = _load_detector(comfy, "bbox/ps_face_yolov8m.pt")
        assert not r.success and r.error["node_id"] == det_id
        assert "NOT loaded" in r.error["exception_message"] and str(config) in r.error["exception_message"]
        config.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        config.write_text(json.dumps({"trusted": [{"sha256": digest, "file": "face_yolov8m.pt", "allow": extra}]}))
        r, det_id = _load_detector(comfy, "bbox/ps_face_yolov8m.pt")
        assert r.success, r.error
    finally:
        os.remove(path)
        config.unlink(missing_ok=True)
