"""Pure region logic of the Detailer."""
import pytest
import torch

from precision_safe.nodes.detailer import regions as R


def test_select_filters_sorts_and_keeps_top_k():
    boxes = torch.tensor([[0, 0, 10, 10], [50, 0, 90, 40], [20, 20, 22, 22], [5, 60, 45, 100]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.6, 0.95, 0.3])
    kw = dict(threshold=0.5, drop_size=4, min_area_ratio=0.0, max_area_ratio=1.0, top_k=0)
    assert R.select(boxes, scores, (100, 100), sort_by="confidence", **kw) == [0, 1]  # 2: too small, 3: low score
    assert R.select(boxes, scores, (100, 100), sort_by="area", **kw) == [1, 0]
    assert R.select(boxes, scores, (100, 100), sort_by="left-right", **{**kw, "threshold": 0.0}) == [0, 3, 1]
    assert R.select(boxes, scores, (100, 100), sort_by="top-bottom", **{**kw, "threshold": 0.0, "top_k": 2}) == [0, 1]
    assert R.select(boxes, scores, (100, 100), sort_by="area", **{**kw, "min_area_ratio": 0.05}) == [1]


def test_crop_grows_around_the_centre_and_clamps_at_the_border():
    assert R.crop_box((40, 40, 60, 60), (100, 100), 2.0) == (30, 30, 70, 70)
    assert R.crop_box((0, 0, 20, 20), (100, 100), 3.0) == (0, 0, 40, 40)
    assert R.crop_box((90, 95, 100, 100), (100, 100), 1.0) == (90, 95, 100, 100)


@pytest.mark.parametrize("crop,box,guide,maxs,expected", [
    ((40, 40), (20, 20), 64, 1024, (128, 128)),  # small box upscaled so it reaches the guide size
    ((40, 40), (20, 20), 64, 96, (96, 96)),  # capped by max_size
    ((37, 50), (20, 30), 64, 1024, (80, 104)),  # aspect kept, multiples of 8
])
def test_target_size(crop, box, guide, maxs, expected):
    t = R.target_size(crop, box, guide, maxs)
    assert t == expected and t[0] % 8 == 0 and t[1] % 8 == 0


def test_dilate_and_feather_keep_outside_zero():
    m = torch.zeros(20, 20)
    m[5:15, 5:15] = 1
    assert R.dilate(m, 2).sum() == 14 * 14 and R.dilate(m, -2).sum() == 6 * 6
    f = R.feather(m, 2)
    assert f[m == 0].abs().sum() == 0  # nothing leaks outside the mask
    assert f[10, 10] == 1 and 0 < f[5, 10] < 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_paste_keeps_outside_pixels_bit_exact_even_with_a_nonfinite_patch(dtype):
    image = torch.rand(32, 32, 3).to(dtype)
    patch = torch.full((10, 10, 3), float("nan"))
    mask = torch.zeros(10, 10)
    mask[2:8, 2:8] = 1
    out = R.paste(image, patch, (5, 5, 15, 15), mask)
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[7:13, 7:13] = False
    assert torch.equal(out[keep], image[keep])
    assert out.dtype == dtype and image.isfinite().all()  # input untouched


def test_group_by_size_batches_same_sizes_in_order_and_respects_max_batch():
    def reg(i, t):
        return R.Region(0, i, "x", 1.0, (0, 0, 1, 1), (0, 0, 1, 1), t, torch.ones(1, 1))
    rs = [reg(0, (64, 64)), reg(1, (32, 32)), reg(2, (64, 64)), reg(3, (64, 64))]
    assert [[r.index for r in g] for g in R.group_by_size(rs)] == [[0, 2, 3], [1]]
    assert [[r.index for r in g] for g in R.group_by_size(rs, max_batch=2)] == [[0, 2], [3], [1]]


def test_resize_is_float32_and_clamped():
    x = torch.rand(2, 10, 10, 3).to(torch.bfloat16)
    y = R.resize(x, (24, 16))
    assert y.shape == (2, 24, 16, 3) and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
