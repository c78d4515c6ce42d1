"""Quantized weights on a real CUDA GPU (the H200 has fp8 matmul): fp8 storage with fast fp8 matmul, ComfyUI's
QuantizedTensor layers from `_quantization_metadata`, and fp8 scaled weights through torch._scaled_mm, each loaded by
ComfyUI itself from files made on the spot; the pack reads their storage, never copies them, and explains the fp8
matmul's dtype errors with a fix that the test applies."""
import os
import subprocess
import sys

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def unets(comfy_dir):
    import quantized_models as qm
    folder = os.path.join(comfy_dir, "models", "diffusion_models")
    if not os.path.exists(os.path.join(folder, qm.UNET)):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "fixtures" / "make_tiny_models.py"), comfy_dir],
                       check=True)
    qm.ensure(folder, with_gguf=False)  # the GPU tier runs the fp8 formats
    return folder


def _load(folder, name, **options):
    import comfy.model_management as mm
    import comfy.sd
    model = comfy.sd.load_diffusion_model(os.path.join(folder, name), model_options=options)
    mm.load_models_gpu([model])
    return model


def _run(model):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8, device="cuda")
    return model.model.apply_model(x, torch.tensor([10.0], device="cuda"),
                                   c_crossattn=torch.randn(1, 77, 768, device="cuda")).float()


def _close(a, b, tol=0.1):
    err = ((a - b).norm() / b.norm()).item()
    print(f"relative error vs the fp16 UNet: {err:.4f}")
    return err < tol


@pytest.fixture(scope="module")
def reference(unets):
    import quantized_models as qm
    return _run(_load(unets, qm.UNET))


@pytest.mark.parametrize("kind", ["fp8 fast", "mixed fp8"])
def test_quantized_storage_is_read_kept_and_computed_at_the_policy_dtype(unets, reference, kind):
    import quantized_models as qm
    from precision_safe.nodes.host.attach import model_with_policy
    from precision_safe.nodes.host.facts import model_compute_dtype, model_storage, resolution
    from precision_safe.nodes.precision.context import DEFAULT, PrecisionContext
    model = (_load(unets, qm.UNET, dtype=torch.float8_e4m3fn, fp8_optimizations=True) if kind == "fp8 fast"
             else _load(unets, qm.MIXED))
    formats = {s.format for s in model_storage(model).quantized()}
    assert formats == {"float8_e4m3fn" if kind == "fp8 fast" else "TensorCoreFP8Layout (float8_e4m3fn)"}
    auto = resolution(DEFAULT, "unet", model)
    assert auto.dtype == model_compute_dtype(model) and "dequantized per layer" in auto.reason
    assert _close(_run(model), reference)
    clone, note = model_with_policy(model, PrecisionContext(unet="fp16"))
    assert clone.model is model.model and "kept quantized, computed at fp16" in note and "0 MiB" in note
    import comfy.model_management as mm
    mm.load_models_gpu([clone])
    assert _close(_run(clone), reference)


def test_scaled_mm_bias_error_is_explained_and_computing_at_bf16_fixes_it(unets, reference):
    """fp8 scaled weights with fp8 matmul (the checkpoint asks for fp8 optimizations) computed at fp32: torch's fp8
    matmul takes only a bf16/fp16 bias and output."""
    import safetensors.torch
    import quantized_models as qm
    from precision_safe.nodes.host.attach import model_with_policy
    from precision_safe.nodes.precision.context import PrecisionContext
    from precision_safe.nodes.precision.diagnose import DtypeMismatchError, explain_dtype_errors
    name = "ps_tiny_sd15_unet_fp8_scaled_fast.safetensors"
    sd = qm.fp8_scaled(safetensors.torch.load_file(os.path.join(unets, qm.UNET)))
    sd["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)  # no 2 values: fp8 matmul with input scales
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(unets, name))
    model = _load(unets, name)
    at_fp32, _ = model_with_policy(model, PrecisionContext(unet="fp32"))
    import comfy.model_management as mm
    mm.load_models_gpu([at_fp32])
    try:
        with explain_dtype_errors("KSampler #3", modules={"unet": at_fp32.model.diffusion_model}):
            _run(at_fp32)
    except DtypeMismatchError as err:
        print(err)
        assert "fp8 matmul (torch._scaled_mm)" in err.problem and "set Precision Policy's 'unet' to bf16" in err.fix
    else:
        pytest.skip("torch's fp8 matmul accepted an fp32 bias on this GPU: no error to explain")
    fixed, _ = model_with_policy(model, PrecisionContext(unet="bf16"))  # the fix the error proposes
    mm.load_models_gpu([fixed])
    assert _close(_run(fixed), reference)
