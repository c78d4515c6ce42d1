"""SafeVAEDecode's per-item retry on a real fp16 overflow on CUDA, and the fp16-safety probe on real VAEs."""
import pytest
import torch

from precision_safe.nodes.precision.context import DEFAULT, PrecisionContext
from precision_safe.nodes.precision.finite import nonfinite_items
from precision_safe.nodes.precision.report import PrecisionRecord

pytestmark = pytest.mark.gpu


def test_fp16_really_overflows_on_cuda(overflow_vae, overflow_batch):
    from precision_safe.nodes.host.copies import vae_at_dtype
    out = vae_at_dtype(overflow_vae, torch.float16).decode(overflow_batch)
    assert nonfinite_items(out) == [1]
    out_bf16 = vae_at_dtype(overflow_vae, torch.bfloat16).decode(overflow_batch)
    assert nonfinite_items(out_bf16) == []


def test_safe_decode_retries_only_the_overflowing_item(overflow_vae, overflow_batch):
    from precision_safe.nodes.host.copies import vae_at_dtype
    from precision_safe.nodes.host.vae_decode import safe_decode
    record = PrecisionRecord("SafeVAEDecode")
    out = safe_decode(overflow_vae, overflow_batch, PrecisionContext(vae="fp16"), record)
    assert torch.isfinite(out).all() and out.dtype == torch.float32
    assert record.retries == ["items [1] fp16 -> bf16: finite"], record.retries
    assert record.ran["vae"] == "fp16 · cuda"
    assert not record.warnings
    # item 0 is the fp16 result, item 1 the bf16 one. fp16 kernels differ by batch size on CUDA (seen: ~2e-4
    # apart at batch 2 vs 1), so "the same" is close here; the retried item was decoded alone, like the reference.
    ref0 = vae_at_dtype(overflow_vae, torch.float16).decode(overflow_batch[:1])[0]
    ref1 = vae_at_dtype(overflow_vae, torch.bfloat16).decode(overflow_batch[1:])[0]
    torch.testing.assert_close(out[0], ref0, rtol=0, atol=5e-3)
    torch.testing.assert_close(out[1], ref1, rtol=0, atol=1e-6)


def test_auto_on_the_h200_needs_no_retry(overflow_vae, overflow_batch):
    from precision_safe.nodes.host.vae_decode import safe_decode
    record = PrecisionRecord("SafeVAEDecode")
    out = safe_decode(overflow_vae, overflow_batch, DEFAULT, record)
    assert torch.isfinite(out).all() and record.retries == [] and record.ran["vae"] == "bf16 · cuda"


def test_error_policy_names_the_items(overflow_vae, overflow_batch):
    from precision_safe.nodes.host.vae_decode import safe_decode
    from precision_safe.nodes.precision.errors import PrecisionError
    with pytest.raises(PrecisionError, match=r"\[1\]"):
        safe_decode(overflow_vae, overflow_batch, PrecisionContext(vae="fp16", on_nonfinite="error"),
                    PrecisionRecord("SafeVAEDecode"))


def test_probe_flags_the_overflow_vae_and_passes_the_plain_one(overflow_vae, checkpoint):
    from precision_safe.nodes.host import fp16_verdict as fv
    bad = fv.vae_fp16_verdict(overflow_vae)
    good = fv.vae_fp16_verdict(checkpoint[2])
    print("overflow VAE:", bad.describe())
    print("plain VAE:   ", good.describe())
    assert not bad.safe and bad.where.startswith("post_quant_conv"), bad
    assert good.safe, good.describe()
    assert bad.fingerprint != good.fingerprint


def test_verdict_is_cached_by_weights(overflow_vae, comfy_dir):
    import os

    import comfy.sd
    import comfy.utils
    from precision_safe.nodes.host import fp16_verdict as fv
    from precision_safe.nodes.host.copies import vae_at_dtype
    first = fv.vae_fp16_verdict(overflow_vae)
    probes = fv.CACHE.probes
    assert fv.vae_fp16_verdict(overflow_vae) is first
    assert fv.vae_fp16_verdict(vae_at_dtype(overflow_vae, torch.float32)) is first  # a pack copy: same source
    again = comfy.sd.VAE(sd=comfy.utils.load_torch_file(
        os.path.join(comfy_dir, "models", "vae", "tiny_overflow_vae.safetensors")))  # loaded again: new object
    assert fv.vae_fp16_verdict(again) is first
    assert fv.CACHE.probes == probes


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_widens_an_fp16_vae_only_when_it_overflows(overflow_vae, checkpoint, monkeypatch, bf16):
    """A VAE ComfyUI runs in fp16 (--fp16-vae): the overflowing one is widened (bf16, or fp32 on GPUs without bf16),
    the safe one stays fp16."""
    from precision_safe.nodes.host import facts as resolver
    from precision_safe.nodes.host.copies import vae_at_dtype
    from precision_safe.nodes.host.vae_decode import safe_decode
    monkeypatch.setattr(resolver, "bf16_supported", lambda device: bf16)
    bad, good = vae_at_dtype(overflow_vae, torch.float16), vae_at_dtype(checkpoint[2], torch.float16)
    want = resolver.resolution(DEFAULT, "vae", bad)
    assert want.dtype == (torch.bfloat16 if bf16 else torch.float32) and "NOT fp16-safe" in want.reason
    assert resolver.resolution(DEFAULT, "vae", good).dtype == torch.float16
    record = PrecisionRecord("SafeVAEDecode")
    out = safe_decode(good, torch.zeros(1, 4, 8, 8), DEFAULT, record)
    assert record.ran["vae"] == "fp16 · cuda" and torch.isfinite(out).all()


def test_a_healthy_decode_is_cores_image_where_core_puts_it(checkpoint):
    """Safe VAE Decode converts and clamps the decoder's output on the GPU (core does it on the CPU) and hands the
    IMAGE over on ComfyUI's intermediate device: the same pixels as core's decode, bit for bit."""
    from precision_safe.nodes.host.vae_decode import safe_decode
    vae = checkpoint[2]
    latent = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    record = PrecisionRecord("SafeVAEDecode")
    out = safe_decode(vae, latent, DEFAULT, record)
    ref = vae.decode(latent)
    assert out.device == ref.device == torch.device(vae.output_device) != torch.device(vae.device)
    assert torch.equal(out, ref)
    assert not record.notes and not record.retries
