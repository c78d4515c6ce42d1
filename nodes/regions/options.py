"""The Detailer's options, grouped by stage: each is a small immutable value, so a new option lands in one place.

- DetectionOptions: which detections become regions and how their crops and masks are shaped.
- SamOptions: how SAM is prompted and which of its masks are kept.
- CropOptions: the size a region is sampled at, whether large regions are left alone, and the paste feather.
- SamplingOptions: the sampler (or a custom SAMPLER / SIGMAS), the two seam cures (inpaint model, soft denoise
  mask) and VAE tiling.

Defaults are the node's defaults: an unconnected options input means these values.
"""
from __future__ import annotations

import dataclasses

SORTS = ("confidence", "area", "left-right", "top-bottom", "as given")
SAM_HINTS = ("box", "center-1", "mask-area")
GUIDE_SIZE_FOR = ("bbox", "crop_region")
TILED_VAE = ("off", "encode", "decode", "encode and decode")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def parse_labels(text: str) -> tuple[str, ...]:
    """'face, hand' -> ('face', 'hand'); empty or 'all' -> () (every label)."""
    labels = tuple(s.strip() for s in (text or "").replace("\n", ",").split(",") if s.strip())
    return () if labels in ((), ("all",)) else labels


@dataclasses.dataclass(frozen=True)
class DetectionOptions:
    threshold: float = 0.5  # detector confidence
    labels: tuple[str, ...] = ()  # keep only these labels (every source); () keeps all
    dilation: int = 4  # grow (shrink if negative) detector / MASK masks, in pixels
    crop_factor: float = 2.0  # crop this many times the box around it (detector / MASK regions)
    drop_size: int = 10  # ignore boxes whose shorter side is smaller (detector / MASK regions)
    min_area_ratio: float = 0.0  # box area band as a fraction of the image (detector / MASK regions)
    max_area_ratio: float = 1.0
    top_k: int = 0  # keep at most this many regions per image after sorting (0: all; every source)
    sort_by: str = "confidence"  # region order: top_k, seeds and region prompts follow it (every source)

    def __post_init__(self):
        _check(self.sort_by in SORTS, f"sort_by must be one of {SORTS}, got {self.sort_by!r}")
        _check(self.crop_factor >= 1.0, f"crop_factor must be >= 1, got {self.crop_factor}")
        _check(0.0 <= self.min_area_ratio <= self.max_area_ratio <= 1.0,
               f"need 0 <= min_area_ratio <= max_area_ratio <= 1, got {self.min_area_ratio}, {self.max_area_ratio}")
        _check(self.top_k >= 0 and self.drop_size >= 0, "top_k and drop_size must be >= 0")


@dataclasses.dataclass(frozen=True)
class SamOptions:
    hint: str = "box"  # box: the box alone; center-1: box + its centre point; mask-area: box + points on the mask
    score_threshold: float = 0.93  # with multimask: keep every mask SAM scores at least this (else its best one)
    multimask: bool = False  # ask SAM for its three candidate masks instead of one
    bbox_expansion: int = 0  # grow the box prompt by this many pixels before SAM sees it
    dilation: int = 4  # grow (shrink if negative) SAM's masks, in pixels; the detector's dilation is separate
    mask_hint_threshold: float = 0.5  # mask-area: mask values above this give foreground points

    def __post_init__(self):
        _check(self.hint in SAM_HINTS, f"SAM hint must be one of {SAM_HINTS}, got {self.hint!r}")
        _check(self.bbox_expansion >= 0, f"bbox_expansion must be >= 0, got {self.bbox_expansion}")


@dataclasses.dataclass(frozen=True)
class CropOptions:
    guide_size: int = 512  # the box's (or crop region's) shorter side is scaled up to this
    guide_size_for: str = "bbox"  # "bbox" or "crop_region": what guide_size refers to
    max_size: int = 1024  # upscaling stops when the crop's longer side reaches this
    force_inpaint: bool = True  # also detail regions already larger than guide_size (at their own size)
    feather: int = 5  # soften the paste mask's edge inward by this many pixels

    def __post_init__(self):
        _check(self.guide_size_for in GUIDE_SIZE_FOR, f"guide_size_for must be one of {GUIDE_SIZE_FOR}")
        _check(self.guide_size >= 8 and self.max_size >= 8, "guide_size and max_size must be >= 8")


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    noise_mask: bool = True  # re-sample only inside the mask
    noise_mask_feather: int = 0  # > 0: soft denoise mask (blur radius, px) with differential-diffusion steps
    inpaint_model: bool = False  # feed the crop and its mask to an inpaint model's extra input channels
    cycles: int = 1  # re-sample the latent this many times (seed + cycle), decoding once at the end
    tiled_encode: bool = False
    tiled_decode: bool = False
    tile_size: int = 512  # VAE tile size in pixels when tiled
    sampler: object = None  # a custom SAMPLER: replaces sampler_name
    sigmas: object = None  # a custom SIGMAS [steps + 1] tensor: replaces steps, scheduler and denoise

    def __post_init__(self):
        _check(0.0 <= self.denoise <= 1.0, f"denoise must be in [0, 1], got {self.denoise}")
        _check(self.cycles >= 1 and self.steps >= 1, "steps and cycles must be >= 1")
        _check(self.tile_size >= 64 and self.tile_size % 8 == 0, "tile_size must be a multiple of 8, >= 64")
        _check(self.sigmas is None or len(self.sigmas) >= 2, "SIGMAS must hold at least two values (one step)")

    @property
    def custom(self) -> str:
        """What the custom inputs replace, for the record ('' when neither is connected)."""
        parts = ([f"custom SAMPLER (not {self.sampler_name})"] if self.sampler is not None else []) + (
            [f"custom SIGMAS ({len(self.sigmas) - 1} steps; steps, scheduler and denoise unused)"]
            if self.sigmas is not None else [])
        return " and ".join(parts) + (" for every region" if parts else "")

    @property
    def runs(self) -> bool:
        """Whether anything is re-sampled: denoise 0 with no custom SIGMAS leaves every region as it is."""
        return self.denoise > 0 or self.sigmas is not None

    @staticmethod
    def tiling(choice: str) -> dict:
        """The tiled_vae combo's choice as the two flags."""
        _check(choice in TILED_VAE, f"tiled_vae must be one of {TILED_VAE}, got {choice!r}")
        return {"tiled_encode": "encode" in choice, "tiled_decode": "decode" in choice}
