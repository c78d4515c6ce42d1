"""The one resolver: `auto` is ComfyUI's own choice for the object, widened only where the pack knows it is unsafe."""
import pytest
import torch

from precision_safe.nodes.precision.context import DEFAULT, ROLES, PrecisionContext, dtype_name
from precision_safe.nodes.precision.resolve import Facts, resolve

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("role", ["unet", "vae", "text_encoder", "intermediate"])
def test_auto_is_comfys_own_choice(role, native):
    r = resolve(DEFAULT, role, Facts(CUDA, native, native, bf16=True, subject="this MODEL"))
    assert r.dtype == native and not r.differs_from_comfy
    assert r.reason == "auto: ComfyUI's choice for this MODEL"


@pytest.mark.parametrize("name,dtype", [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("role", ROLES)
def test_explicit_choice_wins_and_says_what_comfy_chose(role, name, dtype):
    other = torch.float32 if dtype != torch.float32 else torch.float16
    r = resolve(PrecisionContext(**{role: name}), role, Facts(CPU, other, other, subject="it"))
    assert r.dtype == dtype and dtype_name(dtype) == name and r.differs_from_comfy
    assert r.reason == f"set to {name}; ComfyUI chose {dtype_name(other)} for it"


@pytest.mark.parametrize("bf16,wider", [(True, torch.bfloat16), (False, torch.float32)])
def test_fp16_vae_known_to_overflow_is_widened(bf16, wider):
    asked = []

    def verdict():
        asked.append(1)
        return "NOT fp16-safe: overflow at decoder.conv_in"

    r = resolve(DEFAULT, "vae", Facts(CUDA, torch.float16, torch.float16, bf16, "this VAE", verdict))
    assert r.dtype == wider and r.differs_from_comfy and asked == [1]
    assert "widened to" in r.reason and "overflow at decoder.conv_in" in r.reason


def test_the_verdict_is_asked_only_when_it_can_change_the_answer():
    def verdict():
        raise AssertionError("probed although ComfyUI's choice was not fp16 or the choice was explicit")

    assert resolve(DEFAULT, "vae", Facts(CUDA, torch.bfloat16, None, True, fp16_unsafe=verdict)).dtype == torch.bfloat16
    assert resolve(PrecisionContext(vae="fp16"), "vae", Facts(CUDA, torch.float16, None, True,
                                                              fp16_unsafe=verdict)).dtype == torch.float16
    assert resolve(DEFAULT, "unet", Facts(CUDA, torch.float16, None, True, fp16_unsafe=verdict)).dtype == torch.float16


def test_an_fp16_vae_probed_safe_stays_fp16():
    r = resolve(DEFAULT, "vae", Facts(CUDA, torch.float16, torch.float16, True, "this VAE", lambda: None))
    assert r.dtype == torch.float16 and not r.differs_from_comfy


@pytest.mark.parametrize("device,bf16,want", [(CPU, False, torch.float32), (CUDA, True, torch.bfloat16),
                                              (CUDA, False, torch.float16)])
@pytest.mark.parametrize("role", ["detector", "sam"])
def test_roles_comfy_has_no_choice_for_get_the_pack_default(role, device, bf16, want):
    r = resolve(DEFAULT, role, Facts(device, None, None, bf16))
    assert r.dtype == want and r.native is None and r.reason == f"auto: the pack's default on {device.type}"


def test_intermediates_default_to_fp32_even_on_a_gpu():
    assert resolve(DEFAULT, "intermediate", Facts(CUDA, None, None, True)).dtype == torch.float32
