"""SEGS, the region format of Impact Pack and the packs around it, read and written without importing Impact.

    SEGS = ((height, width), [SEG, ...])
    SEG(cropped_image, cropped_mask, confidence, crop_region, bbox, label, control_net_wrapper=None)

Read as Impact's own nodes read it: `crop_region` [x1, y1, x2, y2] ints slicing the image; `cropped_mask` a float
mask of the crop region's size, numpy or tensor, 2-D (every image of the batch) or 3-D (one mask per image);
`bbox` any 4 numbers; `confidence` a float or a 1-element array; `label` a string; `cropped_image` None or an
IMAGE-like [n, h, w, 3] crop (numpy or tensor); a SEGS made for another image size is scaled to the image.
Written the way Impact's ultralytics detector writes it: cropped_mask float32 numpy, crop_region a list of ints,
bbox a float32 numpy array, confidence a float, cropped_image a float32 numpy [n, h, w, 3] crop.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F

from .regions import Candidate, Region

SEG = namedtuple("SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                         "control_net_wrapper"], defaults=[None])


class SegsError(ValueError):
    """A SEGS value that does not have SEGS' layout; the message says which part."""


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))


def _confidence(value) -> float:
    if value is None:
        return 1.0
    return float(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                            dtype=np.float64).reshape(-1)[0])


def _quad(value, what: str, i: int) -> list[float]:
    flat = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64).reshape(-1)
    if flat.shape[0] != 4:
        raise SegsError(f"SEG {i}: {what} must be [x1, y1, x2, y2], got {value!r}")
    return [float(v) for v in flat]


def _shape(segs) -> tuple[int, int]:
    try:
        (h, w), items = segs
        return int(h), int(w)
    except (TypeError, ValueError):
        raise SegsError("SEGS must be ((height, width), [SEG, ...]), as Impact Pack's detectors make it") from None


def to_candidates(segs, image_hw: tuple[int, int], batch: int, notes: list[str]) -> list[Candidate]:
    """Candidates for every image of a `batch`: each SEG applies to every image (a 3-D cropped_mask holding one
    mask per image applies per image; one of another length is combined, as Impact's SEGSPaste does)."""
    seg_h, seg_w = _shape(segs)
    h, w = image_hw
    sy, sx = (h / seg_h, w / seg_w) if seg_h and seg_w else (1.0, 1.0)
    if (sy, sx) != (1.0, 1.0):
        notes.append(f"SEGS made for {seg_w}x{seg_h} scaled to the {w}x{h} image")
    out = []
    for i, seg in enumerate(segs[1]):
        x0, y0, x1, y1 = _quad(seg.crop_region, "crop_region", i)
        crop = (max(0, int(x0 * sx)), max(0, int(y0 * sy)), min(w, int(x1 * sx)), min(h, int(y1 * sy)))
        if crop[2] <= crop[0] or crop[3] <= crop[1]:
            notes.append(f"SEG {i} ({seg.label}): empty crop region {list(seg.crop_region)}: skipped")
            continue
        bx0, by0, bx1, by1 = _quad(seg.bbox, "bbox", i)
        box = (bx0 * sx, by0 * sy, bx1 * sx, by1 * sy)
        masks = _as_tensor(seg.cropped_mask).float()
        if masks.ndim not in (2, 3):
            raise SegsError(f"SEG {i}: cropped_mask must be [h, w] or [n, h, w], got shape {tuple(masks.shape)}")
        masks = masks if masks.ndim == 3 else masks[None]
        if masks.shape[0] not in (1, batch):
            masks = masks.amax(0, keepdim=True)
        size = (crop[3] - crop[1], crop[2] - crop[0])
        if tuple(masks.shape[1:]) != size:  # scaled SEGS, or a mask not of its crop's size: fit it
            masks = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        for b in range(batch):
            m = masks[b if masks.shape[0] == batch else 0].clamp(0, 1)
            out.append(Candidate(b, box, _confidence(seg.confidence), str(seg.label), crop=crop, crop_mask=m,
                                 control=seg.control_net_wrapper))
    return out


CELL = 8  # components are found among CELL x CELL cells first, then pixel by pixel only inside each one's box


def _components(on: torch.Tensor) -> list[tuple[slice, slice, torch.Tensor]]:
    """The 4-connected components of a bool [H, W]: (rows, cols, its pixels as a bool over that box) each, in the
    order a raster scan meets them (scipy.ndimage.label's). Pixels that touch lie in the same or touching cells, so
    each component lies in one component of the occupied cells: labelling the cells, then each cell component's
    box, finds the same components as labelling every pixel of the image, in time that grows with the boxes."""
    from scipy import ndimage

    h, w = on.shape
    padded = torch.nn.functional.pad(on, (0, -w % CELL, 0, -h % CELL)) if h % CELL or w % CELL else on
    cells = padded.reshape(padded.shape[0] // CELL, CELL, padded.shape[1] // CELL, CELL).any(3).any(1).numpy()
    coarse, _ = ndimage.label(cells)
    found = []
    for n, (cy, cx) in enumerate(ndimage.find_objects(coarse), start=1):
        rows = slice(cy.start * CELL, min(h, cy.stop * CELL))
        cols = slice(cx.start * CELL, min(w, cx.stop * CELL))
        mine = torch.from_numpy(coarse[cy, cx] == n).repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)
        fine, _ = ndimage.label((on[rows, cols] & mine[:rows.stop - rows.start, :cols.stop - cols.start]).numpy())
        for k, (fy, fx) in enumerate(ndimage.find_objects(fine), start=1):
            own = torch.from_numpy(fine[fy, fx] == k)
            at = (slice(rows.start + fy.start, rows.start + fy.stop), slice(cols.start + fx.start, cols.start + fx.stop))
            found.append(((at[0].start, at[1].start + int(own[0].int().argmax())), at, own))
    return [(rows, cols, own) for _, (rows, cols), own in sorted(found, key=lambda f: f[0])]


def mask_candidates(mask: torch.Tensor, batch: int, min_value: float = 0.0) -> list[Candidate]:
    """One candidate per connected component of a MASK ([H, W] for every image, or [B, H, W] one per image), its
    mask the component's own values over its box (a soft mask stays soft; another component inside the box is
    zero there)."""
    masks = mask.float().cpu()
    masks = masks[None] if masks.ndim == 2 else masks
    out = []
    for b in range(batch):
        m = masks[b if masks.shape[0] == batch else 0]
        for rows, cols, own in _components(m > min_value):
            box = (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))
            out.append(Candidate(b, box, 1.0, "mask", mask=torch.where(own, m[rows, cols], torch.zeros(())),
                                 mask_at=(cols.start, rows.start)))
    return out


def _array(t: torch.Tensor) -> np.ndarray:
    """A float32, C-contiguous numpy array of `t` (a view of it when it is one already, on the CPU)."""
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def from_regions(regions: list[Region], image_hw: tuple[int, int], batch: int, crops: dict[int, torch.Tensor]):
    """SEGS of the regions, laid out as Impact's detectors lay it out. `crops[region.index]` is the region's crop
    after detailing ([h, w, 3]); a region left alone gets cropped_image None, as Impact's detailer gives it.
    With a batch of several images each SEG carries [batch, h, w] masks (zero on the other images) and
    [batch, h, w, 3] crops, the per-image layout Impact's SEGSPaste reads. A float32 mask or crop on the CPU is
    not copied (it shares memory with the node's other outputs, as the crops of Impact's detailer do with its SEGS;
    like every ComfyUI value, nothing downstream changes it in place)."""
    items = []
    for r in regions:
        x0, y0, x1, y1 = r.crop
        mask = _array(r.mask)
        image = crops.get(r.index)
        image = None if image is None else _array(image)[None]
        if batch > 1:
            full = np.zeros((batch,) + mask.shape, np.float32)
            full[r.image_index] = mask
            mask = full
            if image is not None:
                image = np.repeat(image, batch, axis=0)  # the crop itself on the other images: pastes as a no-op
        items.append(SEG(image, mask, float(r.score), [int(x0), int(y0), int(x1), int(y1)],
                         np.asarray(r.box, np.float32), r.label, r.control))
    return (int(image_hw[0]), int(image_hw[1])), items
