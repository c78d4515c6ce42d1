"""`auto` on a real CUDA GPU (the H200): ComfyUI's own choice for each object, the pack's default for detector/SAM."""
import pytest
import torch

from precision_safe.nodes.precision.context import DEFAULT, PrecisionContext, bf16_supported, wider_dtypes

pytestmark = pytest.mark.gpu


def test_the_gpu_has_bf16(cuda):
    assert bf16_supported(cuda), torch.cuda.get_device_name()


def test_auto_is_comfys_choice_for_each_loaded_object(checkpoint):
    from precision_safe.nodes.host.facts import model_compute_dtype, resolution, text_encoder_dtype
    model, clip, vae = checkpoint
    assert resolution(DEFAULT, "unet", model).dtype == model_compute_dtype(model)
    assert resolution(DEFAULT, "vae", vae).dtype == vae.vae_dtype == torch.bfloat16  # SD VAE: bf16 on Ampere+
    assert resolution(DEFAULT, "text_encoder", clip).dtype == text_encoder_dtype(clip)
    print("ComfyUI on this GPU: unet", model_compute_dtype(model), "vae", vae.vae_dtype, "clip",
          text_encoder_dtype(clip))


@pytest.mark.parametrize("role", ["detector", "sam"])
def test_auto_for_roles_comfy_does_not_run_is_bf16(cuda, role):
    from precision_safe.nodes.host.facts import resolution
    assert resolution(DEFAULT, role, device=cuda).dtype == torch.bfloat16
    assert resolution(DEFAULT, role, device="cpu").dtype == torch.float32  # the same context on the CPU


def test_intermediates_stay_fp32(cuda):
    from precision_safe.nodes.host.facts import resolution
    assert resolution(DEFAULT, "intermediate", device=cuda).dtype == torch.float32


def test_retry_ladder_on_cuda_keeps_bf16(cuda):
    assert wider_dtypes(torch.float16, cuda) == [torch.bfloat16, torch.float32]
    assert wider_dtypes(torch.bfloat16, cuda) == [torch.float32]


def test_auto_policy_is_a_plain_clone_and_bf16_a_converted_copy(checkpoint):
    from precision_safe.nodes.host.attach import model_with_policy
    from precision_safe.nodes.host.facts import model_compute_dtype
    model, _, _ = checkpoint
    before = model_compute_dtype(model)
    same, _ = model_with_policy(model, DEFAULT)
    assert same.model is model.model and same.patches_uuid == model.patches_uuid
    assert model_compute_dtype(same) == before
    other = torch.float32 if before != torch.float32 else torch.bfloat16
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[other]
    conv, note = model_with_policy(model, PrecisionContext(unet=name))
    assert conv.model is not model.model and model_compute_dtype(conv) == other
    assert {p.dtype for p in conv.model.diffusion_model.parameters()} == {other}
    assert model_compute_dtype(model) == before  # the shared MODEL is untouched
    print(note)


def test_vae_with_policy_keeps_comfys_bf16_on_cuda(checkpoint):
    from precision_safe.nodes.host.attach import vae_with_policy
    _, _, vae = checkpoint
    v, note = vae_with_policy(vae, DEFAULT)
    assert v.vae_dtype == torch.bfloat16 and v.first_stage_model is vae.first_stage_model and "no cost" in note
    img = v.decode(torch.zeros(1, 4, 8, 8))
    assert img.dtype == torch.float32 and img.shape == (1, 64, 64, 3) and torch.isfinite(img).all()
