import dataclasses

import pytest
import torch

from precision_safe.nodes.precision.context import DEFAULT, PrecisionContext, pick, wider_dtypes


def test_context_is_immutable_and_replace_makes_a_new_one():
    ctx = PrecisionContext(vae="fp16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.vae = "fp32"
    other = ctx.replace(vae="bf16")
    assert (ctx.vae, other.vae) == ("fp16", "bf16")
    assert hash(ctx) != hash(other) and ctx == PrecisionContext(vae="fp16")


@pytest.mark.parametrize("bad", [dict(vae="fp8"), dict(on_mismatch="ignore"), dict(on_nonfinite="retry wider")])
def test_invalid_choices_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PrecisionContext(**bad)


def test_unknown_role_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown precision role"):
        DEFAULT.choice("upscaler")


@pytest.mark.parametrize("start,ladder", [
    (torch.float16, [torch.bfloat16, torch.float32]),
    (torch.bfloat16, [torch.float32]),
    (torch.float32, []),
])
def test_retry_ladder_widens(start, ladder):
    assert wider_dtypes(start, "cpu") == ladder


def test_pick_order_explicit_then_attached_then_auto():
    a, b = PrecisionContext(vae="fp16"), PrecisionContext(vae="bf16")
    assert pick(a, ("VAE", b)) == (a, "context input")
    assert pick(None, ("MODEL", None), ("VAE", b)) == (b, "attached to VAE")
    assert pick(None, ("CLIP", b), ("VAE", a)) == (b, "attached to CLIP")
    assert pick(None) == (DEFAULT, "default (auto)") == pick(None, ("VAE", None))
