"""fp16 probe on CPU: an overflow-prone conv decoder vs its rescaled twin (the SDXL fp16-fix trick)."""
from __future__ import annotations

import copy

import pytest
import torch

from precision_safe.nodes.precision import fp16_probe as P

GAIN = 1e5  # conv1 x GAIN (conv2 / GAIN): conv1 activations ~1e5, past fp16 max 65504, as in the overflow VAE


class TinyDecoder(torch.nn.Module):
    """conv -> ReLU -> conv -> ReLU -> conv. ReLU is positively homogeneous: relu(k*x) = k*relu(x) for k > 0,
    so scaling conv1 by 1/k and conv2's weights by k leaves the function unchanged (what fp16-fix VAEs do)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.act1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = torch.nn.ReLU()
        self.conv3 = torch.nn.Conv2d(8, 3, 1)

    def forward(self, z):
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(z)))))


def overflowing():
    m = TinyDecoder()
    with torch.no_grad():
        m.conv1.weight.mul_(GAIN)
        m.conv1.bias.mul_(GAIN)
        m.conv2.weight.div_(GAIN)  # output unchanged in exact arithmetic; conv1's activations are huge
    return m


def rescaled(m, k):
    """Same function as `m`, conv1's outputs scaled by 1/k (ReLU commutes with positive scaling)."""
    m = copy.deepcopy(m)
    with torch.no_grad():
        m.conv1.weight.div_(k)
        m.conv1.bias.div_(k)
        m.conv2.weight.mul_(k)
    return m


LATENT = P.probe_latent(4, size=6)  # tiny: fp16 convolutions on CPU are slow


def probe(m, margin=P.DEFAULT_MARGIN):
    half = copy.deepcopy(m).half()
    return P.probe_fp16(half, lambda: half(LATENT.half()), margin)


def test_twins_compute_the_same_function_in_fp32():
    bad, fixed = overflowing(), rescaled(overflowing(), GAIN)
    with torch.no_grad():
        a, b = bad(LATENT), fixed(LATENT)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_overflowing_decoder_is_unsafe_and_fixed_twin_is_safe():
    bad = probe(overflowing())
    assert not bad.safe
    assert bad.peak == float("inf") or bad.peak > P.FP16_MAX / P.DEFAULT_MARGIN
    assert bad.where in ("conv1", "act1"), bad
    good = probe(rescaled(overflowing(), GAIN))
    assert good.safe, good.describe()
    assert 0 < good.peak <= good.limit
    assert "NOT" in bad.describe() and "NOT" not in good.describe()


def test_the_verdict_matches_what_fp16_really_does():
    """Unsafe means the fp16 output really goes non-finite; safe means it stays close to fp32."""
    bad, fixed = overflowing(), rescaled(overflowing(), GAIN)
    with torch.no_grad():
        out_bad = copy.deepcopy(bad).half()(LATENT.half())
        out_fixed = copy.deepcopy(fixed).half()(LATENT.half()).float()
        ref = fixed(LATENT)
    assert not torch.isfinite(out_bad).all()
    torch.testing.assert_close(out_fixed, ref, rtol=2e-2, atol=2e-2)


def test_margin_flags_peaks_below_fp16_max():
    """Peaks under 65504 but inside the margin are unsafe: real latents go further than the probe's."""
    near = rescaled(overflowing(), GAIN / 16)  # 16x the fixed twin's peaks: finite in fp16
    loose = probe(near, margin=1.0)
    assert loose.safe and loose.peak < P.FP16_MAX
    tight = probe(near, margin=2 * P.FP16_MAX / loose.peak)  # limit = half the observed peak
    assert not tight.safe and tight.peak == loose.peak


def test_hooks_are_removed_and_weights_untouched():
    m = overflowing().half()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    P.probe_fp16(m, lambda: m(LATENT.half()))
    assert all(not mod._forward_hooks for mod in m.modules())
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_hooks_are_removed_when_the_run_raises():
    m = TinyDecoder().half()

    def boom():
        m(LATENT.half())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        P.probe_fp16(m, boom)
    assert all(not mod._forward_hooks for mod in m.modules())


def test_fingerprint_follows_weights_not_objects():
    a, b = TinyDecoder(seed=0), TinyDecoder(seed=0)
    assert P.fingerprint(a) == P.fingerprint(b)  # same weights, different objects
    assert P.fingerprint(a) != P.fingerprint(TinyDecoder(seed=1))
    assert P.fingerprint(overflowing()) != P.fingerprint(rescaled(overflowing(), GAIN))
    # an fp32 model and its bf16 cast hash alike (values are sampled as bf16)
    assert P.compute_fingerprint(a) == P.compute_fingerprint(copy.deepcopy(a).to(torch.bfloat16))


def test_fingerprint_sees_a_change_to_any_single_tensor():
    base = TinyDecoder()
    for name, _ in base.named_parameters():
        m = copy.deepcopy(base)
        with torch.no_grad():
            dict(m.named_parameters())[name].mul_(3.0)
        assert P.compute_fingerprint(m) != P.compute_fingerprint(base), name


def test_fingerprint_is_cached_per_object_and_invalidated_by_in_place_change(monkeypatch):
    m = TinyDecoder()
    calls = []
    real = P.compute_fingerprint
    monkeypatch.setattr(P, "compute_fingerprint", lambda mod, *a: calls.append(1) or real(mod, *a))
    first = P.fingerprint(m)
    assert P.fingerprint(m) == first and len(calls) == 1
    with torch.no_grad():
        m.conv3.weight.mul_(2.0)  # e.g. a patch applied in place
    assert P.fingerprint(m) != first and len(calls) == 2


def test_fingerprint_cache_works_for_inference_tensors(monkeypatch):
    """ComfyUI loads and runs models under inference_mode, whose tensors keep no version counter."""
    with torch.inference_mode():
        m = TinyDecoder()
        m.conv1.weight = torch.nn.Parameter(m.conv1.weight.detach().clone(), requires_grad=False)
    calls = []
    real = P.compute_fingerprint
    monkeypatch.setattr(P, "compute_fingerprint", lambda mod, *a: calls.append(1) or real(mod, *a))
    with torch.inference_mode():
        first = P.fingerprint(m)
        assert P.fingerprint(m) == first and len(calls) == 1
        m.conv1.weight = torch.nn.Parameter(m.conv1.weight * 2, requires_grad=False)  # a replaced tensor
        assert P.fingerprint(m) != first and len(calls) == 2


def test_cache_probes_each_distinct_model_once():
    cache = P.VerdictCache()
    run = lambda m: m(LATENT.half())  # noqa: E731
    bad = overflowing()
    v1 = P.verdict_for_module(cache, bad, run)
    v2 = P.verdict_for_module(cache, copy.deepcopy(bad), run)  # another object, same weights: cache hit
    assert cache.probes == 1 and v1 is v2 and not v1.safe
    assert v1.fingerprint == P.fingerprint(bad)
    fixed = P.verdict_for_module(cache, rescaled(bad, GAIN), run)
    assert cache.probes == 2 and fixed.safe
    # the source model stays fp32 (the probe ran on a copy)
    assert bad.conv1.weight.dtype == torch.float32


def test_a_failing_probe_caches_nothing():
    cache = P.VerdictCache()

    def broken():
        raise RuntimeError("no device")

    with pytest.raises(RuntimeError):
        cache.verdict("k", broken)
    assert cache.get("k") is None and cache.probes == 0


def test_probe_latent_is_fixed():
    assert torch.equal(P.probe_latent(4, 8), P.probe_latent(4, 8))
    assert P.probe_latent(4, 8).shape == (1, 4, 8, 8)
