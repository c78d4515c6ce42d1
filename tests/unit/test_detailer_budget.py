"""The Detailer's memory plan on plain numbers (nodes/regions/budget.py): how many regions of a size are sampled
together, and the largest size one region fits at."""
from precision_safe.nodes.regions.budget import MIN_SIDE, Need, fitting_batch, largest_fitting_size

MB = 2 ** 20


def need(n, hw):
    """A sampler growing with batch x area (as ComfyUI's memory_required does), an encode per item."""
    h, w = hw
    return Need(held=n * h * w * 12, encode=h * w * 100, sample=n * h * w * 400)


def test_the_whole_batch_when_it_fits_else_fewer_else_none():
    one = need(1, (512, 512)).total
    assert fitting_batch(4, (512, 512), need, need(4, (512, 512)).total) == 4
    assert fitting_batch(4, (512, 512), need, need(3, (512, 512)).total - 1) == 2
    assert fitting_batch(4, (512, 512), need, one) == 1
    assert fitting_batch(4, (512, 512), need, one - 1) == 0


def test_the_total_is_what_is_held_plus_the_larger_stage():
    n = Need(held=1 * MB, encode=5 * MB, sample=3 * MB)
    assert n.total == 6 * MB
    assert "sampler ~0.0 GiB, VAE encode ~0.0 GiB" in n.text()


def test_largest_fitting_size_keeps_the_shape_in_multiples_of_8():
    free = need(1, (1024, 512)).total / 3
    h, w = largest_fitting_size((4096, 2048), need, free)
    assert h % 8 == 0 and w % 8 == 0 and abs(h / w - 2) < 0.05
    assert need(1, (h, w)).total <= free
    assert need(1, (h + 64, w + 32)).total > free  # about the largest (steps of 10 %)
    assert largest_fitting_size((4096, 4096), need, need(1, (MIN_SIDE - 8, MIN_SIDE - 8)).total) is None
