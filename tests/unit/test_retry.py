"""The per-item retry ladder, on a real conv decoder that overflows fp16 for large latents only."""
import pytest
import torch

from precision_safe.nodes.precision.context import PrecisionContext
from precision_safe.nodes.precision.errors import PrecisionError
from precision_safe.nodes.precision.report import PrecisionRecord
from precision_safe.nodes.precision.retry import run_with_retry


def _decoder():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GroupNorm(2, 8),
                              torch.nn.Conv2d(8, 3, 1))
    with torch.no_grad():
        net[0].weight.mul_(2e5)  # activations beyond fp16's 65504 once the latent is not tiny
    return net


def _run_at_factory(net, calls):
    copies = {}

    def run_at(z, dtype):
        calls.append((z.shape[0], dtype))
        model = copies.setdefault(dtype, _copy_at(net, dtype))
        with torch.no_grad():
            return model(z.to(dtype)).float()
    return run_at


def _copy_at(net, dtype):
    import copy
    return copy.deepcopy(net).to(dtype)


def _latent():
    z = torch.randn(3, 4, 2, 2)
    z[0] *= 1e-6  # this item stays inside fp16's range
    return z


def test_only_failed_items_are_redone_and_the_rest_is_untouched():
    net, calls = _decoder(), []
    z = _latent()
    rec = PrecisionRecord("SafeVAEDecode")
    out = run_with_retry(_run_at_factory(net, calls), z, torch.float16, PrecisionContext(), rec, "cpu")
    assert torch.isfinite(out).all()
    assert calls == [(3, torch.float16), (2, torch.bfloat16)]
    assert rec.retries == ["items [1, 2] fp16 -> bf16: finite"]
    with torch.no_grad():
        ref = net(z)
    torch.testing.assert_close(out[1:], ref[1:], rtol=0.05, atol=0.05)  # bf16 result of the retried items
    torch.testing.assert_close(out[0], ref[0], rtol=0.01, atol=0.01)  # item 0 kept from the fp16 pass


def test_error_mode_raises_on_the_node():
    with pytest.raises(PrecisionError, match=r"non-finite .* batch items \[1, 2\]"):
        run_with_retry(_run_at_factory(_decoder(), []), _latent(), torch.float16,
                          PrecisionContext(on_nonfinite="error"), PrecisionRecord("SafeVAEDecode"), "cpu")


def test_keep_mode_passes_on_with_a_warning():
    rec = PrecisionRecord("SafeVAEDecode")
    out = run_with_retry(_run_at_factory(_decoder(), []), _latent(), torch.float16,
                            PrecisionContext(on_nonfinite="keep"), rec, "cpu")
    assert not torch.isfinite(out[1:]).all()
    assert "non-finite for batch items [1, 2]" in rec.warnings[0]


def test_result_of_the_first_pass_is_not_written_into():
    net = _decoder()
    first = {}

    def run_at(z, dtype):
        with torch.no_grad():
            out = _copy_at(net, dtype)(z.to(dtype)).float()
        first.setdefault("out", out)
        return out
    run_with_retry(run_at, _latent(), torch.float16, PrecisionContext(), PrecisionRecord("n"), "cpu")
    assert not torch.isfinite(first["out"][1:]).all()
