"""Quantized weights through the real executor: GGUF (Q8_0 / Q4_0, loaded as ComfyUI-GGUF lays them out), fp8 stored
(core UNETLoader's weight_dtype), fp8 scaled (`scaled_fp8` / `scale_weight`) and `_quantization_metadata` mixed
precision (ComfyUI's QuantizedTensor), each made on the spot from the tiny UNet. Dtype Inspect tells each format and
the compute dtype; a policy never copies quantized weights, sets the compute dtype the way ComfyUI's ops read it and
says what it did; sampling stays within quantization error of the unquantized UNet."""
import collections
import os

import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder

import quantized_models as qm
from graphs import policy, txt2img


@pytest.fixture(scope="module")
def files(comfy):
    import folder_paths
    folder = next(d for d in folder_paths.get_folder_paths("diffusion_models") if os.path.exists(os.path.join(d, qm.UNET)))
    qm.ensure(folder)
    return folder


def _loader(g, kind):
    if kind in qm.GGUF:
        return g.node("PSTest_UnetLoaderGGUF", unet_name=qm.GGUF[kind])
    if kind == "fp8":
        return g.node("UNETLoader", unet_name=qm.UNET, weight_dtype="fp8_e4m3fn")
    return g.node("UNETLoader", unet_name={"fp8 scaled": qm.FP8_SCALED, "mixed fp8": qm.MIXED}[kind],
                  weight_dtype="default")


def _gguf_truth(path):
    """group -> GGUF type -> (tensors, values), read from the file itself with the gguf package."""
    import gguf
    out = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
    for t in gguf.GGUFReader(path).tensors:
        n = 1
        for s in t.shape:
            n *= int(s)
        entry = out[t.name.split(".")[0]][f"GGUF {t.tensor_type.name}"]
        entry[0] += 1
        entry[1] += n
    return out


def _values(v: int) -> str:
    return f"{v / 1e6:.2f} M" if v >= 10_000 else str(v)


def test_gguf_inspect_tells_each_group_its_formats_and_the_compute_dtype(comfy, files):
    g = GraphBuilder()
    unet = _loader(g, "Q8_0")
    insp = g.node("PrecisionSafeDtypeInspect", value=unet.out(0), strict=True)  # nothing disagrees: strict passes
    r = comfy.run(g.finalize())
    assert r.success, r.error
    text = r.ui(insp.id)["text"][0]
    truth = _gguf_truth(os.path.join(files, qm.GGUF["Q8_0"]))
    assert "storage fp32" not in text and "compute fp32" in text
    rows = {row["label"]: row for row in r.ui(insp.id)["precision_safe"][0]["inspect"]}
    assert set(truth) == {label.removeprefix("model.") for label in rows if label != "model"}
    for group, types in truth.items():
        for name, (n, values) in types.items():
            assert f"{name} ({n} tensor{'s' if n != 1 else ''}, {_values(values)} values)" in rows[f"model.{group}"]["formats"]
    totals = collections.Counter()
    for types in truth.values():
        for name, (n, _) in types.items():
            totals[name] += n
    assert totals["GGUF Q8_0"] == 47 and rows["model"]["storage"].startswith("GGUF ")
    assert set(rows["model"]["storage"].split(" + ")) == set(totals)
    assert "agrees with the context" in text


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "fp8", "fp8 scaled", "mixed fp8"])
def test_policy_keeps_quantized_weights_and_computes_at_the_role_dtype(comfy, files, kind):
    g = GraphBuilder()
    unet = _loader(g, kind)
    ref_unet = g.node("UNETLoader", unet_name=qm.UNET, weight_dtype="default")
    p = policy(g, unet_dtype="bf16", on_mismatch="error")
    p.set_input("model", unet.out(0))
    insp = g.node("PrecisionSafeDtypeInspect", value=p.out(1), strict=True)
    _, quant = txt2img(g, size=16, model=p.out(1))
    _, ref = txt2img(g, size=16, model=ref_unet.out(0))
    for sampler in (quant, ref):
        g.node("PrecisionSafeDtypeInspect", value=sampler.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    src, clone = comfy.output(unet.id), comfy.output(p.id, 1)
    assert clone.model is src.model  # no copy of any weight
    before = {n: (type(t), t.dtype) for n, t in src.model.diffusion_model.named_parameters()}
    assert {n: (type(t), t.dtype) for n, t in clone.model.diffusion_model.named_parameters()} == before
    assert clone.object_patches["manual_cast_dtype"] == torch.bfloat16 and clone.force_cast_weights
    assert "manual_cast_dtype" not in src.object_patches
    note = r.ui(p.id)["precision_safe"][0]["notes"][0]
    fmt = {"Q8_0": "GGUF Q8_0", "Q4_0": "GGUF Q4_0", "fp8": "float8_e4m3fn", "fp8 scaled": "float8_e4m3fn scaled",
           "mixed fp8": "TensorCoreFP8Layout (float8_e4m3fn)"}[kind]
    n = {"fp8": 168, "fp8 scaled": 70}.get(kind, 47)  # scaled fp8: ComfyUI stores the Linear biases fp8 too
    assert note.startswith(f"MODEL clone: {fmt} ({n} tensors, "), note
    assert "kept quantized, computed at bf16 (was fp32)" in note and "no weight copied (0 MiB)" in note
    assert "converted once" not in note
    assert "compute bf16" in r.ui(insp.id)["text"][0] and "agrees with the context" in r.ui(insp.id)["text"][0]
    a, b = comfy.output(quant.id)["samples"], comfy.output(ref.id)["samples"]
    assert torch.isfinite(a).all()
    err = ((a - b).norm() / b.norm()).item()
    assert err < 0.1, f"{kind}: latent off the unquantized UNet's by {err:.3f}"


# -- errors quantized weights give, explained with a fix that works ---------------------------------------------------

def _tied(g, unet_name):
    unet = g.node("PSTest_UnetLoaderGGUF", unet_name=unet_name)
    tied = g.node("PSTest_TieWeight", model=unet.out(0))
    guard = g.node("PrecisionSafeGuard", model=tied.out(0))
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    g.node("PrecisionSafeDtypeInspect", value=sampler.out(0))
    return sampler


def test_gguf_packed_storage_reaching_a_plain_matmul_is_explained_and_the_fix_works(comfy, files):
    from testing_nodes.gguf_style import TieWeight
    weight = TieWeight.WEIGHT.removeprefix("diffusion_model.")
    g = GraphBuilder()
    sampler = _tied(g, qm.GGUF["Q8_0"])
    r = comfy.run(g.finalize())
    assert not r.success and r.error["node_id"] == sampler.id  # on core KSampler
    msg = r.error["exception_message"]
    assert "mat1 and mat2 shapes cannot be multiplied" in msg  # torch's own text, quoted
    assert "GGUF Q8_0 packed storage reached a plain matmul in patch" in msg
    assert f"weight 'unet.{weight}' holds [320, 320] values as [320, 340] bytes (torch.uint8)" in msg
    assert f"keep '{weight}' unquantized (F16) when making the GGUF file" in msg
    # the fix: the same file made again with that weight kept F16
    from safetensors.torch import load_file
    name = "ps_tiny_sd15_unet_q8_0_keep.gguf"
    types = qm.write_gguf(os.path.join(files, name), load_file(os.path.join(files, qm.UNET)), "Q8_0", keep={weight})
    assert types[weight] == "F16" and list(types.values()).count("Q8_0") == 46
    g = GraphBuilder()
    sampler = _tied(g, name)
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert torch.isfinite(comfy.output(sampler.id)["samples"]).all()
