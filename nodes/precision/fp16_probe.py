"""Is a decoder safe to run in fp16? A cheap probe, and a verdict cache keyed by the weights, not the file name.

fp16 tops out at 65504. A VAE whose activations get near that on ordinary latents decodes to NaN/Inf (a black
image) in fp16, while bf16 / fp32 (fp32's exponent range) are fine; an "fp16-fix" VAE computes the same function
with its activations rescaled into range. Which kind a VAE is can't be told from its name, so:

- `probe_fp16` runs the fp16 model once on a fixed small input with forward hooks reading every leaf module's
  output peak (abs max). Unsafe when a peak is non-finite or above `65504 / margin` (headroom for real latents,
  which are larger and more varied than the probe's).
- `fingerprint` hashes the weights themselves (names, shapes and a strided sample of every tensor's values,
  rounded to bf16 so an fp32 and a bf16 load of one file agree), computed once per module object.
- `VerdictCache` keeps one verdict per fingerprint: a model is probed once per process, however many copies or
  loader nodes hold it.

Pure torch: no ComfyUI import. nodes/host/fp16_verdict.py applies it to ComfyUI VAEs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Callable, Optional

import torch

from .memo import PerSource

FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504
DEFAULT_MARGIN = 8.0  # unsafe above 65504/8 = 8188
SAMPLES_PER_TENSOR = 64


@dataclasses.dataclass(frozen=True)
class Fp16Verdict:
    """The probe's result: safe or not, the highest activation seen in fp16, where, and against what limit."""

    safe: bool
    peak: float  # inf when some activation overflowed (or came out NaN)
    where: str  # the module whose output held the peak ("" for the model's own output)
    limit: float
    fingerprint: str = ""

    def describe(self) -> str:
        state = "fp16-safe" if self.safe else "NOT fp16-safe"
        peak = "overflow (inf/NaN)" if self.peak == float("inf") else f"{self.peak:.4g}"
        return f"{state}: fp16 activation peak {peak} at {self.where or 'output'} (limit {self.limit:.4g})"


# ------------------------------------------------------------------------------------------ fingerprint

_FINGERPRINTS = PerSource()  # module -> "fingerprint" -> the digest, valid for its tensors' versions


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors (ComfyUI loads models under inference_mode) keep no counter
        return -1


def _versions(tensors) -> tuple:
    """What the cached fingerprint is valid for: the same tensor objects and storage, unchanged in place
    (in-place changes are seen where torch counts them, i.e. not for inference tensors)."""
    return tuple((id(t), t.data_ptr() if not t.is_meta else 0, _version(t)) for t in tensors)


def _named_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    seen = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False)):
        seen.setdefault(name, t)
    return sorted(seen.items())


@torch.no_grad()
def compute_fingerprint(module: torch.nn.Module, per_tensor: int = SAMPLES_PER_TENSOR) -> str:
    """sha256 of every tensor's name, shape and `per_tensor` evenly strided values (as bf16 bits).

    Every tensor is sampled, not a few: a VAE and its overflow-prone or fp16-fixed twin may differ in one layer.
    Cost: one small gather per tensor and a single device->host copy (milliseconds for an SD VAE).
    """
    h = hashlib.sha256()
    samples = []
    for name, t in _named_tensors(module):
        h.update(f"{name}:{tuple(t.shape)};".encode())
        if t.is_meta or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        n = flat.numel()
        if n > per_tensor:
            idx = torch.linspace(0, n - 1, per_tensor, device=flat.device).long()
            flat = flat.index_select(0, idx)
        values = flat.float() if (flat.is_floating_point() or flat.is_complex()) else flat.double().float()
        samples.append(values.to(torch.bfloat16).float())
    if samples:  # gathered on the weights' device, one copy to the host
        dev = samples[0].device
        h.update(torch.cat([v.to(dev) for v in samples]).cpu().numpy().tobytes())
    return h.hexdigest()


def fingerprint(module: torch.nn.Module) -> str:
    """`compute_fingerprint`, cached per module object (recomputed if a weight was changed in place)."""
    versions = _versions([t for _, t in _named_tensors(module)])
    return _FINGERPRINTS.current(module, "fingerprint", versions, lambda: compute_fingerprint(module))


# ---------------------------------------------------------------------------------------------- probe


def _tensors(out):
    if torch.is_tensor(out):
        yield out
    elif isinstance(out, (list, tuple)):
        for o in out:
            yield from _tensors(o)
    elif isinstance(out, dict):
        for o in out.values():
            yield from _tensors(o)


@torch.no_grad()
def activation_peaks(module: torch.nn.Module, run: Callable[[], object]) -> dict[str, float]:
    """abs-max of every leaf module's float output (and the model output, key "") during `run()`.

    Non-finite values count as inf. Peaks stay on the device until the end (one sync, not one per layer).
    Hooks are removed afterwards whatever happens; the module is not otherwise touched.
    """
    found: dict[str, list] = {}

    def hook_for(name):
        def hook(_mod, _inp, out):
            for t in _tensors(out):
                if t.is_floating_point() and t.numel():
                    t = t.detach()
                    peak = t.abs().amax().float()
                    found.setdefault(name, []).append(torch.where(torch.isfinite(peak), peak, torch.inf))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in module.named_modules()
               if name and next(m.children(), None) is None]
    try:
        result = run()
    finally:
        for hnd in handles:
            hnd.remove()
    for t in _tensors(result):
        if t.is_floating_point() and t.numel():
            peak = t.detach().abs().amax().float()
            found.setdefault("", []).append(torch.where(torch.isfinite(peak), peak, torch.inf))
    if not found:
        return {}
    names = list(found)
    dev = found[names[0]][0].device
    stacked = torch.stack([torch.stack([p.to(dev) for p in found[n]]).amax() for n in names])
    return dict(zip(names, stacked.cpu().tolist()))


def verdict_from_peaks(peaks: dict[str, float], margin: float = DEFAULT_MARGIN, fingerprint: str = "") -> Fp16Verdict:
    limit = FP16_MAX / margin
    if not peaks:
        return Fp16Verdict(False, float("inf"), "(no activations seen)", limit, fingerprint)
    where, peak = max(peaks.items(), key=lambda kv: kv[1])
    return Fp16Verdict(peak <= limit, float(peak), where, limit, fingerprint)


def probe_fp16(module: torch.nn.Module, run: Callable[[], object], margin: float = DEFAULT_MARGIN,
               fingerprint: str = "") -> Fp16Verdict:
    """Run `run()` (which must drive `module` in fp16) with hooks on `module`; the verdict for fp16.

    The caller casts: `module` is expected to be an fp16 copy and `run` to feed it an fp16 input.
    """
    return verdict_from_peaks(activation_peaks(module, run), margin, fingerprint)


def probe_latent(channels: int, size: int = 16, scale: float = 5.0, dims: int = 2, seed: int = 0) -> torch.Tensor:
    """The fixed probe input: [1, channels, size, size] normal * `scale`, same on every machine (CPU generator).

    scale 5 is about the spread of an SD latent before the VAE (sampler output / 0.18215).
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, channels) + (size,) * dims, generator=g) * scale


class VerdictCache:
    """Verdicts by weight fingerprint (and margin): each distinct model is probed once."""

    def __init__(self):
        self._verdicts: dict[tuple[str, float], Fp16Verdict] = {}
        self._lock = threading.Lock()
        self.probes = 0  # how many probes actually ran (tests and benchmarks read it)

    def get(self, key: str, margin: float = DEFAULT_MARGIN) -> Optional[Fp16Verdict]:
        with self._lock:
            return self._verdicts.get((key, margin))

    def put(self, key: str, verdict: Fp16Verdict, margin: float = DEFAULT_MARGIN) -> None:
        with self._lock:
            self._verdicts[(key, margin)] = verdict

    def verdict(self, key: str, probe: Callable[[], Fp16Verdict], margin: float = DEFAULT_MARGIN) -> Fp16Verdict:
        """The cached verdict for `key`, else `probe()` (stored; a probe that raises stores nothing)."""
        hit = self.get(key, margin)
        if hit is not None:
            return hit
        v = probe()
        v = dataclasses.replace(v, fingerprint=key)
        with self._lock:
            self.probes += 1
            self._verdicts.setdefault((key, margin), v)
            return self._verdicts[(key, margin)]

    def clear(self) -> None:
        with self._lock:
            self._verdicts.clear()
            self.probes = 0


def verdict_for_module(cache: VerdictCache, module: torch.nn.Module, run_fp16: Callable[[torch.nn.Module], object],
                       margin: float = DEFAULT_MARGIN, fp16_module: Optional[torch.nn.Module] = None) -> Fp16Verdict:
    """Cached verdict for `module`'s weights; on a miss, probes `fp16_module` (default: an fp16 deep copy).

    `run_fp16(m)` must run `m` (already fp16) on the fixed probe input.
    """
    def probe():
        import copy
        m = fp16_module if fp16_module is not None else copy.deepcopy(module).to(torch.float16)
        return probe_fp16(m, lambda: run_fp16(m), margin)

    return cache.verdict(fingerprint(module), probe, margin)
