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


# Relative error allowed against the fp16 UNet: on this GPU every fp8 format here computes through fp8 matmul
# (torch._scaled_mm), which quantizes the activations to fp8 e4m3 too (3 mantissa bits): 0.16-0.17 seen on the H200
# through this random tiny UNet, 0.03 once the policy computes at bf16
MATMUL_FP8 = 0.25


def _close(a, b, tol):
    err = ((a - b).norm() / b.norm()).item()
    print(f"relative error vs the fp16 UNet: {err:.4f} (allowed {tol})")
    return err < tol


def _fp8_tensors(net) -> dict:
    """format name -> how many of `net`'s parameters have it, counted from the tensors' own types: ComfyUI
    QuantizedTensors by layout, plain fp8 tensors (no QuantizedTensor) by dtype."""
    from comfy.quant_ops import QuantizedTensor
    found = {}
    for p in net.parameters():
        t = p.data if isinstance(p.data, QuantizedTensor) else p
        if isinstance(t, QuantizedTensor):
            name = f"{t._layout_type} (fp8 e4m3)" if t.dtype == torch.float8_e4m3fn else f"{t._layout_type} {t.dtype}"
        elif t.dtype == torch.float8_e4m3fn:
            name = "plain fp8 e4m3"
        else:
            continue
        found[name] = found.get(name, 0) + 1
    return found


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
    reported = {s.format: n for s, (n, _) in model_storage(model).quantized().items()}
    counted = _fp8_tensors(model.model.diffusion_model)
    print(f"{kind}: reported {reported}, counted {counted}")
    # what Dtype Inspect reports is what the tensors are: on this GPU ComfyUI also stores the layers the metadata
    # leaves unquantized as plain fp8 (the checkpoint's weight dtype, supported here), on a CPU it does not
    assert reported == {name.replace("fp8 e4m3", "float8_e4m3fn").replace("plain ", ""): n
                        for name, n in counted.items()}
    assert ("TensorCoreFP8Layout (float8_e4m3fn)" in reported) == (kind == "mixed fp8")
    auto = resolution(DEFAULT, "unet", model)
    assert auto.dtype == model_compute_dtype(model) and "dequantized per layer" in auto.reason
    assert _close(_run(model), reference, MATMUL_FP8)
    clone, note = model_with_policy(model, PrecisionContext(unet="fp16"))
    assert clone.model is model.model and "kept quantized, computed at fp16" in note and "0 MiB" in note
    import comfy.model_management as mm
    mm.load_models_gpu([clone])
    assert _close(_run(clone), reference, MATMUL_FP8)


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
    assert _close(_run(fixed), reference, MATMUL_FP8)


def test_scaled_mm_scale_dtype_is_explained_and_fp32_scales_fix_it():
    """An fp8 layer computing with torch._scaled_mm, as ComfyUI's fast fp8 ops do, whose scale the checkpoint stored
    as fp16: CUDA's fp8 matmul takes only fp32 scales."""
    from torch import nn
    from precision_safe.nodes.precision.diagnose import DtypeMismatchError, explain_dtype_errors

    class ScaledFp8Linear(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            w = torch.randn(16, 32, device="cuda")
            scale = w.abs().max() / 448
            self.weight = nn.Parameter((w / scale).to(torch.float8_e4m3fn), requires_grad=False)
            self.scale_weight = nn.Parameter(scale.reshape(()).half(), requires_grad=False)

        def forward(self, x):
            one = torch.ones((), device=x.device)
            return torch._scaled_mm(x.to(torch.float8_e4m3fn), self.weight.t(), scale_a=one,
                                    scale_b=self.scale_weight, out_dtype=torch.bfloat16)

    net = nn.Sequential(ScaledFp8Linear())
    x = torch.randn(16, 32, device="cuda")
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors("KSampler #3", modules={"unet": net}, inputs={"latent": x}):
            net(x)
    msg = str(info.value)
    print(msg)
    assert "fp8 matmul (torch._scaled_mm) in unet.0 (ScaledFp8Linear) refused its scales" in msg
    assert "this layer's scale is fp16" in msg and "save the checkpoint's scale tensors as fp32" in msg
    net[0].scale_weight.data = net[0].scale_weight.data.float()  # the fix
    ref = x @ (net[0].weight.float() * net[0].scale_weight).t()
    assert torch.allclose(net(x).float(), ref, rtol=0.1, atol=0.5)
