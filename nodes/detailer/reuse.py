"""Latents of crops encoded before, reused when a crop comes again with the same pixels.

Re-queuing a Detailer with another seed (how one tries another result) finds the same regions in the same image:
their crops are not encoded again, as a graph's VAE Encode node stays cached when only the sampler's seed changes.
A crop is reused only when its pixels (and, for inpaint models, its mask) equal exactly those encoded before, under
the same key (image, crop box, sampling size, VAE network, dtype, device and encode settings). The VAE's encode is
independent per batch item, so a crop's latent does not depend on the crops encoded beside it."""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Callable, Hashable, Optional

import torch

from ..precision.memo import PerSource
from .sampling import Encoded

KEPT_BYTES = 256 * 2 ** 20  # per VAE network: the CPU copies of encoded crops kept to compare with, oldest dropped


@dataclasses.dataclass(frozen=True)
class _Entry:
    pixels: torch.Tensor  # the crop as it was encoded (a CPU copy)
    mask: Optional[torch.Tensor]  # the mask encoded with it, or None
    encoded: Encoded  # its latent(s), one item, on the CPU

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.pixels, self.mask) if t is not None)


def _same(kept: Optional[torch.Tensor], given: Optional[torch.Tensor]) -> bool:
    if kept is None or given is None:
        return kept is given
    return kept.shape == given.shape and kept.dtype == given.dtype and torch.equal(kept, given)


class _Kept:
    """One VAE network's entries, least recently used first."""

    def __init__(self):
        self._entries: "collections.OrderedDict[Hashable, _Entry]" = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def find(self, key: Hashable, pixels: torch.Tensor, mask: Optional[torch.Tensor]) -> Optional[Encoded]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not (_same(entry.pixels, pixels) and _same(entry.mask, mask)):
                return None
            self._entries.move_to_end(key)
            return entry.encoded

    def keep(self, key: Hashable, pixels: torch.Tensor, mask: Optional[torch.Tensor], encoded: Encoded) -> None:
        entry = _Entry(pixels.clone(), None if mask is None else mask.clone(), encoded)
        if entry.nbytes > KEPT_BYTES:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += entry.nbytes - (old.nbytes if old is not None else 0)
            self._entries[key] = entry
            while self._bytes > KEPT_BYTES:
                self._bytes -= self._entries.popitem(last=False)[1].nbytes


_KEPT = PerSource()  # VAE network -> "crops" -> _Kept


def _glance(crop: torch.Tensor) -> bytes:
    """A few of the crop's pixels (a grid of at most 16 x 16), so that other pixels at the same place (another image,
    a changed one) get an entry of their own instead of replacing the one kept; equality is still checked in full."""
    h, w = crop.shape[:2]
    return crop[::max(1, h // 16), ::max(1, w // 16)].contiguous().numpy().tobytes()


def encoded_crops(network, keys: list, crops: list[torch.Tensor], masks: list[Optional[torch.Tensor]],
                  encode: Callable[[list[int]], Encoded], device) -> tuple[Encoded, list[int]]:
    """The latents of `crops` ([h, w, C] CPU crops; `masks` the masks the encode reads, None where it reads none) on
    `device`: each one encoded before under the same key from the same pixels is reused, the others come from
    `encode(indices)` and are kept for next time. Returns the latents and the indices reused."""
    kept, _ = _KEPT.made(network, "crops", _Kept)
    keys = [(k, _glance(c)) for k, c in zip(keys, crops)]
    found = [kept.find(k, c, m) for k, c, m in zip(keys, crops, masks)]
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        fresh = encode(todo)
        for j, i in enumerate(todo):
            found[i] = fresh.item(j)
            kept.keep(keys[i], crops[i], masks[i], found[i].to("cpu"))
    reused = [i for i in range(len(crops)) if i not in todo]
    return Encoded.cat([f.to(device) for f in found]), reused
