"""YOLO detect / segment through nodes.detect.yolo on generated scenes with exact ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import shapes
from precision_safe.nodes.detect import safe_load, yolo

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models" / "ultralytics"
CPU = torch.device("cpu")
IMGSZ = 128  # the tiny models' training size
H, W = 192, 256  # not the model size and not square: exercises letterbox and the mapping back


@pytest.fixture(scope="module")
def bbox_model():
    return safe_load.load_yolo(MODELS / "bbox" / "tiny_shapes_bbox.pt")


@pytest.fixture(scope="module")
def seg_model():
    return safe_load.load_yolo(MODELS / "segm" / "tiny_shapes_seg.pt")


@pytest.fixture(scope="module")
def scenes():
    return shapes.make_scenes(seed=1000, count=24, height=H, width=W)


def batch(scenes, dtype=torch.float32):
    return torch.stack([torch.from_numpy(s.image) for s in scenes]).to(dtype)


def run(model, images, dtype=torch.float32, conf=0.25):
    return yolo.detect(model, images, dtype=dtype, device=CPU, conf=conf, imgsz=IMGSZ)


def recall_precision(dets, scenes):
    found = sum(shapes.match_recall(d.boxes.numpy(), d.class_ids.numpy(), s)[0] for d, s in zip(dets, scenes))
    total = sum(len(s.boxes) for s in scenes)
    predicted = sum(len(d) for d in dets)
    return found / total, found / max(predicted, 1)


def state_fingerprint(model):
    return {k: (v.dtype, float(v.double().sum())) for k, v in model.model.state_dict().items()}


def test_bbox_recall(bbox_model, scenes):
    dets = run(bbox_model, batch(scenes))
    recall, precision = recall_precision(dets, scenes)
    assert recall >= 0.9, recall
    assert precision >= 0.8, precision
    d = dets[0]
    assert d.boxes.dtype == torch.float32 and d.scores.dtype == torch.float32 and d.class_ids.dtype == torch.int64
    assert d.masks is None
    assert set(sum((x.class_names for x in dets), [])) <= {"square", "circle"}
    assert all(x.boxes[:, 2].max() <= W and x.boxes[:, 3].max() <= H for x in dets if len(x))


def test_boxes_match_ultralytics_own_predictor(scenes):
    """Same boxes, in original-image pixels, as ultralytics' predictor on the same images (uint8 BGR input)."""
    model = safe_load.load_yolo(MODELS / "bbox" / "tiny_shapes_bbox.pt")  # predict() fuses it in place: own copy
    ours = run(model, batch(scenes[:6]))
    for s, d in zip(scenes[:6], ours):
        bgr = np.ascontiguousarray((s.image * 255).round().astype(np.uint8)[..., ::-1])
        ref = model.predict(bgr, imgsz=IMGSZ, conf=0.25, device="cpu", verbose=False)[0].boxes
        assert len(ref) == len(d)
        if len(d):
            iou = shapes.box_iou(d.boxes.numpy(), ref.xyxy.numpy())
            assert iou.max(1).min() > 0.9, iou


def test_seg_masks_match_ground_truth(seg_model, scenes):
    dets = run(seg_model, batch(scenes))
    recall, _ = recall_precision(dets, scenes)
    assert recall >= 0.85, recall
    ious = []
    for d, s in zip(dets, scenes):
        assert d.masks.shape == (len(d), H, W) and d.masks.dtype == torch.float32
        assert set(torch.unique(d.masks).tolist()) <= {0.0, 1.0}
        _, matched = shapes.match_recall(d.boxes.numpy(), d.class_ids.numpy(), s)
        ious += [shapes.mask_iou(d.masks[j].numpy() > 0.5, s.masks[i]) for i, j in enumerate(matched) if j >= 0]
    assert np.mean(ious) >= 0.75, np.mean(ious)


@pytest.mark.parametrize("image_dtype", [torch.float16, torch.bfloat16])
def test_half_image_inputs_give_the_same_boxes(bbox_model, scenes, image_dtype):
    ref = run(bbox_model, batch(scenes[:8]))
    got = run(bbox_model, batch(scenes[:8], image_dtype))
    for r, g in zip(ref, got):
        assert len(r) == len(g)
        assert torch.equal(r.class_ids, g.class_ids)
        assert (r.boxes - g.boxes).abs().max() < 2.0  # bf16 pixels are coarser than uint8 near 1.0


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1.5), (torch.bfloat16, 6.0)])
def test_network_runs_at_requested_dtype(bbox_model, scenes, dtype, tol):
    before = state_fingerprint(bbox_model)
    net = yolo.inference_net(bbox_model, dtype, CPU)  # the cached copy detect() will use
    seen = []
    hook = net.model[0].conv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, m.weight.dtype)))
    try:
        small = [shapes.make_scene(np.random.default_rng(7), 96, 128)]  # fp16 conv is slow on CPU: keep it small
        got = run(bbox_model, batch(small), dtype=dtype)
    finally:
        hook.remove()
    assert seen == [(dtype, dtype)]
    ref = run(bbox_model, batch(small))
    assert got[0].boxes.dtype == torch.float32 and len(got[0]) == len(ref[0]) >= 1
    assert (got[0].boxes - ref[0].boxes).abs().max() < tol
    assert state_fingerprint(bbox_model) == before  # the shared loaded model is untouched


def test_seg_model_in_bf16(seg_model, scenes):
    got = run(seg_model, batch(scenes[:2]), dtype=torch.bfloat16)
    ref = run(seg_model, batch(scenes[:2]))
    for g, r in zip(got, ref):
        assert g.masks.dtype == torch.float32 and g.masks.shape == r.masks.shape
        for gm, rm in zip(g.masks, r.masks):
            assert shapes.mask_iou(gm.numpy() > 0.5, rm.numpy() > 0.5) > 0.8


def test_no_objects_gives_empty_results(bbox_model, seg_model):
    blank = torch.full((1, 100, 140, 3), 0.5)
    (d,) = run(bbox_model, blank)
    assert len(d) == 0 and d.boxes.shape == (0, 4)
    (s,) = run(seg_model, blank)
    assert len(s) == 0 and s.masks.shape == (0, 100, 140)


def test_rejects_non_image_input(bbox_model):
    with pytest.raises(ValueError, match=r"\[B,H,W,C\]"):
        run(bbox_model, torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="float"):
        run(bbox_model, torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
