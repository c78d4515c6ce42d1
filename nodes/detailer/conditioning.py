"""Conditioning cut to region crops: what was meant for the whole image, re-aimed at each crop the Detailer samples.

A CONDITIONING list holds [embedding, options] entries. Three options refer to image positions and would land
in the wrong place if given to a crop unchanged (ComfyUI stretches them over whatever it samples):
- "control" (ControlNet / T2I-Adapter chains): each net's hint image is taken as covering the whole image; every
  net in the chain is copied with its hint cut to each crop ([batch, C, h, w], one per region), so one batched
  call gives every region its own hint. Positive and negative share copies where they shared nets.
- "mask" (ConditioningSetMask): the mask is cut to each crop, one per region.
- "area" (ConditioningSetArea / ...Percentage): moved into the crop's latent frame; an entry whose area misses
  the crop does not apply to that region and is dropped. One crop per call (areas can't differ within a batch).
Other entries and options pass through. The conditioning given is never changed: entries and nets are copies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LATENT_SCALE = 8  # ConditioningSetArea's units: pixels // 8


def needs_single_crop(conditioning) -> bool:
    """Whether a region with this conditioning must be sampled alone (area conditioning)."""
    return any("area" in opts for _, opts in conditioning)


def _cut(images: torch.Tensor, crops, image_hw, target_hw, batch: int) -> torch.Tensor:
    """[N, C, h, w] maps over the whole image -> [len(crops), C, *target_hw], each cut to its crop (image index i
    of a batch of N images, else the first)."""
    h, w = image_hw
    out = []
    for image_index, (x0, y0, x1, y1) in crops:
        item = images[image_index if images.shape[0] == batch else 0][None].float()
        full = F.interpolate(item, size=(h, w), mode="bilinear", align_corners=False)
        out.append(F.interpolate(full[..., y0:y1, x0:x1], size=target_hw, mode="bilinear", align_corners=False))
    return torch.cat(out).to(images.dtype)


def _control(net, crops, image_hw, target_hw, batch, memo):
    if id(net) in memo:
        return memo[id(net)]
    new = net.copy()
    if net.cond_hint_original is not None:
        new.cond_hint_original = _cut(net.cond_hint_original, crops, image_hw, target_hw, batch)
    if net.previous_controlnet is not None:
        new.set_previous_controlnet(_control(net.previous_controlnet, crops, image_hw, target_hw, batch, memo))
    memo[id(net)] = new
    return new


def _area(area, crop, image_hw, target_hw):
    """An area option in the crop's latent frame, or None when it misses the crop."""
    h, w = image_hw
    if area[0] == "percentage":
        ah, aw, ay, ax = area[1] * h, area[2] * w, area[3] * h, area[4] * w
    else:
        ah, aw, ay, ax = (v * LATENT_SCALE for v in area[:4])
    x0, y0, x1, y1 = crop
    top, left = max(ay, y0), max(ax, x0)
    bottom, right = min(ay + ah, y1), min(ax + aw, x1)
    if bottom <= top or right <= left:
        return None
    sy, sx = target_hw[0] / (y1 - y0), target_hw[1] / (x1 - x0)
    lh, lw = target_hw[0] // LATENT_SCALE, target_hw[1] // LATENT_SCALE
    ly, lx = min(lh - 1, round((top - y0) * sy / LATENT_SCALE)), min(lw - 1, round((left - x0) * sx / LATENT_SCALE))
    return (max(1, min(lh - ly, round((bottom - top) * sy / LATENT_SCALE))),
            max(1, min(lw - lx, round((right - left) * sx / LATENT_SCALE))), ly, lx)


def for_crops(conditioning, crops, image_hw, target_hw, batch: int, memo: dict):
    """`conditioning` for a batch of crops [(image_index, (x0, y0, x1, y1)), ...] sampled at `target_hw`, or None
    when no entry applies (every entry's area misses the crop). `memo` (one dict per batch) makes positive and
    negative share their copied ControlNets."""
    out = []
    for embedding, opts in conditioning:
        opts = dict(opts)
        if "area" in opts:
            if len(crops) != 1:
                raise ValueError("area conditioning needs one crop per call")
            opts["area"] = _area(opts["area"], crops[0][1], image_hw, target_hw)
            if opts["area"] is None:
                continue
        if "mask" in opts:
            mask = opts["mask"]
            mask = mask[None] if mask.ndim == 2 else mask
            opts["mask"] = _cut(mask[:, None], crops, image_hw, target_hw, batch)[:, 0]
        if opts.get("control") is not None:
            opts["control"] = _control(opts["control"], crops, image_hw, target_hw, batch, memo)
        out.append([embedding, opts])
    return out or None


def with_text(conditioning, text_conditioning):
    """`conditioning` with its text (embedding and pooled output) replaced by `text_conditioning`'s first entry,
    keeping every other option (ControlNet, area, mask, strength): a region prompt changes only the words."""
    embedding, text_opts = text_conditioning[0]
    out = []
    for _, opts in conditioning:
        opts = {k: v for k, v in opts.items() if k != "pooled_output"}
        if "pooled_output" in text_opts:
            opts["pooled_output"] = text_opts["pooled_output"]
        out.append([embedding, opts])
    return out
