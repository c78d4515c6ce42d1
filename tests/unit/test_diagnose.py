"""explain_dtype_errors: real torch dtype errors from small modules become PrecisionErrors that say where and why."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from precision_safe.nodes.precision.diagnose import (DtypeMismatchError, ShapeMismatchError, explain_dtype_errors,
                                                     explain_shape_errors, parse_dtype_error, parse_shape_error)
from precision_safe.nodes.precision.errors import PrecisionError

HALVES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Wrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


class Block(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.block = nn.Sequential(nn.Identity(), Wrap(layer))

    def forward(self, x):
        return self.block(x)


def nest(layer):
    """nn.Sequential(Block) so the failing layer's path is net.0.block.1.layer."""
    return nn.Sequential(Block(layer))


class Attn(nn.Module):
    """SDPA with learned key/value tokens: in half, the fp32 query meets half keys."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.randn(1, 3, 8))
        self.v = nn.Parameter(torch.randn(1, 3, 8))

    def forward(self, x):
        return F.scaled_dot_product_attention(x, self.k, self.v)


class Cache(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(4, 8))

    def forward(self, x):
        self.cache[torch.tensor([0, 1])] = x
        return self.cache


class Ema(nn.Module):
    def __init__(self):
        super().__init__()
        self.ema = nn.Parameter(torch.zeros(2, 8))

    def forward(self, x):
        return torch.lerp(self.ema, x, 0.5)


class Bmm(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 8, 8))

    def forward(self, x):
        return torch.bmm(x, self.w)


class ToNumpy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x).detach().numpy()


class Raiser(nn.Module):
    """Raises a CUDA-only wording verbatim (these don't occur on CPU), with half weights like the real op."""

    def __init__(self, message):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.message = message

    def forward(self, x):
        raise RuntimeError(self.message.format(h={torch.float16: "Half", torch.bfloat16: "BFloat16"}[self.weight.dtype]))


img = (2, 4, 6, 6)
# name -> (layer factory, input shape, model in half and input fp32? (else: model fp32, input half), torch wording)
CASES = {
    "linear": (lambda: nn.Linear(8, 8), (2, 8), True, "mat1 and mat2 must have the same dtype"),
    "linear_nobias": (lambda: nn.Linear(8, 8, bias=False), (2, 8), True, "expected m1 and m2 to have the same"),
    "conv_bias": (lambda: nn.Conv2d(4, 4, 3), img, True, "and bias type"),
    # batch 1 takes the native conv path, batch 2 the MKLDNN one: two wordings for the same mistake
    "conv_nobias": (lambda: nn.Conv2d(4, 4, 3, bias=False), (1, 4, 6, 6), True, "expected scalar type Float but"),
    "conv_nobias_mkldnn": (lambda: nn.Conv2d(4, 4, 3, bias=False), img, True,
                           "Input type (torch.FloatTensor) and weight type ("),
    "conv_nobias_half_input": (lambda: nn.Conv2d(4, 4, 3, bias=False), img, False, None),
    "conv_half_input": (lambda: nn.Conv2d(4, 4, 3), img, False, "Input type (c10::"),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), img, True, "mixed dtype (CPU)"),
    "layernorm": (lambda: nn.LayerNorm(6), img, True, "mixed dtype (CPU)"),
    "sdpa": (Attn, (1, 2, 8), True, "Expected query, key, and value to have the same dtype"),
    "index_put": (Cache, (2, 8), True, "Index put requires the source and destination dtypes match"),
    "lerp": (Ema, (2, 8), True, "for `end` but got dtype float"),
    "bmm": (Bmm, (1, 2, 8), True, "expected scalar type Float but found"),
    "cuda_self_mat2": (lambda: Raiser("self and mat2 must have the same dtype, but got Float and {h}"), (2, 8), True,
                       "self and mat2"),
    "cuda_mat1_mat2": (lambda: Raiser("expected mat1 and mat2 to have the same dtype, but got: float != c10::{h}"),
                       (2, 8), True, "expected mat1 and mat2"),
    "cuda_weight_type": (lambda: Raiser("Input type (torch.cuda.FloatTensor) and weight type (torch.cuda.{h}Tensor) "
                                        "should be the same"), img, True, "weight type"),
}


def raise_and_keep(fn, seen):
    try:
        return fn()
    except Exception as exc:
        seen["exc"] = exc
        raise


def snapshot(model):
    return {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}


def assert_unmodified(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, (dtype, value) in before.items():
        assert after[k].dtype == dtype and torch.equal(after[k], value), k
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_forward_pre_hooks


@pytest.mark.parametrize("half", sorted(HALVES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_dtype_error_is_explained(case, half):
    factory, shape, model_half, wording = CASES[case]
    dt = HALVES[half]
    model = nest(factory())
    if model_half:
        model.to(dt)
        x, other = torch.randn(shape), torch.zeros(1, dtype=torch.int64)
        x_dtype, w_dtype = "fp32", half
    else:
        x, other = torch.randn(shape, dtype=dt), torch.zeros(1)
        x_dtype, w_dtype = half, "fp32"
    before, seen = snapshot(model), {}
    with pytest.raises(PrecisionError) as info:
        with explain_dtype_errors(node="SafeVAEDecode", modules={"net": model}, inputs={"latent": x, "mask": other},
                                  roles={"net": "vae"}):
            raise_and_keep(lambda: model(x), seen)
    err, msg = info.value, str(info.value)
    if wording:
        assert wording in str(seen["exc"])
    assert isinstance(err, DtypeMismatchError) and err.__cause__ is seen["exc"]
    assert msg.startswith("[SafeVAEDecode]")
    assert "net.0.block.1.layer (" in msg and err.module_path == "net.0.block.1.layer"
    assert f"weights {w_dtype}" in msg and err.weight_dtype == w_dtype
    assert f"its input is {x_dtype}" in msg and err.input_dtype == x_dtype
    assert "graph input 'latent'" in msg and "'mask'" not in msg and err.graph_inputs == ["latent"]
    assert "Fix: set Precision Policy's 'vae' to" in msg and "on_mismatch to 'cast'" in msg and err.role == "vae"
    assert_unmodified(model, before)


def test_numpy_bf16_is_explained():
    model = nest(ToNumpy()).to(torch.bfloat16)
    x, seen = torch.randn(2, 8, dtype=torch.bfloat16), {}
    with pytest.raises(PrecisionError) as info:
        with explain_dtype_errors(node="SAMRefine", modules={"sam": model}, inputs={"image": x}):
            raise_and_keep(lambda: model(x), seen)
    msg = str(info.value)
    assert isinstance(seen["exc"], TypeError) and info.value.__cause__ is seen["exc"]
    assert "[SAMRefine]" in msg and "sam.0.block.1.layer" in msg and "bf16 tensor reached numpy" in msg
    assert "graph input 'image'" in msg and "'sam' to fp16 or fp32." in msg  # key 'sam' is itself a role


class Decoder(nn.Module):
    """ComfyUI-VAE-shaped nesting: decoder.up.1.block.0.conv1."""

    def __init__(self):
        super().__init__()
        res = nn.Module()
        res.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        level = nn.Module()
        level.block = nn.ModuleList([res])
        self.up = nn.ModuleList([nn.Identity(), level])

    def forward(self, z):
        return self.up[1].block[0].conv1(z * 2)  # a new tensor: the graph input is matched by dtype only


def test_vae_path_identity_and_ambiguity():
    vae = nn.Module()
    vae.decoder = Decoder().half()
    z = torch.randn(1, 4, 4, 4)
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors(node="SafeVAEDecode", modules={"vae": vae, "unet": nn.Linear(2, 2)},
                                  inputs={"samples": {"samples": z}, "noise": torch.zeros(1)}, roles={"vae": "vae"}):
            vae.decoder(z)
    msg = str(info.value)
    assert "vae.decoder.up.1.block.0.conv1 (Conv2d, weights fp16)" in msg
    assert "likely one of graph inputs 'samples.samples', 'noise' (all fp32)" in msg
    assert "'vae' to fp32" in msg and "converted to fp16" in msg

    conv = nn.Conv2d(4, 4, 3).half()  # the graph input itself reaches the conv: certain, not "likely"
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors(node="N", modules={"vae": conv}, inputs={"samples": z, "noise": torch.zeros(1)}):
            conv(z)
    assert "that is graph input 'samples'" in str(info.value) and "likely" not in str(info.value)


def test_tensor_made_inside_model_says_cast_cannot_help():
    class Internal(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8).half()

        def forward(self, ids):
            return self.lin(torch.ones(ids.shape[0], 8))  # fp32 tensor made here, not a graph input

    model = Internal()
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors(node="N", modules={"text_encoder": model}, inputs={"ids": torch.zeros(2).long()}):
            model(torch.zeros(2).long())
    msg = str(info.value)
    assert "text_encoder.lin (Linear, weights fp16)" in msg and "so the model made it" in msg
    assert "'text_encoder' to fp32" in msg and "on_mismatch" not in msg


def test_unlocated_error_falls_back():
    model = nn.Linear(4, 4).half()
    x = torch.randn(2, 4)
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors(node="N", modules={"unet": model}, inputs={"x": x}):
            F.linear(x, model.weight)  # called outside any module frame
    msg = str(info.value)
    assert "'unet' (submodule unknown)" in msg and "its input is fp32" in msg and "'unet' to fp32" in msg
    assert info.value.module_path is None

    vae = nn.Linear(4, 4).half()  # two models: the one whose weight dtype torch named is the likely one
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors(node="N", modules={"unet": nn.Linear(4, 4), "vae": vae}, inputs={"x": x}):
            F.linear(x, vae.weight)
    assert "likely 'vae' (submodule unknown)" in str(info.value) and "'vae' to fp32" in str(info.value)


def test_non_dtype_errors_pass_through_as_same_object():
    model = nn.Linear(8, 8)
    for raiser in (lambda: model(torch.randn(2, 5)),  # a RuntimeError about shapes, not dtypes
                   lambda: (_ for _ in ()).throw(ValueError("nope"))):
        seen = {}
        with pytest.raises(Exception) as info:
            with explain_dtype_errors(node="N", modules={"unet": model}):
                raise_and_keep(raiser, seen)
        assert info.value is seen["exc"] and not isinstance(info.value, PrecisionError)


def test_nested_contexts_do_not_rewrap():
    model = nn.Linear(8, 8).half()
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors(node="Outer", modules={"unet": model}):
            with explain_dtype_errors(node="Inner", modules={"unet": model}):
                model(torch.randn(2, 8))
    assert str(info.value).startswith("[Inner]") and not isinstance(info.value.__cause__, PrecisionError)


def test_nothing_raised_has_no_effect():
    model = nest(nn.Conv2d(4, 4, 3))
    x = torch.randn(img)
    before = snapshot(model)
    with explain_dtype_errors(node="N", modules={"net": model}, inputs={"x": x}) as ctx:
        y = model(x)
    assert isinstance(ctx, explain_dtype_errors) and torch.equal(y, model(x))
    assert_unmodified(model, before)


@pytest.mark.parametrize("text, inp, own", [
    ("Input type (CPUBFloat16Type) and weight type (torch.FloatTensor) should be the same", "bf16", "fp32"),
    ("Input type (torch.cuda.FloatTensor) and weight type (CUDABFloat16Type) should be the same", "fp32", "bf16"),
    ("expected scalar type Half but found Float", "fp16", "fp32"),
    ("mixed dtype (CPU): expect parameter to have scalar type of Float", "fp32", None),
])
def test_parse_dtype_spellings(text, inp, own):
    assert parse_dtype_error(RuntimeError(text)) == {"inp": inp, "own": own, "numpy": False}
    assert parse_dtype_error(ValueError(text)) is None


# -- the real culprit: a patch the model calls, and fp8 weights (issue 10) ----------------------------------------

class ProjectionPatch:
    """A model patch as other packs write them: a plain callable holding its own (half) projection."""

    def __init__(self, dtype):
        self.proj = nn.Linear(4, 4).to(dtype)

    def __call__(self, n, extra_options):
        return n + self.proj(n)


class PatchedBlock(nn.Module):
    """A UNet block calling its patches between its own layers, as ComfyUI's transformer block does."""

    def __init__(self, patches):
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.patches = patches

    def forward(self, x):
        n = self.attn(x)
        for p in self.patches:
            n = p(n, {})
        return n


@pytest.mark.parametrize("name", list(HALVES))
def test_an_error_inside_a_patch_names_the_patch_and_its_dtype_not_the_block_that_called_it(name):
    patch = ProjectionPatch(HALVES[name])
    net = PatchedBlock([patch])
    x = torch.rand(2, 4)
    with pytest.raises(DtypeMismatchError) as info:
        with explain_dtype_errors("KSampler #3", modules={"patch attn2_output_patch[0]": patch, "unet": net},
                                  inputs={"latent": x}, roles={"patch attn2_output_patch[0]": "unet"}):
            net(x)
    err = info.value
    assert err.module_path == "patch attn2_output_patch[0]" and err.weight_dtype == name and err.input_dtype == "fp32"
    assert f"patch attn2_output_patch[0] (ProjectionPatch, weights {name})" in str(err)


def test_float8_promotion_is_recognised_with_fp8_on_the_weights_side():
    shift = torch.zeros(4).to(torch.float8_e4m3fn)
    try:
        torch.rand(4) + shift
    except RuntimeError as exc:
        found = parse_dtype_error(exc)
    else:
        pytest.skip("this torch promotes float8")
    assert found == {"inp": "fp32", "own": "float8_e4m3fn", "numpy": False}
    swapped = RuntimeError("Promotion for Float8 Types is not supported, attempted to promote Float8_e5m2 and Half")
    assert parse_dtype_error(swapped) == {"inp": "fp16", "own": "float8_e5m2", "numpy": False}


# -- shape mismatches between model families -------------------------------------------------------------------------

FAMILIES = {(4, 2): ["SD15", "SDXL"], (16, 2): ["SD3", "Flux"], (16, 3): ["Wan21"]}
SHAPE_CASES = {  # name: (layer, input, axis, what the layer takes, what the input has)
    "conv channels": (lambda: nn.Conv2d(4, 8, 3, padding=1), (1, 16, 4, 4), "channels", 4, 16),
    "groupnorm weight": (lambda: nn.GroupNorm(2, 4), (1, 16, 4, 4), "channels", 4, 16),
    "groupnorm groups": (lambda: nn.GroupNorm(32, 128), (1, 16, 4, 4), "channels", 128, 16),
    "linear features": (lambda: nn.Linear(768, 8), (1, 77, 2048), "features", 768, 2048),
    "layernorm features": (lambda: nn.LayerNorm(768), (1, 77, 2048), "features", 768, 2048),
    "conv dims": (lambda: nn.Conv2d(16, 8, 3, padding=1), (1, 16, 2, 4, 4), "dims", 4, 5),
}


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_shape_error_is_explained(case):
    factory, shape, axis, want, got = SHAPE_CASES[case]
    model = nest(factory())
    x, seen = torch.randn(shape), {}
    with pytest.raises(ShapeMismatchError) as info:
        with explain_shape_errors(node="VAEDecode #5", modules={"vae": model}, inputs={"samples": x},
                                  families=FAMILIES):
            raise_and_keep(lambda: model(x), seen)
    err, msg = info.value, str(info.value)
    assert parse_shape_error(seen["exc"])["axis"] == axis and err.__cause__ is seen["exc"]
    assert msg.startswith("[VAEDecode #5]")
    assert "vae.0.block.1.layer (" in msg and err.module_path == "vae.0.block.1.layer"
    assert f"it takes {want} {axis} but its input has {got}" in msg and (err.want, err.got) == (want, got)
    assert f"that is graph input 'samples' {list(shape)}" in msg and err.graph_inputs == ["samples"]
    assert "Fix:" in msg


def test_channel_mismatch_names_the_latent_families_and_the_fix_per_role():
    conv = nn.Conv2d(4, 4, 1)
    z = torch.randn(1, 16, 4, 4)
    with pytest.raises(ShapeMismatchError) as info:
        with explain_shape_errors(node="N", modules={"vae": conv}, inputs={"samples": z}, families=FAMILIES):
            conv(z)
    msg = str(info.value)
    assert "A 16-channel latent is what SD3, Flux models make; this VAE is for 4-channel latents (SD15, SDXL)" in msg
    assert "decode with the VAE that belongs to the model that made the latent (a 16-channel VAE)" in msg

    unet = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1))
    with pytest.raises(ShapeMismatchError) as info:
        with explain_shape_errors(node="N", modules={"unet": unet}, inputs={"latent_image": z},
                                  families=FAMILIES):
            unet(z * 2)  # a new tensor: the graph input is matched by its channels only
    msg = str(info.value)
    assert "likely graph input 'latent_image' [1, 16, 4, 4] (the only input with 16 channels)" in msg
    assert "this MODEL is for 4-channel latents" in msg and "give this MODEL a 4-channel latent" in msg

    video = torch.randn(1, 16, 2, 4, 4)  # families are per number of spatial dimensions: no 4-channel video family
    conv3d = nn.Conv3d(4, 4, 1)
    with pytest.raises(ShapeMismatchError) as info:
        with explain_shape_errors(node="N", modules={"vae": conv3d}, inputs={"samples": video}, families=FAMILIES):
            conv3d(video)
    assert "latent is what" not in str(info.value) and "an input with 4 channels" in str(info.value)


def test_conditioning_width_mismatch_says_which_text_encoder():
    attn = nn.Linear(768, 320)
    cond = torch.randn(1, 77, 2048)
    with pytest.raises(ShapeMismatchError) as info:
        inputs = {"positive": cond, "latent_image": torch.randn(1, 4, 8, 8)}
        with explain_shape_errors(node="KSampler #3", modules={"unet": attn}, inputs=inputs):
            attn(cond)
    msg = str(info.value)
    assert "it takes 768 features but its input has 2048; that is graph input 'positive' [1, 77, 2048]" in msg
    assert "text encoder (CLIP) that belongs to this model" in msg


def test_other_errors_pass_through_the_shape_explainer():
    model = nn.Linear(8, 8).half()
    for raiser in (lambda: model(torch.randn(2, 8)),  # a dtype error: explain_dtype_errors' business
                   lambda: torch.zeros(2) + torch.zeros(3),  # broadcasting: no layer input to explain
                   lambda: (_ for _ in ()).throw(ValueError("nope"))):
        seen = {}
        with pytest.raises(Exception) as info:
            with explain_shape_errors(node="N", modules={"unet": model}):
                raise_and_keep(raiser, seen)
        assert info.value is seen["exc"] and not isinstance(info.value, PrecisionError)
    with explain_shape_errors(node="N", modules={"unet": model}) as ctx:  # nothing raised: no effect
        pass
    assert isinstance(ctx, explain_shape_errors)
