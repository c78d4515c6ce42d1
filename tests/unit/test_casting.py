"""Cast copies of modules: the source is never touched; shared tensors stay shared; selection and originals work."""
import torch

from precision_safe.nodes.precision.casting import cast_module_copy


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight  # tied
        self.register_buffer("sigmas", torch.linspace(0, 1, 5))
        self.register_buffer("steps", torch.arange(5))
        self.dtype = torch.float32  # a module that caches its dtype, as ComfyUI's UNet does
        self.owner = object()  # a back-reference that must not be copied


def test_copy_casts_selected_float_tensors_and_leaves_the_source_alone():
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    copy = cast_module_copy(net, torch.bfloat16, select=lambda name, t: not name.startswith("sigmas"),
                            keep=[net.owner])
    assert copy.a.weight.dtype == torch.bfloat16 and copy.a.bias.dtype == torch.bfloat16
    assert copy.b.weight is copy.a.weight  # tied weights stay tied, cast once
    assert copy.sigmas.dtype == torch.float32 and copy.steps.dtype == torch.int64  # not selected / not float
    assert copy.dtype == torch.bfloat16 and copy.owner is net.owner
    assert isinstance(copy.a.weight, torch.nn.Parameter) and not copy.a.weight.requires_grad
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == before[k].dtype
    assert copy.a.weight.data_ptr() != net.a.weight.data_ptr()
    assert copy.sigmas.data_ptr() != net.sigmas.data_ptr()  # copied, never shared with the source


def test_originals_replace_weights_patched_in_place():
    net = Net()
    original = net.a.bias.detach().clone()
    with torch.no_grad():
        net.a.bias += 100  # as a loaded LoRA clone leaves it, with the original in its backup
    copy = cast_module_copy(net, torch.float16, originals={"a.bias": original})
    torch.testing.assert_close(copy.a.bias.float(), original, atol=1e-3, rtol=0)


def test_a_module_without_cast_tensors_keeps_its_dtype_attribute():
    net = Net()
    copy = cast_module_copy(net, torch.float16, select=lambda name, t: False)
    assert copy.dtype == torch.float32 and copy.a.weight.dtype == torch.float32
