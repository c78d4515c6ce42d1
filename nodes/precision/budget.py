"""Will a VAE decode fit in memory? Decided before it starts, from the VAE's own estimate (ComfyUI's
`memory_used_decode`, what core batches by) and the memory that is free: decode whole, decode tile by tile, or refuse
with the figures and the fix. A decode that does not fit does not fail fast on a CPU: it swaps or grinds for hours.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from .errors import PrecisionError

TILES = (64, 48, 32, 24, 16)  # latent tile sides tried, largest first (64: 512 px for an 8x VAE, core's own size)
GIB = 2 ** 30


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclasses.dataclass(frozen=True)
class DecodeNeed:
    """What decoding one latent batch takes. `work(h, w)`: bytes the VAE needs to decode one item of h x w latent
    pixels (core decodes a batch in chunks that fit, one item at least); `image_bytes`: the decoded IMAGE batch;
    `blend_bytes`: the weight plane a tiled decode blends overlapping tiles with."""

    batch: int
    height: int  # latent pixels
    width: int
    scale: int  # image pixels per latent pixel
    work: Callable[[int, int], float]
    image_bytes: int
    blend_bytes: int

    def size(self) -> str:
        return f"{self.batch} x {self.width * self.scale}x{self.height * self.scale} px"


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    tile: int = 0  # latent tile side; 0: decode whole
    overlap: int = 0
    whole_bytes: float = 0.0  # the estimate for a whole decode
    free_bytes: float = 0.0

    @property
    def tiled(self) -> bool:
        return self.tile > 0

    def note(self, need: DecodeNeed) -> str:
        return (f"decoded tiled ({self.tile * need.scale} px tiles, overlap {self.overlap * need.scale} px): a whole "
                f"decode of {need.size()} needs ~{gib(self.whole_bytes)}, {gib(self.free_bytes)} is free")


def surely_fits(need: DecodeNeed, total_device: float, total_host: float, shared: bool) -> bool:
    """A decode needing at most half of each memory in all fits whatever else is loaded (ComfyUI unloads models to
    make room, and falls back to tiles on out-of-memory): no need to ask what is free, which costs a device query
    on every decode."""
    whole, image = need.work(need.height, need.width), need.image_bytes
    if shared:
        return whole + image <= total_device / 2
    return whole <= total_device / 2 and image <= total_host / 2


def plan_decode(node: str, need: DecodeNeed, free_device: float, free_host: float, shared: bool) -> DecodePlan:
    """Whole when one item's decode fits in the device's free memory and the IMAGE fits in the host's (the output
    lives there); else the largest tile that fits beside the IMAGE; else a PrecisionError with the figures.

    `shared`: the device is the host (a CPU decode), so work and IMAGE come out of the same free memory."""
    whole = need.work(need.height, need.width)
    image = need.image_bytes
    if image <= free_host and whole + (image if shared else 0) <= free_device:
        return DecodePlan(whole_bytes=whole, free_bytes=free_device)
    kept = image + need.blend_bytes  # a tiled decode holds the IMAGE and its blend weights all along
    for tile in TILES:
        if tile >= max(need.height, need.width):
            continue  # one tile would be the whole decode that did not fit
        work = need.work(min(tile, need.height), min(tile, need.width))
        if kept <= free_host and work + (kept if shared else 0) <= free_device:
            return DecodePlan(tile=tile, overlap=tile // 4, whole_bytes=whole, free_bytes=free_device)
    smallest = need.work(min(TILES[-1], need.height), min(TILES[-1], need.width))
    where = "memory" if shared else "host memory for the IMAGE"
    raise PrecisionError(
        node,
        f"decoding {need.size()} needs ~{gib(whole)} at once, and even tile by tile ~{gib(kept)} for the decoded "
        f"IMAGE itself plus ~{gib(smallest)} per tile, but only {gib(free_host)} of {where} is free "
        f"({gib(free_device)} on the decoding device).",
        "decode fewer or smaller latents at a time: split the batch (Latent From Batch) or generate at a lower "
        "resolution and upscale the IMAGE afterwards; or free memory (close other programs, unload models).",
        "samples")
