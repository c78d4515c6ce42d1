"""Errors fp8 weights give, explained with the layer, both dtypes and a fix; each fix applied and seen to work (real
torch errors on the CPU; torch._scaled_mm's refusals come only on CUDA: they run in tests/gpu/test_gpu_quantized.py)."""
import pytest
import torch
from torch import nn

from precision_safe.nodes.precision.diagnose import (DtypeMismatchError, explain_dtype_errors, parse_fp8_mm_error)
from precision_safe.nodes.precision.reach import census, storage_of

FP8 = getattr(torch, "float8_e4m3fn", None)
pytestmark = pytest.mark.skipif(FP8 is None, reason="this torch has no float8_e4m3fn")


class ScaledFp8Linear(nn.Module):
    """An fp8 layer computing with torch._scaled_mm, as ComfyUI's fast fp8 ops do."""

    def __init__(self, scale_dtype):
        super().__init__()
        torch.manual_seed(0)
        w = torch.randn(16, 32)
        scale = w.abs().max() / 448
        self.weight = nn.Parameter((w / scale).to(FP8), requires_grad=False)
        self.scale_weight = nn.Parameter(scale.reshape(()).to(scale_dtype), requires_grad=False)

    def forward(self, x):
        one = torch.ones((), dtype=torch.float32)
        return torch._scaled_mm(x.to(FP8), self.weight.t(), scale_a=one, scale_b=self.scale_weight,
                                out_dtype=torch.bfloat16)


def test_cuda_scaled_mm_wordings_are_recognised():
    # the wordings users quote (ComfyUI #11290, desktop #1476)
    bias = RuntimeError("FP8 _scaled_mm failed, falling back to dequantization: Bias must be BFloat16 or Half, "
                        "but got Float8_e4m3fn")
    assert parse_fp8_mm_error(bias) == {"part": "bias", "got": "float8_e4m3fn"}
    assert parse_fp8_mm_error(RuntimeError("scale_a and scale_b must be float (fp32) tensors")) == \
        {"part": "scale", "got": None}
    # torch 2.14 on an H200 (tests/gpu/test_gpu_quantized.py raises both for real and applies the fixes)
    assert parse_fp8_mm_error(RuntimeError("FP8 _scaled_mm failed, falling back to dequantization: Bias is not "
                                           "supported when out_dtype is set to Float32")) == \
        {"part": "bias", "got": "fp32"}
    assert parse_fp8_mm_error(RuntimeError("Invalid scaling configuration.\n- For TensorWise scaling, a and b should "
                                           "be float8, scales should be float and singletons.")) == \
        {"part": "scale", "got": None}
    assert parse_fp8_mm_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x4 and 5x6)")) is None


class RawLoraFp8(nn.Module):
    """A layer whose fp8 weights get a LoRA delta added as they are stored, as a LoRA applier that skips the cast
    does: torch refuses to promote fp16 and fp8."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.delta = torch.full((8, 8), 0.01, dtype=torch.float16)

    def forward(self, x):
        return nn.functional.linear(x, self.weight + self.delta)


def test_lora_on_fp8_weights_is_explained_and_weights_at_the_compute_dtype_fix_it():
    torch.manual_seed(0)
    w = torch.randn(8, 8)
    net = nn.Sequential(RawLoraFp8(w.to(FP8)))
    x = torch.randn(2, 8, dtype=torch.float16)
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors("KSampler #3", modules={"unet": net}, inputs={"latent": x}):
            net(x)
    err = info.value
    assert "Promotion for Float8 Types is not supported, attempted to promote" in err.torch_message
    assert err.weight_dtype == "float8_e4m3fn" and err.input_dtype == "fp16"
    assert "fp8 is a storage dtype torch does not compute in" in err.problem
    assert "merges weight patches at the compute dtype, not into the float8_e4m3fn storage" in err.fix
    net[0].weight.data = net[0].weight.data.to(torch.float16)  # the fix: the weights at the compute dtype
    assert torch.isfinite(net(x)).all()


def test_storage_formats_of_fp8_layers():
    plain, scaled = nn.Linear(32, 16).to(FP8), ScaledFp8Linear(torch.float32)
    assert storage_of(plain.weight, plain).format == "float8_e4m3fn"
    s = storage_of(scaled.weight, scaled)
    assert s.format == "float8_e4m3fn scaled" and s.quantized and s.scaled and not s.packed
    found = census(nn.Sequential(plain, scaled))
    assert {x.format: c for x, c in found.formats().items()} == {
        "float8_e4m3fn": (2, 16 * 32 + 16), "float8_e4m3fn scaled": (1, 16 * 32)}
    assert not found.copyable and found.any_quantized
