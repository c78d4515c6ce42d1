import dataclasses

import pytest
import torch

from precision_safe.nodes.precision.context import (DEFAULT, ROLES, PrecisionContext, dtype_name, pick,
                                                    resolve_auto, wider_dtypes)


@pytest.mark.parametrize("role", ROLES)
def test_auto_is_fp32_on_cpu(role):
    assert DEFAULT.dtype_for(role, "cpu") == torch.float32


@pytest.mark.parametrize("name,dtype", [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("role", ROLES)
def test_explicit_choice_wins_over_device(role, name, dtype):
    ctx = PrecisionContext(**{role: name})
    assert ctx.dtype_for(role, "cpu") == dtype
    assert dtype_name(dtype) == name


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
        DEFAULT.dtype_for("upscaler", "cpu")


def test_auto_never_gives_fp16_vae_unless_known_safe_on_gpu_without_bf16(monkeypatch):
    import precision_safe.nodes.precision.context as c
    monkeypatch.setattr(c, "bf16_supported", lambda device: False)
    cuda = torch.device("cuda")
    assert resolve_auto("vae", cuda) == torch.float32
    assert resolve_auto("vae", cuda, vae_fp16_safe=True) == torch.float16
    assert resolve_auto("unet", cuda) == torch.float16
    assert resolve_auto("intermediate", cuda) == torch.float32
    monkeypatch.setattr(c, "bf16_supported", lambda device: True)
    assert resolve_auto("vae", cuda) == torch.bfloat16


@pytest.mark.parametrize("start,ladder", [
    (torch.float16, [torch.bfloat16, torch.float32]),
    (torch.bfloat16, [torch.float32]),
    (torch.float32, []),
])
def test_retry_ladder_widens(start, ladder):
    assert wider_dtypes(start, "cpu") == ladder


def test_pick_order_explicit_then_attached_then_auto():
    a, b = PrecisionContext(vae="fp16"), PrecisionContext(vae="bf16")
    assert pick(a, b) == (a, "context input")
    assert pick(None, None, b) == (b, "attached to model")
    assert pick(None, None) == (DEFAULT, "default (auto)")


def test_describe_names_every_role():
    text = PrecisionContext(unet="bf16").describe("cpu")
    for role in ROLES:
        assert f"{role}:" in text
    assert "unet: bf16\n" in text and "vae: fp32 (auto on cpu)" in text
