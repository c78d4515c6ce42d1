"""Regions for the Detailer: which detections to keep, the crop around each, its sampling size, and its mask.

Pure torch (no ComfyUI): boxes are float32 xyxy in image pixels; masks are float32 [H, W] in [0, 1].
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Region:
    """One region to re-sample: where it is, its crop, and the size the crop is sampled at."""

    image_index: int
    index: int  # order after sorting; seeds and per-region prompts follow it
    label: str
    score: float
    box: tuple[float, float, float, float]  # detection box, xyxy
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in the image
    target: tuple[int, int]  # (height, width) the crop is sampled at, multiples of 8
    mask: torch.Tensor  # float32 [crop_h, crop_w]: where the result is pasted (before feathering)

    @property
    def crop_size(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.crop
        return y1 - y0, x1 - x0


SORTS = ("confidence", "area", "left-right", "top-bottom")


def select(boxes: torch.Tensor, scores: torch.Tensor, image_hw: tuple[int, int], *, threshold: float,
           drop_size: int, min_area_ratio: float, max_area_ratio: float, sort_by: str, top_k: int) -> list[int]:
    """Indices of the detections to detail, in processing order.

    Drops low-confidence boxes, boxes whose shorter side is under `drop_size` px, and boxes outside the area-ratio
    band (fraction of the image); sorts; keeps the first `top_k` (0 = all).
    """
    h, w = image_hw
    keep = []
    for i in range(boxes.shape[0]):
        x0, y0, x1, y1 = boxes[i].tolist()
        bw, bh = x1 - x0, y1 - y0
        ratio = (bw * bh) / float(h * w)
        if scores[i] < threshold or min(bw, bh) < drop_size or not (min_area_ratio <= ratio <= max_area_ratio):
            continue
        keep.append(i)
    if sort_by not in SORTS:
        raise ValueError(f"sort_by must be one of {SORTS}")
    key = {
        "confidence": lambda i: -float(scores[i]),
        "area": lambda i: -float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])),
        "left-right": lambda i: float(boxes[i, 0]),
        "top-bottom": lambda i: float(boxes[i, 1]),
    }[sort_by]
    keep.sort(key=key)
    return keep[:top_k] if top_k > 0 else keep


def crop_box(box, image_hw: tuple[int, int], crop_factor: float) -> tuple[int, int, int, int]:
    """The box grown by `crop_factor` around its centre (context for the sampler), clamped to the image."""
    h, w = image_hw
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = max(x1 - x0, 1) * crop_factor / 2, max(y1 - y0, 1) * crop_factor / 2
    cx0, cy0 = max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h))
    cx1, cy1 = min(w, math.ceil(cx + half_w)), min(h, math.ceil(cy + half_h))
    return cx0, cy0, max(cx1, cx0 + 1), max(cy1, cy0 + 1)


def target_size(crop_hw: tuple[int, int], box_hw: tuple[float, float], guide_size: int, max_size: int,
                upscale_small: bool = True) -> tuple[int, int]:
    """The size a crop is sampled at: scaled so the detected box's longer side reaches `guide_size`
    (small regions get more pixels to work with), the crop's longer side capped at `max_size`, rounded to 8."""
    ch, cw = crop_hw
    longest_box = max(box_hw)
    scale = guide_size / longest_box if longest_box > 0 else 1.0
    if not upscale_small:
        scale = min(scale, 1.0)
    scale = min(scale, max_size / max(ch, cw))
    return max(8, int(round(ch * scale / 8)) * 8), max(8, int(round(cw * scale / 8)) * 8)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow (or, negative, shrink) a [H, W] mask by `pixels` with a square max-pool."""
    if pixels == 0:
        return mask
    m = mask[None, None]
    k = 2 * abs(pixels) + 1
    if pixels > 0:
        return F.max_pool2d(m, k, stride=1, padding=abs(pixels))[0, 0]
    return 1 - F.max_pool2d(1 - m, k, stride=1, padding=abs(pixels))[0, 0]


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften a [H, W] mask's edge inward by ~`pixels` (box blur of the eroded mask), so pixels outside the
    original mask stay exactly 0 and the seam blends."""
    if pixels <= 0:
        return mask
    inner = dilate(mask, -pixels)
    k = 2 * pixels + 1
    soft = F.avg_pool2d(inner[None, None], k, stride=1, padding=pixels, count_include_pad=False)[0, 0]
    return torch.minimum(soft, mask)


def box_mask(box, crop) -> torch.Tensor:
    """A rectangle mask of `box` inside `crop` (used when there is neither a segm mask nor SAM)."""
    x0, y0, x1, y1 = crop
    m = torch.zeros(y1 - y0, x1 - x0)
    bx0, by0 = max(int(math.floor(box[0])) - x0, 0), max(int(math.floor(box[1])) - y0, 0)
    bx1, by1 = min(int(math.ceil(box[2])) - x0, x1 - x0), min(int(math.ceil(box[3])) - y0, y1 - y0)
    m[by0:by1, bx0:bx1] = 1.0
    return m


def resize(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize [B, H, W, C] float images in float32 (no 8-bit round trip); antialiased when shrinking."""
    x = images.movedim(-1, 1).float()
    shrink = hw[0] < x.shape[2] or hw[1] < x.shape[3]
    x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    return x.movedim(1, -1).clamp(0, 1)


def paste(image: torch.Tensor, patch: torch.Tensor, crop, mask: torch.Tensor) -> torch.Tensor:
    """`image` [H, W, C] with `patch` [h, w, C] blended in at `crop` through `mask` [h, w] (1 = patch).

    Returns a new tensor; where the mask is 0 the original pixels are kept bit for bit (torch.where, not a
    multiply, so even a non-finite patch cannot leak out)."""
    x0, y0, x1, y1 = crop
    out = image.clone()
    region = out[y0:y1, x0:x1]
    m = mask.to(region.dtype)[..., None]
    blended = region * (1 - m) + patch.to(region.dtype) * m
    out[y0:y1, x0:x1] = torch.where(m > 0, blended, region)
    return out


def group_by_size(regions: list[Region], key=lambda r: r.target, max_batch: int = 0) -> list[list[Region]]:
    """Regions sharing a sampling size (and whatever else `key` adds) form one batch of at most `max_batch`
    (0: no limit); order is kept."""
    groups: dict = {}
    for r in regions:
        groups.setdefault(key(r), []).append(r)
    size = max_batch if max_batch > 0 else max(1, len(regions))
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
