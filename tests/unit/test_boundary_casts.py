"""Casts at a module's or a patch's boundary (nodes/host/boundary_copies.py, patches.py) and what weights a callable holds
(nodes/precision/reach.py): the network sees its own dtype, the caller gets back its own, nothing given changes."""
import copy

import pytest
import torch

from precision_safe.nodes.precision.boundary import BoundaryForward, PatchAtBoundary, cast_tree
from precision_safe.nodes.precision.reach import is_storage_only, weights_dtype

HALVES = [torch.float16, torch.bfloat16]


def test_weights_dtype_finds_weights_held_by_objects_partials_and_closures():
    import functools
    lin = torch.nn.Linear(2, 2).to(torch.bfloat16)

    class Holder:
        def __init__(self):
            self.kwargs = {"ipadapter": lin}

        def __call__(self, n):
            return n

    def make():
        return lambda n: lin(n)

    assert weights_dtype(lin) == torch.bfloat16
    assert weights_dtype(Holder()) == torch.bfloat16
    assert weights_dtype(functools.partial(lambda m, n: m(n), lin)) == torch.bfloat16
    assert weights_dtype(make()) == torch.bfloat16
    assert weights_dtype(lambda n: n) is None
    assert is_storage_only(torch.float8_e4m3fn) and not is_storage_only(torch.float16)


@pytest.mark.parametrize("dtype", HALVES)
def test_boundary_forward_casts_inputs_to_the_weights_and_outputs_back(dtype):
    net = torch.nn.Linear(3, 3).to(dtype)
    x = torch.rand(2, 3)
    with pytest.raises(RuntimeError):
        net(x)  # stock: fp32 input, half weights
    wrapped = copy.copy(net)
    wrapped.forward = BoundaryForward(net.forward, dtype)
    y = wrapped(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, net(x.to(dtype)).float())
    assert "forward" not in net.__dict__  # the module given keeps its own forward


def test_cast_tree_goes_through_containers_and_leaves_the_rest():
    out = cast_tree({"a": [torch.ones(1), (torch.ones(1, dtype=torch.int64), "x")]}, torch.float16)
    assert out["a"][0].dtype == torch.float16 and out["a"][1][0].dtype == torch.int64 and out["a"][1][1] == "x"


def test_a_patch_at_its_boundary_follows_device_moves_but_keeps_its_dtype():
    lin = torch.nn.Linear(3, 3).to(torch.bfloat16)
    p = PatchAtBoundary(lin, torch.bfloat16)
    assert p.to(torch.float8_e4m3fn) is p  # ComfyUI casts patches to the model's storage dtype on load: not this one
    moved = p.to("cpu")
    assert isinstance(moved, PatchAtBoundary) and moved.dtype == torch.bfloat16
    y = p(torch.rand(2, 3))
    assert y.dtype == torch.float32
    clone = copy.deepcopy(p)
    assert clone.patch is not lin and clone.dtype == torch.bfloat16
