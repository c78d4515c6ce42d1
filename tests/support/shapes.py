"""Synthetic scenes of coloured squares and circles with exact ground truth (boxes, masks, polygons).

One generator serves both the training script (scripts/fixtures/make_detector_models.py) and the tests, so the
fixture images are drawn from the same distribution the committed tiny models were trained on.
Pure numpy: deterministic for a given `np.random.Generator` seed, no file or network access.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("square", "circle")  # class id = index
CIRCLE_POLYGON_POINTS = 32  # vertices of the polygon that stands for a circle in YOLO-seg labels


@dataclass
class ShapeScene:
    image: np.ndarray  # float32 [H, W, 3] in [0, 1]
    boxes: np.ndarray  # float32 [N, 4] xyxy in pixels; the pixel at (x, y) covers [x, x+1)
    classes: np.ndarray  # int64 [N]
    masks: np.ndarray  # bool [N, H, W]
    polygons: list[np.ndarray]  # per shape float32 [K, 2] (x, y) outline in pixels, for YOLO-seg labels

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]


def make_scene(
    rng: np.random.Generator,
    height: int = 128,
    width: int = 128,
    n_min: int = 1,
    n_max: int = 4,
    size_range: tuple[float, float] = (0.14, 0.32),
) -> ShapeScene:
    """Draw 1..n_max non-overlapping axis-aligned squares / circles on a plain or noisy background.

    Shape sizes are fractions of the short image side, so a scene at any resolution looks the same once
    letterboxed to the detector's input size. Shapes keep a 2 px gap so every ground-truth mask is whole.
    """
    short = min(height, width)
    bg_colour = rng.uniform(0.15, 0.85, size=3)
    image = np.broadcast_to(bg_colour, (height, width, 3)).astype(np.float32).copy()
    if rng.random() < 0.5:  # noisy background half of the time
        image += rng.normal(0.0, rng.uniform(0.02, 0.08), size=image.shape).astype(np.float32)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # pixel centres
    boxes, classes, masks, polygons = [], [], [], []
    target = int(rng.integers(n_min, n_max + 1))
    for _ in range(target * 20):  # rejection sampling for free space; gives up quietly on crowded scenes
        if len(boxes) == target:
            break
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        side = float(rng.uniform(*size_range)) * short
        x0 = float(rng.uniform(1.0, width - side - 1.0))
        y0 = float(rng.uniform(1.0, height - side - 1.0))
        box = np.array([x0, y0, x0 + side, y0 + side], dtype=np.float32)
        if any(_gap_overlap(box, b, 2.0) for b in boxes):
            continue
        if cls == 0:
            mask = (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])
            poly = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]], np.float32)
        else:
            cx, cy, r = x0 + side / 2, y0 + side / 2, side / 2
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            t = np.linspace(0, 2 * np.pi, CIRCLE_POLYGON_POINTS, endpoint=False)
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).astype(np.float32)
        colour = _contrasting_colour(rng, bg_colour)
        image[mask] = colour
        boxes.append(box)
        classes.append(cls)
        masks.append(mask)
        polygons.append(poly)

    np.clip(image, 0.0, 1.0, out=image)
    return ShapeScene(
        image=image,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=np.asarray(classes, np.int64),
        masks=np.asarray(masks, bool).reshape(-1, height, width),
        polygons=polygons,
    )


def make_scenes(seed: int, count: int, height: int = 128, width: int = 128, **kw) -> list[ShapeScene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, height, width, **kw) for _ in range(count)]


def yolo_label_lines(scene: ShapeScene, segment: bool) -> list[str]:
    """YOLO txt label lines, normalised to [0, 1]: `cls cx cy w h` (detect) or `cls x1 y1 x2 y2 ...` (segment)."""
    lines = []
    wh = np.array([scene.width, scene.height], np.float32)
    for box, cls, poly in zip(scene.boxes, scene.classes, scene.polygons):
        if segment:
            pts = np.clip(poly / wh, 0.0, 1.0).reshape(-1)
            lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in pts))
        else:
            cx, cy = (box[0] + box[2]) / 2 / wh[0], (box[1] + box[3]) / 2 / wh[1]
            w, h = (box[2] - box[0]) / wh[0], (box[3] - box[1]) / wh[1]
            lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: [N,4] x [M,4] -> [N,M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def box_mask(box, height: int, width: int) -> np.ndarray:
    """The box itself as a mask (pixel centres inside it): the baseline a refined mask has to beat."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    x0, y0, x1, y1 = (float(v) for v in box)
    return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def match_recall(
    pred_boxes: np.ndarray, pred_classes: np.ndarray, scene: ShapeScene, iou_thr: float = 0.5
) -> tuple[int, list[int]]:
    """Greedy one-to-one matching of predictions to ground truth (same class, IoU >= iou_thr).

    Returns (number of ground-truth shapes found, index of the matched prediction per shape or -1).
    """
    ious = box_iou(scene.boxes, pred_boxes) if len(pred_boxes) else np.zeros((len(scene.boxes), 0))
    used: set[int] = set()
    matched = []
    for i, cls in enumerate(scene.classes):
        best, best_j = iou_thr, -1
        for j in range(ious.shape[1]):
            if j not in used and int(pred_classes[j]) == int(cls) and ious[i, j] >= best:
                best, best_j = ious[i, j], j
        if best_j >= 0:
            used.add(best_j)
        matched.append(best_j)
    return sum(j >= 0 for j in matched), matched


def _gap_overlap(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """A colour at least 0.35 from the background in some channel, so every shape is visible."""
    for _ in range(100):
        c = rng.uniform(0.0, 1.0, size=3)
        if np.abs(c - bg).max() >= 0.35:
            return c.astype(np.float32)
    return (1.0 - bg).astype(np.float32)
