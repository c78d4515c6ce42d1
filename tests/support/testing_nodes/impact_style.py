"""SEGS made and read the way Impact Pack's nodes make and read them, for testing interop without Impact installed.

Written from Impact Pack's data layout (its SEG namedtuple and what its detectors, MaskToSEGS, SEGSPaste,
segs_to_combined_mask and DetailerForEach do with each field), not from its code: numpy float32 masks of the crop
region's size, `crop_region` as a list of Python ints, `bbox` as a float32 numpy array (detectors) or a tuple of
numpy ints (MaskToSEGS), `confidence` as a 1-element numpy array (detectors) or 1.0, `cropped_image` a [1, h, w, 3]
tensor crop or None, and a namedtuple class of its own (not the pack's).
"""
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F

SEG = namedtuple("SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                         "control_net_wrapper"], defaults=[None])


def _span(lo, hi, factor, limit):
    size = (hi - lo) * factor
    start = int(lo + (hi - lo) / 2 - size / 2)
    if start < 0:
        return 0, int(min(limit, size))
    if start + size > limit:
        return int(max(0, limit - size)), limit
    return start, int(min(limit, start + size))


def crop_region(w, h, bbox, crop_factor):
    """An int crop region around a box, moved inside the image at the border."""
    x1, x2 = _span(bbox[0], bbox[2], crop_factor, w)
    y1, y2 = _span(bbox[1], bbox[3], crop_factor, h)
    return [x1, y1, x2, y2]


def detector_segs(image: torch.Tensor, boxes, labels, confidences, crop_factor=2.0):
    """SEGS as Impact's ultralytics bbox detector emits them for one image [1, H, W, 3]."""
    h, w = image.shape[1], image.shape[2]
    items = []
    for box, label, conf in zip(boxes, labels, confidences):
        full = np.zeros((h, w), bool)
        full[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = True
        region = crop_region(w, h, box, crop_factor)
        x1, y1, x2, y2 = region
        items.append(SEG(image[:, y1:y2, x1:x2, :], full.astype(np.float32)[y1:y2, x1:x2],
                         np.array([conf], np.float32), region, np.asarray(box, np.float32), label, None))
    return (h, w), items


def mask_segs(mask: np.ndarray, crop_factor=2.0, label="A"):
    """SEGS as MaskToSEGS emits them (combined): one SEG per mask, its bbox from the mask's extent."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    bbox = (np.min(xs), np.min(ys), np.max(xs), np.max(ys))
    x1, y1, x2, y2 = region = crop_region(w, h, bbox, crop_factor)
    return (h, w), [SEG(None, mask[y1:y2, x1:x2].astype(np.float32), 1.0, region, bbox, label, None)]


# ---------------------------------------------------------------------------------------------- reading SEGS

def combined_mask(segs) -> torch.Tensor:
    """The union of a SEGS' masks, built with numpy uint8 arithmetic on each cropped_mask (which must be numpy)."""
    (h, w), items = segs
    out = np.zeros((h, w), np.uint8)
    for seg in items:
        x1, y1, x2, y2 = seg.crop_region
        out[y1:y2, x1:x2] |= (seg.cropped_mask * 255).astype(np.uint8)
    return torch.from_numpy(out.astype(np.float32) / 255.0)


def crop_like_a_detailer(image: torch.Tensor, seg) -> torch.Tensor:
    """What a detailer cuts out for a SEG: numpy slicing with the crop region's values, after checking the mask."""
    assert not (seg.cropped_mask == 0).all().item(), "empty mask"
    x1, y1, x2, y2 = seg.crop_region
    return torch.from_numpy(image.cpu().numpy()[:, y1:y2, x1:x2, :])


def paste(image: torch.Tensor, segs) -> torch.Tensor:
    """Each SEG's cropped_image pasted back through its mask (per image of the batch), with no feathering."""
    out = []
    for i in range(image.shape[0]):
        img = image[i:i + 1].clone()
        for seg in segs[1]:
            if seg.cropped_image is None:
                continue
            crop = seg.cropped_image
            crop = torch.from_numpy(crop) if isinstance(crop, np.ndarray) else crop
            mask = seg.cropped_mask
            mask = mask[i] if mask.ndim == 3 and len(mask) == image.shape[0] else mask
            mask = torch.from_numpy(np.asarray(mask, np.float32))[None, ..., None]
            x, y = seg.crop_region[0], seg.crop_region[1]
            ch, cw = crop.shape[1], crop.shape[2]
            if tuple(mask.shape[1:3]) != (ch, cw):
                mask = F.interpolate(mask.movedim(-1, 1), size=(ch, cw), mode="bilinear").movedim(1, -1)
            img[:, y:y + ch, x:x + cw, :] = (1 - mask) * img[:, y:y + ch, x:x + cw, :] + mask * crop[i:i + 1]
        out.append(img)
    return torch.cat(out)


# ------------------------------------------------------------------------------ the same as graph nodes

class ControlNetWrapper:
    """A SEG's control_net_wrapper with the interface Impact's detailers call: apply(positive, negative, image,
    mask) adds a ControlNet with this SEG's own hint (a crop) to positive; doit_ipadapter(model) changes nothing."""

    def __init__(self, control_net, hint: torch.Tensor, strength: float):
        self.control_net, self.hint, self.strength = control_net, hint, strength

    def apply(self, positive, negative, image, mask=None, use_acn=False):
        net = self.control_net.copy().set_cond_hint(self.hint.movedim(-1, 1), self.strength)
        positive = [[t, {**opts, "control": net, "control_apply_to_uncond": True}] for t, opts in positive]
        return positive, negative, [self.hint]

    def doit_ipadapter(self, model):
        return model, []


def _boxes(text):
    return [tuple(float(v) for v in b.split(",")) for b in text.split(";") if b.strip()]


class ImpactStyleSEGS:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("SEGS",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "boxes": ("STRING", {"default": "10,10,40,40"}),
                             "labels": ("STRING", {"default": "A"}), "crop_factor": ("FLOAT", {"default": 2.0})}}

    def run(self, image, boxes, labels, crop_factor):
        boxes = _boxes(boxes)
        labels = [s.strip() for s in labels.split(",")]
        return (detector_segs(image[:1], boxes, labels, [0.9] * len(boxes), crop_factor),)


class ImpactStyleControlNetSEGS:
    """Gives each SEG a ControlNet wrapper holding the hint cut to its crop region, as Impact's ControlNet-for-SEGS
    node does with a control image."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("SEGS",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"segs": ("SEGS",), "control_net": ("CONTROL_NET",), "hint": ("IMAGE",),
                             "strength": ("FLOAT", {"default": 1.0})}}

    def run(self, segs, control_net, hint, strength):
        items = []
        for seg in segs[1]:
            x1, y1, x2, y2 = seg.crop_region
            items.append(seg._replace(control_net_wrapper=ControlNetWrapper(control_net, hint[:1, y1:y2, x1:x2],
                                                                            strength)))
        return ((segs[0], items),)


class ImpactStylePaste:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "segs": ("SEGS",)}}

    def run(self, image, segs):
        return (paste(image, segs),)


class ImpactStyleCombinedMask:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MASK",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"segs": ("SEGS",)}}

    def run(self, segs):
        return (combined_mask(segs)[None],)


NODE_CLASS_MAPPINGS = {"PSTest_ImpactSEGS": ImpactStyleSEGS, "PSTest_ImpactControlNetSEGS": ImpactStyleControlNetSEGS,
                       "PSTest_ImpactSEGSPaste": ImpactStylePaste, "PSTest_ImpactCombinedMask": ImpactStyleCombinedMask}
