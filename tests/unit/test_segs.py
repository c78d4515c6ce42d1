"""SEGS interop: Impact-style SEGS read as regions; the pack's SEGS read by code that reads SEGS as Impact does."""
import numpy as np
import pytest
import torch

from precision_safe.nodes.regions import prompts as P
from precision_safe.nodes.regions import segs as S
from precision_safe.nodes.regions.regions import Region
from testing_nodes import impact_style as impact


def image(h=96, w=128, batch=1):
    torch.manual_seed(0)
    return torch.rand(batch, h, w, 3)


def test_impact_detector_segs_become_candidates_with_their_crops_masks_labels_and_scores():
    img = image()
    segs = impact.detector_segs(img, [(10.5, 20.0, 40.2, 50.7), (70, 10, 100, 40)], ["face", "hand"], [0.91, 0.55])
    notes = []
    cands = S.to_candidates(segs, (96, 128), 1, notes)
    assert notes == [] and [c.label for c in cands] == ["face", "hand"]
    assert cands[0].score == pytest.approx(0.91) and cands[0].box == pytest.approx((10.5, 20.0, 40.2, 50.7))
    for c, seg in zip(cands, segs[1]):
        assert c.crop == tuple(seg.crop_region)
        assert torch.equal(c.crop_mask, torch.from_numpy(seg.cropped_mask))
        assert c.crop_mask.dtype == torch.float32 and c.mask is None


def test_mask_to_segs_style_and_batched_tensor_masks():
    mask = np.zeros((96, 128), np.float32)
    mask[30:50, 60:90] = 1
    segs = impact.mask_segs(mask)
    (c,) = S.to_candidates(segs, (96, 128), 1, [])
    assert c.label == "A" and c.score == 1.0 and c.crop_mask.sum() == 20 * 30
    # one mask per image, as a tensor (Impact's batched MaskToSEGS): applies per image
    x1, y1, x2, y2 = segs[1][0].crop_region
    per_image = torch.zeros(2, y2 - y1, x2 - x1)
    per_image[1, 5:10, 5:10] = 1
    seg = segs[1][0]._replace(cropped_mask=per_image)
    a, b = S.to_candidates((segs[0], [seg]), (96, 128), 2, [])
    assert (a.image_index, b.image_index) == (0, 1) and a.crop_mask.sum() == 0 and b.crop_mask.sum() == 25


def test_segs_for_another_image_size_are_scaled():
    segs = impact.detector_segs(image(48, 64), [(10, 10, 30, 30)], ["face"], [0.9])
    notes = []
    (c,) = S.to_candidates(segs, (96, 128), 1, notes)
    assert notes == ["SEGS made for 64x48 scaled to the 128x96 image"]
    x1, y1, x2, y2 = segs[1][0].crop_region
    assert c.crop == (2 * x1, 2 * y1, 2 * x2, 2 * y2) and c.box == (20, 20, 60, 60)
    assert tuple(c.crop_mask.shape) == (2 * (y2 - y1), 2 * (x2 - x1))


@pytest.mark.parametrize("bad", [None, "segs", ((96, 128),), ((96, 128), [impact.SEG(None, np.ones((3, 3)), 1.0,
                                                                                      [0, 0, 3], (0, 0, 3, 3), "x")])])
def test_what_is_not_segs_is_a_clear_error(bad):
    with pytest.raises(S.SegsError):
        S.to_candidates(bad, (96, 128), 1, [])


def test_mask_components_keep_soft_values():
    m = torch.zeros(64, 64)
    m[5:15, 5:25] = 0.5
    m[40:60, 30:50] = 1.0
    a, b = S.mask_candidates(m, 1)
    assert a.box == (5, 5, 25, 15) and b.box == (30, 40, 50, 60)
    assert a.mask.max() == 0.5 and a.mask.sum() == 100 and b.mask.sum() == 400
    assert a.mask.shape == (10, 20) and a.mask_at == (5, 5) and b.mask_at == (30, 40)  # each over its own box
    assert torch.equal(a.mask_in((0, 0, 64, 64)), torch.where(torch.arange(64)[:, None] < 30, m, torch.zeros(())))
    hook = torch.zeros(64, 64)  # one component whose box holds another's: each keeps only its own pixels
    hook[10:50, 10:12], hook[48:50, 10:50], hook[30:35, 30:35] = 1, 1, 1
    outer, inner = S.mask_candidates(hook, 1)
    assert outer.mask.sum() == 40 * 2 + 2 * 38 and inner.mask.sum() == 25 and inner.box == (30, 30, 35, 35)
    assert outer.mask_in((30, 30, 35, 35)).sum() == 0
    assert S.mask_candidates(torch.zeros(8, 8), 1) == []


def test_mask_components_are_scipys_pixel_by_pixel_components():
    """Cells first, then pixels inside each cell component's box: the same components, boxes, values and order as
    labelling every pixel (random masks of every density; components a pixel apart share cells)."""
    from scipy import ndimage

    g = torch.Generator().manual_seed(0)
    for trial in range(120):
        h, w = (int(v) for v in torch.randint(1, 60, (2,), generator=g))
        m = (torch.rand(h, w, generator=g) < float(torch.rand(1, generator=g)) * 0.7) * torch.rand(h, w, generator=g)
        labelled, _ = ndimage.label((m > 0).numpy())
        got = S.mask_candidates(m, 1)
        boxes = ndimage.find_objects(labelled)
        assert len(got) == len(boxes), trial
        for k, (c, (ys, xs)) in enumerate(zip(got, boxes), start=1):
            assert c.box == (xs.start, ys.start, xs.stop, ys.stop), trial
            own = torch.from_numpy(labelled == k)
            assert torch.equal(c.mask_in((0, 0, w, h)), torch.where(own, m, torch.zeros(()))), trial


def _regions():
    m = torch.zeros(30, 40)
    m[5:25, 10:30] = 1
    return [Region(0, 0, "face", 0.9, (40.0, 25.0, 60.0, 45.0), (30, 20, 70, 50), m, (64, 64)),
            Region(0, 1, "hand", 0.7, (80.0, 50.0, 100.0, 70.0), (70, 40, 110, 70), m.clone(), None)]


def test_our_segs_read_the_way_impact_reads_them():
    img = image()
    regions = _regions()
    new_crop = torch.ones(30, 40, 3) * 0.25
    segs = S.from_regions(regions, (96, 128), 1, {0: new_crop})
    (h, w), items = segs
    assert (h, w) == (96, 128) and all(type(v) is int for s in items for v in s.crop_region)
    assert items[0].bbox.dtype == np.float32 and items[0].label == "face" and items[0].confidence == pytest.approx(0.9)
    assert items[1].cropped_image is None  # left alone, as Impact's detailer reports such a SEG
    combined = impact.combined_mask(segs)
    assert combined[25:45, 40:60].min() == 1 and combined.sum() == 2 * 400
    assert torch.equal(impact.crop_like_a_detailer(img, items[0]), img[:, 20:50, 30:70])
    pasted = impact.paste(img, segs)
    inside = torch.zeros(96, 128, dtype=torch.bool)
    inside[25:45, 40:60] = True
    assert torch.allclose(pasted[0][inside], torch.tensor(0.25)) and torch.equal(pasted[0][~inside], img[0][~inside])


def test_our_segs_for_an_image_batch_paste_per_image():
    img = image(batch=2)
    r = _regions()[0]
    r1 = Region(1, 1, r.label, r.score, r.box, r.crop, r.mask, r.target)
    segs = S.from_regions([r, r1], (96, 128), 2, {0: torch.zeros(30, 40, 3), 1: torch.ones(30, 40, 3)})
    assert segs[1][0].cropped_mask.shape == (2, 30, 40) and segs[1][0].cropped_image.shape == (2, 30, 40, 3)
    pasted = impact.paste(img, segs)
    assert pasted[0, 30, 45].tolist() == [0, 0, 0] and pasted[1, 30, 45].tolist() == [1, 1, 1]


def test_region_prompts_by_order_label_index_and_skip():
    p = P.parse("first\n\n[face] a face\n[#3] third\n[hand] [skip]\n[SKIP]\n[cat:dog:0.5] not a key")
    assert p.text_for(0, "x") == "first"
    assert p.text_for(1, "x") == ""  # an empty line keeps the default
    assert p.text_for(2, "face") == "a face" and p.text_for(0, "face") == "a face"  # label beats order
    assert p.text_for(3, "face") == "third"  # index beats label
    assert p.skips(5, "hand") and p.skips(2, "x") and not p.skips(2, "face")
    assert p.text_for(3, "x") == "third" and p.text_for(4, "x") == ""
    assert P.parse("").text_for(0, "x") == "" and P.parse("\n\n").text_for(1, "x") == ""
    assert P.parse("a\n[cat:dog:0.5] b").in_order == ("a", "[cat:dog:0.5] b")
