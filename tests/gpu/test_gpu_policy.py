"""`auto` on a real CUDA GPU with bf16 (the H200): bf16 for the model roles, fp32 for intermediates."""
import pytest
import torch

from precision_safe.nodes.precision.context import DEFAULT, PrecisionContext, bf16_supported, wider_dtypes

pytestmark = pytest.mark.gpu


def test_the_gpu_has_bf16(cuda):
    assert bf16_supported(cuda), torch.cuda.get_device_name()


@pytest.mark.parametrize("role", ["unet", "vae", "detector", "sam", "text_encoder"])
def test_auto_resolves_to_bf16_for_model_roles(cuda, role):
    assert DEFAULT.dtype_for(role, cuda) == torch.bfloat16
    assert DEFAULT.dtype_for(role, "cuda:0") == torch.bfloat16
    assert DEFAULT.dtype_for(role, "cpu") == torch.float32  # the same context on the CPU


def test_intermediates_stay_fp32(cuda):
    assert DEFAULT.dtype_for("intermediate", cuda) == torch.float32


def test_retry_ladder_on_cuda_keeps_bf16(cuda):
    assert wider_dtypes(torch.float16, cuda) == [torch.bfloat16, torch.float32]
    assert wider_dtypes(torch.bfloat16, cuda) == [torch.float32]


def test_explicit_choices_win_over_auto(cuda):
    ctx = PrecisionContext(vae="fp32", unet="fp16")
    assert ctx.dtype_for("vae", cuda) == torch.float32 and ctx.dtype_for("unet", cuda) == torch.float16


def test_model_with_policy_computes_in_bf16_on_a_clone(checkpoint):
    from precision_safe.nodes.host.attach import model_compute_dtype, model_with_policy
    model, _, _ = checkpoint
    before = model_compute_dtype(model)
    clone = model_with_policy(model, DEFAULT)
    assert torch.device(model.load_device).type == "cuda"
    assert model_compute_dtype(clone) == torch.bfloat16
    assert model_compute_dtype(model) == before  # the shared MODEL is untouched


def test_vae_with_policy_decodes_in_bf16_on_cuda(checkpoint):
    from precision_safe.nodes.host.attach import vae_with_policy
    from precision_safe.nodes.host.fp16_verdict import auto_vae_dtype
    _, _, vae = checkpoint
    v = vae_with_policy(vae, DEFAULT)
    assert v.vae_dtype == torch.bfloat16
    assert {p.dtype for p in v.first_stage_model.parameters()} == {torch.bfloat16}
    assert auto_vae_dtype(vae, DEFAULT) == (torch.bfloat16, None)  # no probe needed where bf16 exists
    img = v.decode(torch.zeros(1, 4, 8, 8))
    assert img.dtype == torch.float32 and img.shape == (1, 64, 64, 3) and torch.isfinite(img).all()
