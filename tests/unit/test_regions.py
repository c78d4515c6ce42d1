"""Pure region logic of the Detailer: selection, crops, Impact's sizing rule, masks, pasting, batching."""
import pytest
import torch

from precision_safe.nodes.regions import regions as R
from precision_safe.nodes.regions.options import CropOptions, DetectionOptions, SamOptions


def cand(box, score=1.0, label="x", **kw):
    return R.Candidate(0, tuple(float(v) for v in box), score, label, **kw)


BOXES = [cand((0, 0, 10, 10), 0.9, "face"), cand((50, 0, 90, 40), 0.6, "hand"), cand((20, 20, 22, 22), 0.95),
         cand((5, 60, 45, 100), 0.3, "face")]


def idx(selected):
    return [BOXES.index(c) for c in selected]


def test_select_filters_sorts_and_keeps_top_k():
    opts = DetectionOptions(threshold=0.5, drop_size=4)
    assert idx(R.select(BOXES, (100, 100), opts, detected=True)) == [0, 1]  # 2: too small, 3: low score
    assert idx(R.select(BOXES, (100, 100), DetectionOptions(drop_size=4, sort_by="area"), detected=True)) == [1, 0]
    lr = DetectionOptions(threshold=0.0, drop_size=4, sort_by="left-right")
    assert idx(R.select(BOXES, (100, 100), lr, detected=True)) == [0, 3, 1]
    tb = DetectionOptions(threshold=0.0, drop_size=4, sort_by="top-bottom", top_k=2)
    assert idx(R.select(BOXES, (100, 100), tb, detected=True)) == [0, 1]
    band = DetectionOptions(drop_size=4, sort_by="area", min_area_ratio=0.05)
    assert idx(R.select(BOXES, (100, 100), band, detected=True)) == [1]


def test_label_filter_and_order_apply_to_given_regions_but_detector_filters_do_not():
    faces = DetectionOptions(labels=("face",), sort_by="as given")
    assert idx(R.select(BOXES, (100, 100), faces, detected=True)) == [0]  # the low-score face is dropped
    assert idx(R.select(BOXES, (100, 100), faces, detected=False)) == [0, 3]  # SEGS: no threshold / drop_size
    assert idx(R.select(BOXES, (100, 100), DetectionOptions(top_k=2), detected=False)) == [2, 0]  # small one kept


def test_crop_grows_around_the_centre_and_shifts_inside_at_the_border():
    assert R.crop_box((40, 40, 60, 60), (100, 100), 2.0) == (30, 30, 70, 70)
    assert R.crop_box((0, 0, 20, 20), (100, 100), 3.0) == (0, 0, 60, 60)  # same size as in the middle
    assert R.crop_box((85, 90, 100, 100), (100, 100), 2.0) == (70, 80, 100, 100)
    assert R.crop_box((10, 10, 90, 90), (100, 100), 3.0) == (0, 0, 100, 100)  # larger than the image: all of it


@pytest.mark.parametrize("crop,box,opts,expected", [
    ((40, 40), (20, 20), CropOptions(guide_size=64), (128, 128)),  # the box's shorter side reaches guide_size
    ((40, 40), (20, 30), CropOptions(guide_size=64), (128, 128)),  # shorter side (20) -> x3.2
    ((40, 40), (20, 20), CropOptions(guide_size=64, max_size=96), (96, 96)),  # capped by max_size
    ((37, 50), (20, 30), CropOptions(guide_size=64), (120, 160)),  # aspect kept, multiples of 8
    ((40, 80), (20, 20), CropOptions(guide_size=160, guide_size_for="crop_region"), (160, 320)),
    ((200, 200), (100, 100), CropOptions(guide_size=64), (200, 200)),  # large, force_inpaint: at its own size
    ((200, 200), (100, 100), CropOptions(guide_size=64, force_inpaint=False), None),  # left alone
    ((200, 200), (30, 30), CropOptions(guide_size=64, guide_size_for="crop_region", force_inpaint=False), None),
    ((200, 200), (30, 30), CropOptions(guide_size=64, force_inpaint=False), (432, 432)),
])
def test_sample_size_follows_impacts_rule(crop, box, opts, expected):
    t = R.sample_size(crop, box, opts)
    assert t == expected
    assert t is None or (t[0] % 8 == 0 and t[1] % 8 == 0)


def test_dilate_and_feather_keep_outside_zero():
    m = torch.zeros(20, 20)
    m[5:15, 5:15] = 1
    assert R.dilate(m, 2).sum() == 14 * 14 and R.dilate(m, -2).sum() == 6 * 6
    f = R.feather(m, 2)
    assert f[m == 0].abs().sum() == 0  # nothing leaks outside the mask
    assert f[10, 10] == 1 and 0 < f[5, 10] < 1


def test_soft_mask_fades_across_the_edge_and_zero_radius_is_identity():
    m = torch.zeros(1, 40, 40)
    m[:, 10:30, 10:30] = 1
    assert torch.equal(R.soft_mask(m, 0), m)
    s = R.soft_mask(m, 6)
    assert s.shape == m.shape and s[0, 20, 20] > 0.99 and s[0, 0, 0] < 0.01
    assert 0.3 < s[0, 20, 10] < 0.7 and 0 < s[0, 20, 8] < s[0, 20, 12] < 1  # a ramp across the edge


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


def test_paste_into_writes_only_the_masked_crop_in_place():
    image = torch.rand(32, 32, 3)
    before = image.clone()
    patch = torch.ones(10, 10, 3)
    mask = torch.zeros(10, 10)
    mask[2:8, 2:8] = 0.5
    R.paste_into(image, patch, (5, 5, 15, 15), mask)
    changed = (image != before).any(-1)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[7:13, 7:13] = True
    assert torch.equal(changed, expected)
    torch.testing.assert_close(image[7:13, 7:13], (before[7:13, 7:13] + 1) / 2)
    torch.testing.assert_close(R.paste(before, patch, (5, 5, 15, 15), mask), image)


def test_group_by_size_batches_same_sizes_in_order_and_respects_max_batch():
    def reg(i, t):
        return R.Region(0, i, "x", 1.0, (0, 0, 1, 1), (0, 0, 1, 1), torch.ones(1, 1), t)
    rs = [reg(0, (64, 64)), reg(1, (32, 32)), reg(2, (64, 64)), reg(3, (64, 64))]
    assert [[r.index for r in g] for g in R.group_by_size(rs)] == [[0, 2, 3], [1]]
    assert [[r.index for r in g] for g in R.group_by_size(rs, max_batch=2)] == [[0, 2], [3], [1]]


def test_resize_is_float32_and_clamped():
    x = torch.rand(2, 10, 10, 3).to(torch.bfloat16)
    y = R.resize(x, (24, 16))
    assert y.shape == (2, 24, 16, 3) and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1


def test_extent_is_the_box_around_what_a_mask_can_change():
    m = torch.zeros(6, 9)
    assert R.extent(m) is None
    m[2, 3], m[4, 7] = 0.2, 1.0
    assert R.extent(m) == (3, 2, 8, 5)


def test_a_window_mask_read_over_any_crop():
    c = cand((5, 4, 8, 7), mask=torch.arange(1.0, 10.0).reshape(3, 3), mask_at=(5, 4))
    assert torch.equal(c.mask_in((0, 0, 7, 6)), torch.tensor([[0.0] * 7] * 4 + [[0] * 5 + [1, 2], [0] * 5 + [4, 5]]))
    assert torch.equal(c.mask_in((6, 5, 10, 9)), torch.tensor([[5.0, 6, 0, 0], [8, 9, 0, 0], [0] * 4, [0] * 4]))
    assert c.mask_in((0, 0, 3, 3)).sum() == 0 and c.mask_in((0, 0, 3, 3)).shape == (3, 3)


def test_sam_prompts_box_centre_and_mask_points():
    mask = torch.zeros(100, 100)
    mask[20:40, 30:50] = 1
    c = cand((30, 20, 50, 40), mask=mask)
    box, points = R.sam_prompt(c, SamOptions(hint="box", bbox_expansion=5), (100, 100))
    assert box == (25, 15, 55, 45) and points == []
    assert R.sam_prompt(c, SamOptions(hint="box", bbox_expansion=50), (100, 100))[0] == (0, 0, 100, 90)
    assert R.sam_prompt(c, SamOptions(hint="center-1"), (100, 100))[1] == [(40.0, 30.0, 1)]
    _, pts = R.sam_prompt(c, SamOptions(hint="mask-area"), (100, 100))
    assert 8 <= len(pts) <= 64 and all(mask[int(y), int(x)] > 0.5 and lab == 1 for x, y, lab in pts)
    seg = R.Candidate(0, (30, 20, 50, 40), 1.0, "x", crop=(10, 10, 70, 60), crop_mask=mask[10:60, 10:70])
    _, seg_pts = R.sam_prompt(seg, SamOptions(hint="mask-area"), (100, 100))
    assert seg_pts and all(mask[int(y), int(x)] > 0.5 for x, y, _ in seg_pts)  # crop offsets applied
    assert R.sam_prompt(cand((30, 20, 50, 40)), SamOptions(hint="mask-area"), (100, 100))[1] == [(40.0, 30.0, 1)]


def test_options_refuse_what_cannot_work():
    with pytest.raises(ValueError, match="sort_by"):
        DetectionOptions(sort_by="size")
    with pytest.raises(ValueError, match="min_area_ratio"):
        DetectionOptions(min_area_ratio=0.5, max_area_ratio=0.1)
    with pytest.raises(ValueError, match="hint"):
        SamOptions(hint="points")
