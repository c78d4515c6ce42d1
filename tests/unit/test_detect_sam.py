"""SAM loading (config from shapes, safe load) and box refinement with the fp32 prompt/decoder policy."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from precision_safe.nodes.detect import sam as sam_mod
import shapes
from precision_safe.nodes.detect.safe_load import ModelFileError, UnsafeModelFile

TINY = Path(__file__).resolve().parents[1] / "assets" / "models" / "sams" / "tiny_sam_shapes.pth"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sam():
    return sam_mod.load_sam(TINY)


@pytest.fixture(scope="module")
def prompts():
    """Scenes not of SAM's input size (exercises resize + un-padding) with detector-like jittered boxes."""
    rng = np.random.default_rng(2000)
    out = []
    for s in shapes.make_scenes(seed=2001, count=12, height=176, width=232):
        size = np.concatenate([s.boxes[:, 2:] - s.boxes[:, :2]] * 2, 1)
        boxes = np.clip(s.boxes + rng.uniform(-0.1, 0.1, s.boxes.shape) * size, 0, [232, 176, 232, 176])
        out.append((s, boxes.astype(np.float32)))
    return out


def refine(sam, scene, boxes, dtype=torch.float32, image_dtype=torch.float32):
    image = torch.from_numpy(scene.image).to(image_dtype)
    return sam_mod.refine_boxes(sam, image, torch.from_numpy(boxes), dtype=dtype, device=CPU)


def test_tiny_config_read_from_shapes_and_sidecar(sam):
    sd = torch.load(TINY, weights_only=True)
    sidecar = json.loads(TINY.with_suffix(".json").read_text())
    variant, cfg = sam_mod.infer_sam_config(sd, sidecar)
    assert variant == "custom" and cfg == sam_mod.TINY_SAM_CONFIG
    assert sam.image_encoder.img_size == 256 and 0.2e6 < sum(p.numel() for p in sam.parameters()) < 0.6e6
    # without the sidecar, only the head counts are unknown: named in a clear error
    with pytest.raises(ModelFileError, match="decoder_num_heads"):
        sam_mod.infer_sam_config(sd, None)


def test_missing_sidecar_is_a_clear_load_error(tmp_path):
    shutil.copyfile(TINY, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match=r"decoder_num_heads.*json"):
        sam_mod.load_sam(tmp_path / "other.pth")


@pytest.mark.parametrize("text, wrong", [('{"decoder_num_heads": 4,}', "is not valid JSON (line 1, column 25: "
                                                                       "Expecting property name"),
                                         ("[4, 4, 8]", "holds a JSON list, not an object")])
def test_malformed_sidecar_is_a_clear_load_error_naming_the_file_and_the_fix(tmp_path, text, wrong):
    shutil.copyfile(TINY, tmp_path / "other.pth")
    (tmp_path / "other.json").write_text(text)
    with pytest.raises(ModelFileError) as caught:
        sam_mod.load_sam(tmp_path / "other.pth")
    assert str(caught.value).startswith(f"the SAM config {tmp_path / 'other.json'} for other.pth {wrong}")
    assert "decoder_num_heads, encoder_num_heads, encoder_window_size" in caught.value.fix
    assert not isinstance(caught.value.__cause__, json.JSONDecodeError)


def _linked_checkpoint(tmp_path):
    """The tiny SAM and its sidecar in store/, and sams/linked.pth a symlink to it: (store, sams)."""
    store, sams = tmp_path / "store", tmp_path / "sams"
    store.mkdir(), sams.mkdir()
    shutil.copyfile(TINY, store / "tiny.pth")
    shutil.copyfile(TINY.with_suffix(".json"), store / "tiny.json")
    os.symlink(store / "tiny.pth", sams / "linked.pth")
    return store, sams


def test_symlinked_checkpoint_finds_the_sidecar_beside_its_target(tmp_path):
    store, sams = _linked_checkpoint(tmp_path)
    assert sam_mod.sidecar_path(sams / "linked.pth") == store / "tiny.json"
    assert sam_mod.load_sam(sams / "linked.pth").image_encoder.img_size == 256


def test_a_sidecar_beside_the_link_wins_over_the_targets(tmp_path):
    _, sams = _linked_checkpoint(tmp_path)
    (sams / "linked.json").write_text(json.dumps({**sam_mod.TINY_SAM_CONFIG, "decoder_num_heads": 2}))
    assert sam_mod.sidecar_path(sams / "linked.pth") == sams / "linked.json"
    assert sam_mod.load_sam(sams / "linked.pth").mask_decoder.transformer.layers[0].self_attn.num_heads == 2


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_official_variants_recognised_from_key_shapes(variant):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # shapes only: no memory, no init time
        sd = sam_model_registry[variant]().state_dict()
    found, cfg = sam_mod.infer_sam_config(sd)
    assert found == variant and cfg["img_size"] == 1024 and cfg["prompt_embed_dim"] == 256


def test_pickled_code_in_sam_file_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch '{marker}'",)

    bad = tmp_path / "bad.pth"
    torch.save({"image_encoder.pos_embed": Payload()}, bad)
    with pytest.raises(UnsafeModelFile, match=rf"NOT loaded: it references {os.system.__module__}\.system"):
        sam_mod.load_sam(bad)
    assert not marker.exists()


def test_missing_sam_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        sam_mod.load_sam(tmp_path / "sam_vit_b_01ec64.pth")


def test_refine_beats_box_as_mask(sam, prompts):
    refined, as_box = [], []
    for scene, boxes in prompts:
        masks = refine(sam, scene, boxes)
        assert masks.shape == (len(boxes), scene.height, scene.width) and masks.dtype == torch.float32
        assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
        for i, box in enumerate(boxes):
            refined.append(shapes.mask_iou(masks[i].numpy() > 0.5, scene.masks[i]))
            as_box.append(shapes.mask_iou(shapes.box_mask(box, scene.height, scene.width), scene.masks[i]))
    assert np.mean(refined) >= 0.85, np.mean(refined)
    assert np.mean(refined) >= np.mean(as_box) + 0.05, (np.mean(refined), np.mean(as_box))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_encoder_fp32_decoder(sam, prompts, dtype):
    before = {k: (v.dtype, float(v.double().sum())) for k, v in sam.state_dict().items()}
    rt = sam_mod._runtime(sam, dtype, CPU)
    seen = {}
    hooks = [
        rt.image_encoder.patch_embed.register_forward_hook(lambda m, i, o: seen.update(encoder=(i[0].dtype, o.dtype))),
        rt.mask_decoder.register_forward_hook(lambda m, i, o: seen.update(decoder=o[0].dtype)),
    ]
    try:
        scene, boxes = prompts[0]
        got = refine(sam, scene, boxes, dtype=dtype, image_dtype=dtype)  # a half IMAGE as well
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"encoder": (dtype, dtype), "decoder": torch.float32}
    ref = refine(sam, scene, boxes)
    assert got.dtype == torch.float32
    for g, r in zip(got, ref):
        assert shapes.mask_iou(g.numpy() > 0.5, r.numpy() > 0.5) > 0.9
    after = {k: (v.dtype, float(v.double().sum())) for k, v in sam.state_dict().items()}
    assert after == before  # the shared model was not cast in place


def test_no_boxes(sam, prompts):
    scene, _ = prompts[0]
    assert refine(sam, scene, np.zeros((0, 4), np.float32)).shape == (0, scene.height, scene.width)


def test_pick_masks_keeps_candidates_above_the_threshold_or_the_best():
    masks = torch.zeros(2, 3, 4, 4)
    masks[:, 0, 0, 0] = masks[:, 1, 1, 1] = masks[:, 2, 2, 2] = 1
    scores = torch.tensor([[0.95, 0.5, 0.97], [0.2, 0.6, 0.1]])
    out = sam_mod.pick_masks(masks, scores, 0.93)
    assert out[0].sum() == 2 and out[0, 0, 0] == 1 and out[0, 2, 2] == 1  # the union of the two above 0.93
    assert out[1].sum() == 1 and out[1, 1, 1] == 1  # none above: the best one


def test_point_hints_and_multimask(sam, prompts):
    scene, boxes = prompts[0]
    centres = [[((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 1)] for b in boxes]
    image = torch.from_numpy(scene.image)
    with_points = sam_mod.refine_boxes(sam, image, torch.from_numpy(boxes), dtype=torch.float32, device=CPU,
                                       points=centres)
    uneven = sam_mod.refine_boxes(sam, image, torch.from_numpy(boxes), dtype=torch.float32, device=CPU,
                                  points=[centres[0] * 3] + [[] for _ in boxes[1:]])  # padded with SAM's -1 label
    for masks in (with_points, uneven):
        assert masks.shape == (len(boxes), scene.height, scene.width)
        for i in range(len(boxes)):
            assert shapes.mask_iou(masks[i].numpy() > 0.5, scene.masks[i]) > 0.6
    best = sam_mod.refine_boxes(sam, image, torch.from_numpy(boxes), dtype=torch.float32, device=CPU,
                                multimask=True, score_threshold=2.0)  # no candidate scores 2: the best of three
    union = sam_mod.refine_boxes(sam, image, torch.from_numpy(boxes), dtype=torch.float32, device=CPU,
                                 multimask=True, score_threshold=-10.0)  # every candidate
    assert ((union >= best).all() and (union.sum((1, 2)) >= best.sum((1, 2))).all())
    assert union.sum() > best.sum()
