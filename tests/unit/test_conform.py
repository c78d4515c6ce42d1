import pytest
import torch

from precision_safe.nodes.precision.conform import conform
from precision_safe.nodes.precision.context import PrecisionContext
from precision_safe.nodes.precision.errors import PrecisionError
from precision_safe.nodes.precision.report import PrecisionRecord
from precision_safe.nodes.precision.resolve import Facts, resolve


def between(ctx=PrecisionContext()):
    """What `intermediate` resolves to on a CPU host whose ComfyUI passes fp32 IMAGE/LATENT."""
    return resolve(ctx, "intermediate", Facts(torch.device("cpu"), torch.float32))

HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
def test_cast_mode_casts_records_and_never_mutates(dtype):
    x = torch.rand(2, 4, 4, 3).to(dtype)
    before = x.clone()
    rec = PrecisionRecord("Node #1")
    y = conform(x, between(), "cast", "cpu", record=rec, input_name="image")
    assert y.dtype == torch.float32 and x.dtype == dtype
    assert torch.equal(x, before)
    torch.testing.assert_close(y, before.float())
    assert rec.casts == [f"image: {'fp16' if dtype == torch.float16 else 'bf16'} -> fp32"]


@pytest.mark.parametrize("dtype", HALF)
def test_error_mode_names_node_input_both_dtypes_and_fix(dtype):
    x = torch.zeros(1, 4, 2, 2, dtype=dtype)
    rec = PrecisionRecord("SafeVAEDecode #7")
    with pytest.raises(PrecisionError) as e:
        conform(x, between(), "error", "cpu", record=rec, input_name="samples")
    msg = str(e.value)
    found = "fp16" if dtype == torch.float16 else "bf16"
    assert "SafeVAEDecode #7" in msg and "'samples'" in msg
    assert f"got {found}" in msg and "expects fp32" in msg and "'intermediate'" in msg
    assert "Fix:" in msg and "on_mismatch" in msg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matching_dtype_passes_without_record(dtype):
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    x = torch.ones(1, 2, 2, 3, dtype=dtype)
    rec = PrecisionRecord("n")
    y = conform(x, between(PrecisionContext(intermediate=name)), "error", "cpu", record=rec, input_name="image")
    assert y is x or torch.equal(y, x)
    assert rec.casts == []


def test_non_float_input_is_refused():
    with pytest.raises(PrecisionError, match="float tensor is needed"):
        conform(torch.zeros(2, 2, dtype=torch.uint8), between(), "cast", "cpu", record=PrecisionRecord("n"),
                input_name="mask")
