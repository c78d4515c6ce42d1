"""The synthetic-scene generator behind the detector fixtures: deterministic, with consistent ground truth."""
from __future__ import annotations

import numpy as np

import shapes


def test_same_seed_same_scenes():
    a, b = shapes.make_scenes(5, 3, 90, 120), shapes.make_scenes(5, 3, 90, 120)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.boxes, y.boxes)
    assert not np.array_equal(a[0].image, shapes.make_scenes(6, 1, 90, 120)[0].image)


def test_ground_truth_is_consistent():
    for s in shapes.make_scenes(11, 20, 100, 150):
        assert s.image.dtype == np.float32 and s.image.shape == (100, 150, 3)
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert len(s.boxes) == len(s.classes) == len(s.masks) == len(s.polygons) >= 1
        for box, cls, mask in zip(s.boxes, s.classes, s.masks):
            assert not (mask & ~shapes.box_mask(box, 100, 150)).any()  # mask inside its box
            fill = mask.sum() / ((box[2] - box[0]) * (box[3] - box[1]))
            assert abs(fill - (1.0 if cls == 0 else np.pi / 4)) < 0.12  # square fills its box, circle pi/4
        assert (s.masks.sum(0) <= 1).all()  # shapes never overlap


def test_yolo_labels_are_normalised():
    s = shapes.make_scenes(3, 1, 64, 128)[0]
    for line, box in zip(shapes.yolo_label_lines(s, segment=False), s.boxes):
        cls, cx, cy, w, h = line.split()
        assert abs(float(w) * 128 - (box[2] - box[0])) < 1e-3 and abs(float(cy) * 64 - (box[1] + box[3]) / 2) < 1e-3
    for line in shapes.yolo_label_lines(s, segment=True):
        vals = [float(v) for v in line.split()[1:]]
        assert len(vals) % 2 == 0 and min(vals) >= 0 and max(vals) <= 1


def test_match_recall():
    s = shapes.make_scenes(9, 1, 128, 128, n_min=2, n_max=2)[0]
    found, matched = shapes.match_recall(s.boxes, s.classes, s)
    assert found == 2 and matched == [0, 1]
    found, _ = shapes.match_recall(s.boxes, 1 - s.classes, s)  # right place, wrong class: not found
    assert found == 0
