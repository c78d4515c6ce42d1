"""Regions for the Detailer: candidates from any source, which of them to keep, the crop around each, its
sampling size, its masks, and pasting the result back.

Pure torch (no ComfyUI): boxes are float xyxy in image pixels; masks are float32 [H, W] in [0, 1].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .options import CropOptions, DetectionOptions, SamOptions


@dataclasses.dataclass(frozen=True)
class Candidate:
    """Something to detail, before it has a crop: a detection, a MASK component, or a SEG.

    Detector and MASK candidates carry an optional mask over a window of the image (None: the box itself): the
    whole image for a detector's or SAM's mask, the component's box for a MASK component. A SEG comes with its own
    crop region and crop-sized mask, which are kept as they are."""

    image_index: int
    box: tuple[float, float, float, float]
    score: float
    label: str
    mask: Optional[torch.Tensor] = None  # [h, w] over the window whose top-left image pixel is mask_at
    mask_at: tuple[int, int] = (0, 0)  # (x, y)
    crop: Optional[tuple[int, int, int, int]] = None  # given by a SEG
    crop_mask: Optional[torch.Tensor] = None  # [crop_h, crop_w], given by a SEG
    control: object = None  # a SEG's control_net_wrapper: applied to this region's conditioning

    def mask_in(self, crop: tuple[int, int, int, int]) -> torch.Tensor:
        """The candidate's mask over `crop` (x0, y0, x1, y1): zero where its window does not reach."""
        x0, y0, x1, y1 = crop
        out = torch.zeros((y1 - y0, x1 - x0), dtype=self.mask.dtype, device=self.mask.device)
        mx, my = self.mask_at
        left, top = max(x0, mx), max(y0, my)
        right, bottom = min(x1, mx + self.mask.shape[1]), min(y1, my + self.mask.shape[0])
        if left < right and top < bottom:
            out[top - y0:bottom - y0, left - x0:right - x0] = self.mask[top - my:bottom - my, left - mx:right - mx]
        return out


@dataclasses.dataclass(frozen=True)
class Region:
    """One region to re-sample: where it is, its crop, its mask, and the size the crop is sampled at."""

    image_index: int
    index: int  # order over the whole batch: seeds and region prompts follow it
    label: str
    score: float
    box: tuple[float, float, float, float]  # xyxy
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in the image
    mask: torch.Tensor  # float32 [crop_h, crop_w]: where the result is pasted (before feathering)
    target: Optional[tuple[int, int]]  # (height, width) sampled at, multiples of 8; None: left alone (large)
    control: object = None

    @property
    def crop_size(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.crop
        return y1 - y0, x1 - x0


def _box_hw(box) -> tuple[float, float]:
    return box[3] - box[1], box[2] - box[0]


def select(cands: list[Candidate], image_hw: tuple[int, int], opts: DetectionOptions,
           detected: bool) -> list[Candidate]:
    """The candidates of ONE image to detail, in processing order.

    Every source: the label filter, the sort order, top_k. Only `detected` ones (detector, MASK) also get the
    confidence threshold, drop_size and the area-ratio band: a SEG is detailed as given, like Impact's detailers.
    """
    h, w = image_hw
    keep = []
    for c in cands:
        if opts.labels and c.label not in opts.labels:
            continue
        if detected:
            bh, bw = _box_hw(c.box)
            ratio = (bw * bh) / float(h * w)
            if c.score < opts.threshold or min(bw, bh) < opts.drop_size:
                continue
            if not opts.min_area_ratio <= ratio <= opts.max_area_ratio:
                continue
        keep.append(c)
    key = {
        "confidence": lambda c: -c.score,
        "area": lambda c: -(_box_hw(c.box)[0] * _box_hw(c.box)[1]),
        "left-right": lambda c: c.box[0],
        "top-bottom": lambda c: c.box[1],
        "as given": None,
    }[opts.sort_by]
    if key is not None:
        keep.sort(key=key)
    return keep[:opts.top_k] if opts.top_k > 0 else keep


def sam_prompt(c: Candidate, opts: SamOptions, image_hw: tuple[int, int]):
    """SAM's prompt for a candidate: (box grown by bbox_expansion, [(x, y, label), ...] points) in image pixels.

    box: the box alone. center-1: plus the box's centre as a foreground point. mask-area: plus foreground points
    on an (at most 8x8) grid where the candidate's own mask (detector segm, MASK or SEG) exceeds
    mask_hint_threshold; the centre when it has no mask or none does.
    """
    h, w = image_hw
    e = opts.bbox_expansion
    x0, y0, x1, y1 = c.box
    box = (max(0.0, x0 - e), max(0.0, y0 - e), min(float(w), x1 + e), min(float(h), y1 + e))
    centre = [((x0 + x1) / 2, (y0 + y1) / 2, 1)]
    if opts.hint == "box":
        return box, []
    if opts.hint == "center-1":
        return box, centre
    if c.crop_mask is not None:  # a SEG's mask over its crop region
        mask, (ox, oy) = c.crop_mask, c.crop[:2]
    elif c.mask is not None:  # a mask over a window of the image: sampled inside the box
        window = (max(0, int(x0)), max(0, int(y0)), min(w, math.ceil(x1)), min(h, math.ceil(y1)))
        mask, (ox, oy) = c.mask_in(window), window[:2]
    else:
        return box, centre
    gy = torch.linspace(0, max(0, mask.shape[0] - 1), 8).round().long().unique().tolist()
    gx = torch.linspace(0, max(0, mask.shape[1] - 1), 8).round().long().unique().tolist()
    points = [(float(x + ox), float(y + oy), 1) for y in gy for x in gx if mask[y, x] > opts.mask_hint_threshold]
    return box, points or centre


def _span(centre: float, size: float, limit: int) -> tuple[int, int]:
    size = min(limit, max(1, math.ceil(size)))
    start = min(max(0, math.floor(centre - size / 2)), limit - size)
    return start, start + size


def crop_box(box, image_hw: tuple[int, int], crop_factor: float) -> tuple[int, int, int, int]:
    """`crop_factor` times the box around its centre (context for the sampler). At the image border the crop is
    shifted inside rather than cut, so equal boxes give equal crops (and batch together), as Impact does."""
    h, w = image_hw
    x0, y0, x1, y1 = box
    cx0, cx1 = _span((x0 + x1) / 2, max(x1 - x0, 1) * crop_factor, w)
    cy0, cy1 = _span((y0 + y1) / 2, max(y1 - y0, 1) * crop_factor, h)
    return cx0, cy0, cx1, cy1


def _round8(v: float) -> int:
    """Up to a multiple of 8 (the latent's), so a crop is never sampled smaller than asked."""
    return max(8, math.ceil(v / 8 - 1e-6) * 8)


def sample_size(crop_hw: tuple[int, int], box_hw: tuple[float, float], opts: CropOptions) -> Optional[tuple[int, int]]:
    """The (height, width) a crop is sampled at, or None when the region is left alone — Impact's rule.

    The box's shorter side (or the crop region's, with guide_size_for="crop_region") is scaled up to guide_size,
    the crop's longer side capped at max_size. A box already at least guide_size on both sides, or a crop that
    would not be enlarged, is left alone unless force_inpaint; then it is sampled at its own size (never shrunk,
    so large faces are not softened). Rounded up to multiples of 8 for the VAE.
    """
    ch, cw = crop_hw
    bh, bw = box_hw
    if not opts.force_inpaint and bh >= opts.guide_size and bw >= opts.guide_size:
        return None
    ref = min(bw, bh) if opts.guide_size_for == "bbox" else min(cw, ch)
    scale = opts.guide_size / ref if ref > 0 else 1.0
    if max(ch, cw) * scale > opts.max_size:
        scale = opts.max_size / max(ch, cw)
    if scale <= 1.0:
        if not opts.force_inpaint:
            return None
        scale = 1.0
    return _round8(ch * scale), _round8(cw * scale)


def _square_max(m: torch.Tensor, r: int) -> torch.Tensor:
    """Max over a (2r+1)-square window of [1, 1, H, W], as a row pass then a column pass (a square's max is the max
    of its rows' maxima: exact, and O(r) per pixel instead of O(r²))."""
    m = F.max_pool2d(m, (1, 2 * r + 1), stride=1, padding=(0, r))
    return F.max_pool2d(m, (2 * r + 1, 1), stride=1, padding=(r, 0))


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow (or, negative, shrink) a [H, W] mask by `pixels` with a square max-pool."""
    if pixels == 0:
        return mask
    m = mask[None, None]
    r = abs(pixels)
    if pixels > 0:
        return _square_max(m, r)[0, 0]
    return 1 - _square_max(1 - m, r)[0, 0]


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften a [H, W] mask's edge inward by ~`pixels` (box blur of the eroded mask), so pixels outside the
    original mask stay exactly 0 and the seam blends. The box blur runs as a row pass then a column pass: averaging
    only the pixels inside the image, as the square window clipped at the border does."""
    if pixels <= 0:
        return mask
    inner = dilate(mask, -pixels)[None, None]
    k = 2 * pixels + 1
    soft = F.avg_pool2d(inner, (1, k), stride=1, padding=(0, pixels), count_include_pad=False)
    soft = F.avg_pool2d(soft, (k, 1), stride=1, padding=(pixels, 0), count_include_pad=False)[0, 0]
    return torch.minimum(soft, mask)


def soft_mask(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """A Gaussian blur (sigma = radius / 2) of [B, H, W] masks: the soft denoise mask of differential diffusion,
    which fades the re-sampling out across the mask edge. radius <= 0: the masks as they are."""
    if radius <= 0:
        return masks
    sigma = radius / 2
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t / sigma) ** 2 / 2)
    k = (k / k.sum()).to(masks)
    x = masks[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return x[:, 0].clamp(0, 1)


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
    if tuple(x.shape[2:]) == tuple(hw):
        return x.movedim(1, -1).clamp(0, 1)
    shrink = hw[0] < x.shape[2] or hw[1] < x.shape[3]
    x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    return x.movedim(1, -1).clamp(0, 1)


def paste_into(image: torch.Tensor, patch: torch.Tensor, crop, mask: torch.Tensor) -> None:
    """Blend `patch` [h, w, C] into `image` [H, W, C] in place at `crop` through `mask` [h, w] (1 = patch).

    Only the crop's pixels are read and written; where the mask is 0 they are kept bit for bit (torch.where, not a
    multiply, so even a non-finite patch cannot leak out)."""
    x0, y0, x1, y1 = crop
    region = image[y0:y1, x0:x1]
    m = mask.to(region.dtype)[..., None]
    blended = region * (1 - m) + patch.to(region.dtype) * m
    region.copy_(torch.where(m > 0, blended, region))


def extent(mask: torch.Tensor) -> Optional[tuple[int, int, int, int]]:
    """The box (x0, y0, x1, y1) around a [h, w] mask's non-zero pixels, None when it has none: what a paste through
    the mask can change."""
    on = mask > 0
    rows, cols = on.any(1).nonzero(), on.any(0).nonzero()
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def paste(image: torch.Tensor, patch: torch.Tensor, crop, mask: torch.Tensor) -> torch.Tensor:
    """`paste_into` on a copy of `image`: the image given is not changed."""
    out = image.clone()
    paste_into(out, patch, crop, mask)
    return out


def group_by_size(regions: list[Region], key=lambda r: r.target, max_batch: int = 0) -> list[list[Region]]:
    """Regions sharing a sampling size (and whatever else `key` adds) form one batch of at most `max_batch`
    (0: no limit); order is kept."""
    groups: dict = {}
    for r in regions:
        groups.setdefault(key(r), []).append(r)
    size = max_batch if max_batch > 0 else max(1, len(regions))
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
