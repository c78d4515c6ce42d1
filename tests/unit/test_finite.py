import pytest
import torch

from precision_safe.nodes.precision.finite import nonfinite_counts, nonfinite_items
from precision_safe.nodes.precision.stats import format_stats, tensor_stats

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_finds_exactly_the_bad_items(dtype, bad_value):
    x = torch.rand(4, 3, 8, 8).to(dtype)
    x[1, 0, 2, 3] = bad_value
    x[3, 2, 7, 7] = bad_value
    before = x.clone()
    assert nonfinite_items(x) == [1, 3]
    assert torch.equal(x.isnan(), before.isnan()) and torch.equal(x.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_gives_nothing(dtype):
    assert nonfinite_items(torch.randn(3, 4, 4, 4).to(dtype)) == []


def test_huge_but_finite_values_are_not_flagged():
    x = torch.full((2, 3, 4, 4), 3e38)  # the float32 sum overflows, the values do not
    assert nonfinite_items(x) == []


def test_empty_and_integer_tensors():
    assert nonfinite_items(torch.zeros(0, 3, 4, 4)) == []
    assert nonfinite_items(torch.zeros(2, 3, dtype=torch.uint8)) == []


def test_stats_report_nan_inf_and_range_of_finite_values():
    x = torch.tensor([[0.0, 1.0, float("nan"), float("inf")]], dtype=torch.float16)
    info = tensor_stats(x)
    assert (info["nan"], info["inf"], info["min"], info["max"], info["dtype"]) == (1, 1, 0.0, 1.0, "fp16")
    assert nonfinite_counts(x) == (1, 1)
    assert "NaN 1 Inf 1 !" in format_stats("image", info)


def test_channels_last_views_as_comfy_decodes_them():
    x = torch.rand(3, 3, 16, 16)
    x[2, 1, 5, 5] = float("nan")
    view = x.movedim(1, -1)  # what VAE.decode hands over: NHWC, not contiguous
    assert not view.is_contiguous()
    assert nonfinite_items(view) == [2]
    assert nonfinite_items(torch.tensor([1.0, float("inf"), 2.0])) == [1]  # a batch of scalars
