"""Fault corpus: realistic dtype/precision faults through ComfyUI's real executor, each run the stock way and the
pack's way. Every test name reads `<scenario>__stock_<what core does>__pack_<what the pack does>`; where core has a
path for the scenario, the test runs it and asserts what it does (nothing here is claimed from memory).

scenario                           | stock ComfyUI 0.3.75                  | this pack
-----------------------------------|---------------------------------------|-----------------------------------------
bf16 IMAGE into an image saver     | TypeError "Got unsupported ScalarType | saver casts, records it; Inspect reports
                                   | BFloat16"                             |
NaN IMAGE into an image saver      | black image, numpy warning only       | refused on the saver, naming the node
                                   |                                       | upstream; save_nonfinite: saved, recorded
fp16 IMAGE into core's saver       | saves fine (numpy has float16)        | nothing to do; the pack's saver records it
intermediate bf16 (policy)         | core saver: "Got unsupported ScalarType| warned on the policy (table) and on the
                                   | BFloat16"                             | node whose IMAGE output is bf16
fp16 + bf16 IMAGEs via ImageBatch  | silently promoted to fp32             | Inspect shows it; saver needs no cast
fp16 IMAGE into the Detailer       | (no core detailer)                    | cast to fp32, recorded
fp32 LATENT into fp16 VAE (policy) | VAEDecode casts, nothing recorded     | decodes at fp16 (same image), recorded
bf16 LATENT, on_mismatch err/cast  | VAEDecode casts silently              | error on the node / cast recorded
NaN LATENT from the sampler        | VAEDecode: NaN image (black)          | error on SafeVAEDecode, blames sampler
overflowing fp16 VAE, on_nonfinite | VAEDecode: NaN item (black)           | retry: item redone at bf16; error: stops
  retry / error / keep             |                                       | on the node; keep: warning
SAM at fp16 / bf16 (sam_dtype)     | segment-anything: "expected m1 and m2 | half encoder, fp32 prompt/decoder: works
                                   | to have the same dtype"               |
bf16 detector fed fp32             | ultralytics: "Input type ... and      | input cast to bf16: works, recorded
                                   | weight type ... should be the same"   |
half-weight VAE (declares fp32)    | raw RuntimeError "Input type (float)  | PrecisionGuard: explained error on
  into core VAEDecode              | and bias type (c10::BFloat16)"        | VAEDecode (submodule, dtypes, fix)
half-weight MODEL into KSampler    | raw RuntimeError "mat1 and mat2 ..."  | PrecisionGuard: explained, on KSampler
optional MODEL/VAE input of Policy | (no core node hands an empty input on) | error on the Policy/Guard naming its
  or Guard left empty, output used |                                       | empty input; a pack node fed None names it
16-channel latent into an SD VAE / | raw RuntimeError "expected input[1,   | PrecisionGuard: channels explained with
  an SD1.5 KSampler                | 16, 2, 2] to have 4 channels"         | the latent families, on the core node
half-weight VAE into SafeVAEDecode | (the raw error above)                 | explained; policy vae bf16 decodes
half-weight VAE into the Detailer  | (no core detailer)                    | explained, naming "vae encode"
fp8 UNet (UNETLoader fp8_e4m3fn)   | runs, fp32 compute, nothing shows it  | Inspect: fp8/fp32; policy bf16 works
CPU vs GPU tensors                 | not testable: the host runs --cpu     | (skipped)
fp16 IMAGE into core upscale model | "Input type (c10::Half) and bias ..."  | enforce: image cast, boundary-cast copy
half model patch (IPAdapter)       | "mat1 and mat2 ... Float and BFloat16"| Guard names the patch; fixes tested
fp8 UNet + fp8 patch               | "Promotion for Float8 Types ..."      | recognised; enforce: patch at fp32
half-weight ControlNet             | "mat1 and mat2 ..." on KSampler       | Guard names the ControlNet; fixes tested
bf16 IMAGE into core Preview/Save  | numpy TypeError                       | enforce: cast before the saver
LoRA into fp16-stored UNet         | NaN latent (merged into fp16)         | merged at bf16 / at the compute dtype

docs/fault-corpus.md holds the same table with the test names.
"""
import copy
import os

import numpy as np
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from PIL import Image

from graphs import detailer, overflow_batch, overflow_vae, policy, txt2img
from comfy_client import CHECKPOINT, ROOT


# core's own savers warn on NaN pixels (numpy's cast warning is all stock ComfyUI says); asserted where it matters
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")


@pytest.fixture(scope="module", autouse=True)
def _remove_saved_files():
    yield
    import folder_paths
    folder = os.path.join(folder_paths.get_output_directory(), "precision_safe_tests")
    for f in os.listdir(folder) if os.path.isdir(folder) else []:
        if f.startswith("corpus_"):
            os.remove(os.path.join(folder, f))


# -- helpers --------------------------------------------------------------------------------------------------------

def _ok(comfy, g):
    r = comfy.run(g.finalize())
    assert r.success, ((r.error or {}).get("exception_message", r.error), "".join((r.error or {}).get("traceback", [])[-6:]))
    return r


def _fails_on(comfy, g, node, exception_type=None):
    r = comfy.run(g.finalize())
    assert not r.success, "expected the run to fail"
    assert r.error["node_id"] == node.id, (r.error["node_id"], r.error["node_type"], r.error["exception_message"])
    if exception_type:
        assert r.error["exception_type"].endswith(exception_type), r.error["exception_type"]
    return r.error["exception_message"]


def _pack_error(comfy, g, node, label, *parts):
    """The run stops on `node` with the pack's explained error: its label, the parts, and a fix."""
    r = comfy.run(g.finalize())
    assert not r.success, "expected the run to fail"
    assert r.error["node_id"] == node.id, (r.error["node_id"], r.error["node_type"], r.error["exception_message"])
    assert r.error["exception_type"].endswith(("PrecisionError", "DtypeMismatchError", "ShapeMismatchError")), \
        r.error["exception_type"]
    msg = r.error["exception_message"]
    assert f"[{label} #{node.id}" in msg and "Fix:" in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def _image(g, size=8, batch=1, color=0x336699):
    return g.node("EmptyImage", width=size, height=size, batch_size=batch, color=color)


@pytest.fixture(scope="module")
def shape_image():
    """A 128x128 input image with two shapes the tiny detector finds."""
    import folder_paths
    from shapes import make_scenes
    scene = make_scenes(7, 1, n_min=2, n_max=2)[0]
    name = "ps_corpus_shapes.png"
    Image.fromarray((scene.image * 255).round().astype(np.uint8)).save(
        os.path.join(folder_paths.get_input_directory(), name))
    return name


def _small_detailer(g, image, ckpt, **over):
    kw = dict(guide_size=16, max_size=24, steps=1, crop_factor=1.2, sam=False)
    kw.update(over)
    return detailer(g, image, ckpt, **kw)


# -- IMAGE dtypes ---------------------------------------------------------------------------------------------------

def test_bf16_image_to_saver__stock_numpy_typeerror__pack_casts_and_records(comfy):
    g = GraphBuilder()
    half = g.node("PSTest_CastImage", image=_image(g).out(0), dtype="bf16")
    core = g.node("PreviewImage", images=half.out(0))
    msg = _fails_on(comfy, g, core, "TypeError")
    assert msg.startswith("Got unsupported ScalarType BFloat16")  # stock: a raw numpy error on the saver

    g = GraphBuilder()
    half = g.node("PSTest_CastImage", image=_image(g).out(0), dtype="bf16")
    insp = g.node("PrecisionSafeDtypeInspect", value=half.out(0))
    save = g.node("PrecisionSafeSaveImage", images=half.out(0), filename_prefix="precision_safe_tests/corpus_bf16")
    r = _ok(comfy, g)
    assert r.ui(save.id)["precision_safe"][0]["casts"] == ["images: bf16 -> fp32"]
    assert r.ui(insp.id)["precision_safe"][0]["inspect"][0]["dtype"] == "bf16"
    assert len(r.ui(save.id)["images"]) == 1


def test_nan_image_to_saver__stock_saves_black_silently__pack_refuses_naming_the_node_upstream(comfy):
    g = GraphBuilder()
    bad = g.node("PSTest_PoisonImage", image=_image(g, batch=2).out(0), items="0")
    core = g.node("PreviewImage", images=bad.out(0))
    with pytest.warns(RuntimeWarning, match="invalid value encountered in cast"):
        r = _ok(comfy, g)  # stock: numpy's warning in the log is the only sign
    assert "precision_safe" not in r.ui(core.id)  # stock: saved, nothing said on the node

    g = GraphBuilder()
    bad = g.node("PSTest_PoisonImage", image=_image(g, batch=2).out(0), items="0")
    save = g.node("PrecisionSafeSaveImage", images=bad.out(0), filename_prefix="precision_safe_tests/corpus_nan")
    _pack_error(comfy, g, save, "Save Image (with precision record)", "input 'images'", "items [0]",
                f"from PSTest_PoisonImage #{bad.id}", "save_nonfinite")


def test_nan_image_to_saver_with_save_nonfinite__stock_saves_black_silently__pack_saves_and_records_it(comfy):
    g = GraphBuilder()
    bad = g.node("PSTest_PoisonImage", image=_image(g, batch=2).out(0), items="0")
    save = g.node("PrecisionSafeSaveImage", images=bad.out(0), filename_prefix="precision_safe_tests/corpus_nan",
                  save_nonfinite=True)
    r = _ok(comfy, g)
    assert len(r.ui(save.id)["images"]) == 2
    assert r.ui(save.id)["precision_safe"][0]["warnings"] == [
        f"items [0] hold NaN/Inf (from PSTest_PoisonImage #{bad.id}): saved anyway (save_nonfinite), NaN pixels "
        "are black"]


def test_fp16_image_to_core_saver__stock_saves_fine__pack_casts_nothing(comfy):
    g = GraphBuilder()
    half = g.node("PSTest_CastImage", image=_image(g).out(0), dtype="fp16")
    core = g.node("PreviewImage", images=half.out(0))
    save = g.node("PrecisionSafeSaveImage", images=half.out(0), filename_prefix="precision_safe_tests/corpus_fp16")
    r = _ok(comfy, g)  # stock: numpy has float16, core's saver converts it like fp32
    assert len(r.ui(core.id)["images"]) == 1
    assert r.ui(save.id)["precision_safe"][0]["casts"] == ["images: fp16 -> fp32"]


def test_intermediate_bf16__stock_core_saver_typeerror__pack_warns_on_the_policy_and_the_decoder(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    # not the policies below: the cache would reuse it
    p = policy(g, intermediate_dtype="bf16", on_nonfinite="keep", enforce_downstream=False)
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=ckpt.out(2), context=p.out(0))
    core = g.node("PreviewImage", images=safe.out(0))
    msg = _fails_on(comfy, g, core, "TypeError")  # enforcement off: core's saver cannot convert the bf16 IMAGE
    assert msg.startswith("Got unsupported ScalarType BFloat16")

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, intermediate_dtype="bf16", on_nonfinite="error")  # enforce_downstream at its default (on)
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=ckpt.out(2), context=p.out(0))
    core = g.node("PreviewImage", images=safe.out(0))
    r = _ok(comfy, g)  # the preview gets the IMAGE at the dtype core nodes take
    assert len(r.ui(core.id)["images"]) == 1

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, intermediate_dtype="bf16")
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=ckpt.out(2), context=p.out(0))
    save = g.node("PrecisionSafeSaveImage", images=safe.out(0), filename_prefix="precision_safe_tests/corpus_bf16")
    r = _ok(comfy, g)
    assert comfy.output(safe.id).dtype == torch.bfloat16
    policy_text = r.ui(p.id)["text"][0]
    assert "intermediate: bf16" in policy_text and "WARNING intermediate bf16: core Save Image / Preview Image" \
        in policy_text, policy_text
    warnings = r.ui(safe.id)["precision_safe"][0]["warnings"]
    assert any(w.startswith("IMAGE output is bf16") and "core Save Image / Preview Image" in w for w in warnings)
    assert r.ui(save.id)["precision_safe"][0]["casts"] == ["images: bf16 -> fp32"]
    tips = comfy.node_class("PrecisionSafePolicy").INPUT_TYPES()["required"]["intermediate_dtype"][1]["tooltip"]
    assert "bf16 breaks core Save Image / Preview Image" in tips


def test_mixed_dtype_batch__stock_imagebatch_promotes_to_fp32__pack_shows_it_and_needs_no_cast(comfy):
    g = GraphBuilder()
    a = g.node("PSTest_CastImage", image=_image(g, color=0x112233).out(0), dtype="fp16")
    b = g.node("PSTest_CastImage", image=_image(g, size=16, color=0x445566).out(0), dtype="bf16")
    batch = g.node("ImageBatch", image1=a.out(0), image2=b.out(0))  # b is also resized to a's size
    insp = g.node("PrecisionSafeDtypeInspect", value=batch.out(0))
    save = g.node("PrecisionSafeSaveImage", images=batch.out(0), filename_prefix="precision_safe_tests/corpus_mix")
    r = _ok(comfy, g)
    assert comfy.output(batch.id).dtype == torch.float32  # stock: fp16 + bf16 -> fp32, silently
    info = r.ui(insp.id)["precision_safe"][0]
    assert info["inspect"][0]["dtype"] == "fp32" and info["inspect"][0]["shape"][0] == 2 and info["flags"] == []
    assert r.ui(save.id)["precision_safe"][0]["casts"] == []


def test_fp16_image_into_detailer__stock_no_core_detailer__pack_casts_and_records(comfy, shape_image):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=shape_image)
    half = g.node("PSTest_CastImage", image=load.out(0), dtype="fp16")
    d = _small_detailer(g, half.out(0), ckpt)
    g.node("PreviewImage", images=d.out(0))
    r = _ok(comfy, g)
    rec = r.ui(d.id)["precision_safe"][0]
    assert rec["casts"] == ["image: fp16 -> fp32"]
    out, mask, src = comfy.output(d.id, 0), comfy.output(d.id, 1), comfy.output(half.id)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()  # the context's intermediate dtype
    assert mask.sum() > 0 and torch.equal(out[0][mask[0] == 0], src[0][mask[0] == 0])


# -- LATENT dtypes and non-finite latents ---------------------------------------------------------------------------

def test_fp32_latent_into_fp16_vae__stock_vaedecode_casts_unrecorded__pack_records_fp16(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, vae_dtype="fp16")
    p.set_input("vae", ckpt.out(2))
    core = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=p.out(3))
    for n in (core, safe):
        g.node("PreviewImage", images=n.out(0))
    r = _ok(comfy, g)
    rec = r.ui(safe.id)["precision_safe"][0]
    assert rec["ran"]["vae"] == "fp16 · cpu" and rec["casts"] == [] and rec["retries"] == []
    assert "precision_safe" not in r.ui(core.id)
    assert comfy.output(sampler.id)["samples"].dtype == torch.float32
    a, b = comfy.output(core.id), comfy.output(safe.id)
    assert torch.isfinite(b).all() and torch.equal(a, b)  # same fp16 decode; the pack says it happened


@pytest.mark.parametrize("mode", ["error", "cast"])
def test_bf16_latent__stock_vaedecode_casts_silently__pack_errors_or_records_cast(comfy, mode):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    half = g.node("PSTest_CastLatent", samples=sampler.out(0), dtype="bf16")
    core = g.node("VAEDecode", samples=half.out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=core.out(0))
    _ok(comfy, g)  # stock: no complaint

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    half = g.node("PSTest_CastLatent", samples=sampler.out(0), dtype="bf16")
    p = policy(g, on_mismatch=mode)
    safe = g.node("PrecisionSafeVAEDecode", samples=half.out(0), vae=ckpt.out(2), context=p.out(0))
    g.node("PreviewImage", images=safe.out(0))
    if mode == "error":
        _pack_error(comfy, g, safe, "Safe VAE Decode", "input 'samples'", "got bf16", "expects fp32",
                    "on_mismatch to 'cast'")
    else:
        r = _ok(comfy, g)
        assert r.ui(safe.id)["precision_safe"][0]["casts"] == ["samples: bf16 -> fp32"]


def test_nan_latent_from_sampler__stock_nan_image__pack_errors_blaming_the_sampler(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    poisoned = g.node("PSTest_PoisonLatent", samples=sampler.out(0), items="0")
    core = g.node("VAEDecode", samples=poisoned.out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=core.out(0))
    _ok(comfy, g)
    assert not torch.isfinite(comfy.output(core.id)).all()  # stock: NaN pixels, saved as black

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    poisoned = g.node("PSTest_PoisonLatent", samples=sampler.out(0), items="0")
    safe = g.node("PrecisionSafeVAEDecode", samples=poisoned.out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=safe.out(0))
    _pack_error(comfy, g, safe, "Safe VAE Decode", "already non-finite", "items [0]", "sampler upstream")


# -- overflowing VAE at fp16 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["retry", "error", "keep"])
def test_overflow_vae_fp16__stock_black_image__pack_retries_errors_or_warns(comfy, mode):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    batch = overflow_batch(g, sampler)
    p = policy(g, vae_dtype="fp16", on_nonfinite=mode)
    p.set_input("vae", overflow_vae(g).out(0))
    safe = g.node("PrecisionSafeVAEDecode", samples=batch.out(0), vae=p.out(3))
    g.node("PreviewImage", images=safe.out(0))
    if mode == "error":
        _pack_error(comfy, g, safe, "Safe VAE Decode", "vae output at fp16 is non-finite", "items [1]",
                    "'vae' to bf16 or fp32")
        return
    core = g.node("VAEDecode", samples=batch.out(0), vae=p.out(3))
    g.node("PreviewImage", images=core.out(0))
    r = _ok(comfy, g)
    stock = comfy.output(core.id)
    assert torch.isfinite(stock[0]).all() and not torch.isfinite(stock[1]).all()  # stock: item 1 black
    rec, out = r.ui(safe.id)["precision_safe"][0], comfy.output(safe.id)
    if mode == "retry":
        assert rec["retries"] == ["items [1] fp16 -> bf16: finite"] and torch.isfinite(out).all()
    else:
        assert rec["retries"] == [] and not torch.isfinite(out[1]).all()
        assert rec["warnings"] and "non-finite for batch items [1] at fp16" in rec["warnings"][0]


# -- detector and SAM in half precision -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_sam():
    from precision_safe.nodes.detect.sam import load_sam
    return load_sam(os.path.join(ROOT, "tests", "assets", "models", "sams", "tiny_sam_shapes.pth"))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_sam_in_detailer__stock_segment_anything_matmul_error__pack_half_encoder_fp32_decoder(
        comfy, shape_image, tiny_sam, dtype):
    from segment_anything import SamPredictor
    half = copy.deepcopy(tiny_sam).to({"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
    predictor = SamPredictor(half)
    predictor.set_image(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(RuntimeError, match="expected m1 and m2 to have the same dtype"):
        predictor.predict(box=np.array([8, 8, 40, 40]))  # stock: segment-anything as shipped, in half

    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    p = policy(g, sam_dtype=dtype)
    d = _small_detailer(g, g.node("LoadImage", image=shape_image).out(0), ckpt, sam=True, context=p.out(0))
    g.node("PreviewImage", images=d.out(0))
    r = _ok(comfy, g)
    rec = r.ui(d.id)["precision_safe"][0]
    assert rec["ran"]["sam"] == f"{dtype} encoder, fp32 prompt/decoder · cpu"
    assert comfy.output(d.id, 1).sum() > 0 and torch.isfinite(comfy.output(d.id, 0)).all()


def test_bf16_detector_fed_fp32__stock_ultralytics_input_type_error__pack_casts_input(comfy, shape_image):
    from precision_safe.nodes.detect.safe_load import load_yolo
    yolo = load_yolo(os.path.join(ROOT, "tests", "assets", "models", "ultralytics", "bbox", "tiny_shapes_bbox.pt"))
    net = copy.deepcopy(yolo.model).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"Input type \(torch.FloatTensor\) and weight type"):
        net(torch.rand(1, 3, 128, 128))  # stock: a bf16 ultralytics model fed an fp32 image

    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    p = policy(g, detector_dtype="bf16")
    d = _small_detailer(g, g.node("LoadImage", image=shape_image).out(0), ckpt, context=p.out(0))
    g.node("PreviewImage", images=d.out(0))
    r = _ok(comfy, g)
    assert r.ui(d.id)["precision_safe"][0]["ran"]["detector"] == "bf16 · cpu"
    assert comfy.output(d.id, 1).sum() > 0  # the bf16 detector found the shapes


# -- weights that disagree with the dtype the object declares (third-party casts) -----------------------------------

def _half_vae(g, ckpt):
    return g.node("PSTest_HalfWeightsVAE", vae=ckpt.out(2), dtype="bf16")


def test_half_weight_vae_in_core_vaedecode__stock_raw_runtimeerror__pack_guard_explains_on_vaedecode(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=_half_vae(g, ckpt).out(0))
    g.node("PreviewImage", images=dec.out(0))
    msg = _fails_on(comfy, g, dec, "RuntimeError")
    assert msg.startswith("Input type (float) and bias type (c10::BFloat16) should be the same")  # stock

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    guard = g.node("PrecisionSafeGuard", vae=_half_vae(g, ckpt).out(0))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=guard.out(1))
    g.node("PreviewImage", images=dec.out(0))
    _pack_error(comfy, g, dec, "VAEDecode", "vae.post_quant_conv (Conv2d, weights bf16)", "its input is fp32",
                "graph input 'samples'", "declares fp32", "vae_dtype bf16")


def test_half_weight_vae_into_safe_decode__stock_raw_runtimeerror__pack_explains_and_policy_bf16_decodes(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=_half_vae(g, ckpt).out(0))
    g.node("PreviewImage", images=safe.out(0))
    _pack_error(comfy, g, safe, "Safe VAE Decode", "vae.post_quant_conv", "weights bf16", "its input is fp32")

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, vae_dtype="bf16")
    p.set_input("vae", _half_vae(g, ckpt).out(0))
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=p.out(3))
    g.node("PreviewImage", images=safe.out(0))
    r = _ok(comfy, g)
    assert r.ui(safe.id)["precision_safe"][0]["ran"]["vae"] == "bf16 · cpu"
    assert torch.isfinite(comfy.output(safe.id)).all()


def test_half_weight_vae_into_detailer__stock_no_core_detailer__pack_explains_vae_encode(comfy, shape_image):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d = _small_detailer(g, g.node("LoadImage", image=shape_image).out(0), ckpt, vae=_half_vae(g, ckpt).out(0))
    g.node("PreviewImage", images=d.out(0))
    _pack_error(comfy, g, d, "Detailer (precision-safe)", "/ vae encode", "vae.encoder.conv_in", "weights bf16",
                "its input is fp32")


def test_half_weight_model_in_core_ksampler__stock_raw_runtimeerror__pack_guard_explains_on_ksampler(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    bad = g.node("PSTest_HalfWeightsModel", model=ckpt.out(0), dtype="bf16")
    _, sampler = txt2img(g, size=16, model=bad.out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    msg = _fails_on(comfy, g, sampler, "RuntimeError")
    assert msg.startswith("mat1 and mat2 must have the same dtype, but got Float and BFloat16")  # stock

    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    bad = g.node("PSTest_HalfWeightsModel", model=ckpt.out(0), dtype="bf16")
    guard = g.node("PrecisionSafeGuard", model=bad.out(0))
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    _pack_error(comfy, g, sampler, "KSampler", "unet.", "weights bf16", "its input is fp32", "declares fp32",
                "unet_dtype bf16")


# -- optional inputs left unconnected --------------------------------------------------------------------------------
# Each policy here has settings of its own: ComfyUI's cache keys a node by its inputs, not its id, so a policy equal to
# one that succeeded in the previous prompt would not run again (the cached case has a test of its own below).

def test_policy_model_output_without_a_model__stock_none_reaches_ksampler__pack_errors_on_the_policy_input(comfy):
    g = GraphBuilder()
    p = policy(g, sam_dtype="fp32")  # no MODEL connected, yet its model output feeds the KSampler
    ckpt, sampler = txt2img(g, size=16, model=p.out(1))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    _pack_error(comfy, g, p, "Precision Policy", "input 'model'", "nothing is connected to its 'model' input",
                f"KSampler #{sampler.id} (input 'model') needs it", "connect a MODEL to this node's 'model' input")


def test_policy_vae_output_without_a_vae__stock_none_reaches_the_decoder__pack_errors_on_the_policy_input(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, sam_dtype="bf16")
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=p.out(3))
    g.node("PreviewImage", images=safe.out(0))
    _pack_error(comfy, g, p, "Precision Policy", "input 'vae'", f"Safe VAE Decode #{safe.id} (input 'vae')",
                "connect a VAE")


def test_guard_with_nothing_connected__stock_none_reaches_ksampler__pack_errors_on_the_guard_input(comfy):
    g = GraphBuilder()
    guard = g.node("PrecisionSafeGuard")
    ckpt, sampler = txt2img(g, size=16, model=guard.out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    _pack_error(comfy, g, guard, "Precision Guard", "input 'model'", "nothing is connected to its 'model' input",
                f"KSampler #{sampler.id} (input 'model')")


def test_empty_policy_vae_through_the_guard__stock_none_reaches_vaedecode__pack_errors_on_the_guard_naming_the_policy(
        comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, sam_dtype="fp16")
    guard = g.node("PrecisionSafeGuard", vae=p.out(3))  # an optional input: the policy hands None on
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=guard.out(1))
    g.node("PreviewImage", images=dec.out(0))
    _pack_error(comfy, g, guard, "Precision Guard", "input 'vae'",
                f"its 'vae' input got nothing (None) from Precision Policy #{p.id}", f"VAEDecode #{dec.id}")

    g = GraphBuilder()  # nothing needs the guard's vae output: the run goes on, the policy's record says so
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, detector_dtype="fp16")
    guard = g.node("PrecisionSafeGuard", model=ckpt.out(0), vae=p.out(3))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    g.node("PrecisionSafeDtypeInspect", value=guard.out(0))
    r = _ok(comfy, g)
    assert f"'vae' output is empty (None): passed to Precision Guard #{guard.id} (input 'vae')" in \
        r.ui(p.id)["precision_safe"][0]["notes"]


def test_cached_empty_policy_output_newly_connected__stock_none_reaches_the_node__pack_node_names_the_empty_input(
        comfy):
    """The editor case: a policy without a VAE already ran (its output is cached, so it does not run again) and its
    vae output is connected afterwards: the pack node that gets None names the policy's empty input."""
    g = GraphBuilder(prefix="cached_policy")
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g)
    g.node("PreviewImage", images=g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=ckpt.out(2),
                                         context=p.out(0)).out(0))
    _ok(comfy, g)
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=p.out(3))
    g.node("PreviewImage", images=safe.out(0))
    r = comfy.run(g.finalize())
    assert any(e == "execution_cached" and p.id in d["nodes"] for e, d in r.messages)
    assert not r.success and r.error["node_id"] == safe.id, r.error
    msg = r.error["exception_message"]
    assert f"[Safe VAE Decode #{safe.id}, input 'vae'] got nothing (None) from Precision Policy #{p.id}'s 'vae' " \
           "output: nothing is connected to that node's 'vae' input." in msg, msg


# -- latents of another model family (channel/shape mismatches) -----------------------------------------------------

def _wide_latent(g, sampler):
    """A 16-channel latent (what SD3/Flux sample) of the same size as the tiny SD1.5 sampler's."""
    return g.node("PSTest_ReshapeLatent", samples=sampler.out(0), channels=16, batch=-1)


def test_16_channel_latent_into_4_channel_vae__stock_raw_channel_error__pack_guard_names_latent_families(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    dec = g.node("VAEDecode", samples=_wide_latent(g, sampler).out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=dec.out(0))
    msg = _fails_on(comfy, g, dec, "RuntimeError")
    assert "expected input[1, 16, 2, 2] to have 4 channels, but got 16 channels instead" in msg  # stock

    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    guard = g.node("PrecisionSafeGuard", vae=ckpt.out(2))
    dec = g.node("VAEDecode", samples=_wide_latent(g, sampler).out(0), vae=guard.out(1))
    g.node("PreviewImage", images=dec.out(0))
    msg = _pack_error(comfy, g, dec, "VAEDecode", "vae.post_quant_conv (Conv2d)", "takes 4 channels",
                      "input has 16", "graph input 'samples' [1, 16, 2, 2]", "16-channel latent",
                      "this VAE is for 4-channel latents", "the VAE that belongs to the model that made the latent")
    families = msg.split("16-channel latent")[1]
    assert "SD3" in families and "Flux" in families and "SD15" in families, msg  # read from ComfyUI's latent formats


def test_16_channel_latent_into_sd15_ksampler__stock_raw_channel_error__pack_guard_explains_on_ksampler(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    _, sampler = txt2img(g, size=16)
    sampler.set_input("latent_image", _wide_latent(g, g.node("EmptyLatentImage", width=16, height=16,
                                                             batch_size=1)).out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    msg = _fails_on(comfy, g, sampler, "RuntimeError")
    assert "to have 4 channels, but got 16 channels instead" in msg  # stock

    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    guard = g.node("PrecisionSafeGuard", model=ckpt.out(0))
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    sampler.set_input("latent_image", _wide_latent(g, g.node("EmptyLatentImage", width=16, height=16,
                                                             batch_size=1)).out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    _pack_error(comfy, g, sampler, "KSampler", "unet.input_blocks.0.0 (Conv2d)", "takes 4 channels", "input has 16",
                "graph input 'latent_image'", "this MODEL is for 4-channel latents", "SD3", "SD15")


# -- fp8-stored weights ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fp8_unet(tmp_path_factory):
    """The tiny checkpoint's UNet as a diffusion_models file, for UNETLoader's weight_dtype option (what
    --fp8_e4m3fn-unet does for every model)."""
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    import folder_paths
    import safetensors.torch
    from safetensors import safe_open
    folder = tmp_path_factory.mktemp("diffusion_models")
    prefix = "model.diffusion_model."
    with safe_open(folder_paths.get_full_path("checkpoints", CHECKPOINT), "pt") as f:
        sd = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    name = "ps_tiny_sd15_unet.safetensors"
    safetensors.torch.save_file(sd, str(folder / name))
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    return name


def test_fp8_stored_unet__stock_runs_fp32_compute_unshown__pack_shows_it_and_policy_bf16_computes(comfy, fp8_unet):
    probe = torch.zeros(2).to(torch.float8_e4m3fn)
    if probe.float().sum() != 0:
        pytest.skip("float8 casts do not work on this CPU")
    g = GraphBuilder()
    unet = g.node("UNETLoader", unet_name=fp8_unet, weight_dtype="fp8_e4m3fn")
    _, stock = txt2img(g, size=16, model=unet.out(0))
    insp = g.node("PrecisionSafeDtypeInspect", value=unet.out(0))
    p = policy(g, unet_dtype="bf16")
    p.set_input("model", unet.out(0))
    insp_bf16 = g.node("PrecisionSafeDtypeInspect", value=p.out(1))
    _, pack = txt2img(g, size=16, model=p.out(1))
    for s in (stock, pack):
        g.node("PrecisionSafeDtypeInspect", value=s.out(0))
    r = _ok(comfy, g)
    model = comfy.output(unet.id)
    assert next(model.model.diffusion_model.parameters()).dtype == torch.float8_e4m3fn
    assert "MODEL model: storage float8_e4m3fn compute fp32" in r.ui(insp.id)["text"][0]
    assert "MODEL model: storage float8_e4m3fn compute bf16" in r.ui(insp_bf16.id)["text"][0]
    a, b = comfy.output(stock.id)["samples"], comfy.output(pack.id)["samples"]
    assert torch.isfinite(a).all() and torch.isfinite(b).all() and not torch.equal(a, b)


# -- devices --------------------------------------------------------------------------------------------------------

@pytest.mark.skip(reason="CPU-only host: the in-process ComfyUI runs with --cpu, so every model and every IMAGE/LATENT "
                         "lives on the CPU and no CPU-vs-GPU tensor mix can occur; run the pack's GPU tests for that")
def test_cpu_vs_gpu_tensor_mix__not_testable_on_a_cpu_only_host():
    pass


# -- downstream of the pack: core and third-party nodes, enforce downstream (issue 10) ------------------------------

UNET = "tiny_sd15_unet.safetensors"
UPSCALER = "tiny_compact_x2.safetensors"
CONTROLNET = "tiny_controlnet.safetensors"
LORA = "tiny_overflow_lora.safetensors"


def _enforcing(g, **choices):
    p = policy(g, **choices)
    p.set_input("enforce_downstream", True)
    return p


def _decoded(g, sampler, ckpt):
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=dec.out(0))
    return dec


def _finite_latent(comfy, sampler):
    z = comfy.output(sampler.id)["samples"]
    assert torch.isfinite(z).all(), "the latent is not finite"
    return z


def test_fp16_image_into_core_upscale_with_model__stock_input_type_half_bias_float__pack_enforce_casts(comfy):
    g = GraphBuilder()
    half = g.node("PSTest_CastImage", image=_image(g).out(0), dtype="fp16")
    up = g.node("ImageUpscaleWithModel", upscale_model=g.node("UpscaleModelLoader", model_name=UPSCALER).out(0),
                image=half.out(0))
    g.node("PreviewImage", images=up.out(0))
    stock = comfy.run(g.finalize())
    if stock.success:  # newer cores cast the IMAGE to the upscaler's dtype themselves (0.33 does)
        assert torch.isfinite(comfy.output(up.id)).all()
    else:  # 0.3.75: the raw torch error on the core node
        assert stock.error["node_id"] == up.id and stock.error["exception_type"].endswith("RuntimeError")
        assert stock.error["exception_message"].startswith(
            "Input type (c10::Half) and bias type (float) should be the same")

    g = GraphBuilder()
    half = g.node("PSTest_CastImage", image=_image(g).out(0), dtype="fp16")
    p = _enforcing(g)
    p.set_input("upscale_model", g.node("UpscaleModelLoader", model_name=UPSCALER).out(0))
    up = g.node("ImageUpscaleWithModel", upscale_model=p.out(4), image=half.out(0))
    save = g.node("PrecisionSafeSaveImage", images=up.out(0), filename_prefix="precision_safe_tests/corpus_upscale")
    r = _ok(comfy, g)
    out = comfy.output(up.id)
    assert out.shape == (1, 16, 16, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # the conform steps' records ride on the values they hand the upscaler (whose new IMAGE carries none on)
    carried = comfy.pack_module("nodes.host.records").carried
    image, model = (carried(comfy.output(f"{up.id}.precision_safe.{name}")) for name in ("image", "upscale_model"))
    assert [e["record"]["casts"] for e in image if e["node_id"] == up.id] == [["image: fp16 -> fp32"]]
    assert [e["record"]["notes"][0].split(":")[0] for e in model if e["node_id"] == up.id] == ["upscale_model"]
    assert [e["class_type"] for e in model] == ["PrecisionSafePolicy", "ImageUpscaleWithModel"]  # policy's, then its
    assert _png_chunk(r, save)["unrecorded_upstream"] == [p.id]


def _png_chunk(r, save):
    import folder_paths
    ref = r.ui(save.id)["images"][0]
    path = os.path.join(folder_paths.get_output_directory(), ref["subfolder"], ref["filename"])
    import json
    return json.loads(Image.open(path).text["precision"])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_model_patch__stock_mat1_mat2__pack_names_the_patch_and_both_fixes_work(comfy, dtype):
    torch_words = {"bf16": "BFloat16", "fp16": "Half"}[dtype]
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    patched = g.node("PSTest_HalfPatch", model=ckpt.out(0), dtype=dtype)
    _, sampler = txt2img(g, size=16, model=patched.out(0))
    _decoded(g, sampler, ckpt)
    msg = _fails_on(comfy, g, sampler, "RuntimeError")
    assert msg.startswith(f"mat1 and mat2 must have the same dtype, but got Float and {torch_words}")  # stock

    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    patched = g.node("PSTest_HalfPatch", model=ckpt.out(0), dtype=dtype)
    guard = g.node("PrecisionSafeGuard", model=patched.out(0))
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    _decoded(g, sampler, ckpt)
    msg = _pack_error(comfy, g, sampler, "KSampler", f"patch attn2_output_patch[0] (ProjectionPatch, weights {dtype})",
                      "its input is fp32", "not at fault", "enforce_downstream", f"unet_dtype to {dtype}")
    assert "unet.input_blocks" not in msg  # the UNet block that called the patch is not blamed

    for fix in ("enforce", "unet_dtype"):  # each fix the message suggests, applied: a finite image
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        p = _enforcing(g) if fix == "enforce" else policy(g, unet_dtype=dtype)
        p.set_input("model", ckpt.out(0))
        patched = g.node("PSTest_HalfPatch", model=p.out(1), dtype=dtype)
        _, sampler = txt2img(g, size=16, model=patched.out(0))
        _decoded(g, sampler, ckpt)
        _ok(comfy, g)
        _finite_latent(comfy, sampler)


def test_fp8_unet_with_fp8_patch__stock_float8_promotion_error__pack_recognises_it_and_enforce_runs(comfy):
    probe = torch.zeros(2).to(torch.float8_e4m3fn)
    if probe.float().sum() != 0:
        pytest.skip("float8 casts do not work on this CPU")

    def graph(guard=False, enforce=False):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        model = g.node("UNETLoader", unet_name=UNET, weight_dtype="fp8_e4m3fn").out(0)
        if enforce:
            p = _enforcing(g)
            p.set_input("model", model)
            model = p.out(1)
        model = g.node("PSTest_HalfPatch", model=model, dtype="fp8_e4m3fn").out(0)
        if guard:
            model = g.node("PrecisionSafeGuard", model=model).out(0)
        _, sampler = txt2img(g, size=16, model=model, clip=ckpt.out(1))
        _decoded(g, sampler, ckpt)
        return g, sampler

    g, sampler = graph()
    msg = _fails_on(comfy, g, sampler, "RuntimeError")
    assert "Promotion for Float8 Types is not supported, attempted to promote Float and Float8_e4m3fn" in msg
    g, sampler = graph(guard=True)
    _pack_error(comfy, g, sampler, "KSampler", "patch attn2_output_patch[0]", "weights float8_e4m3fn",
                "its input is fp32", "enforce_downstream")
    g, sampler = graph(enforce=True)  # the fix the message suggests
    _ok(comfy, g)
    _finite_latent(comfy, sampler)


def _controlled(g, ckpt, control_net, positive, negative):
    hint = g.node("EmptyImage", width=64, height=64, batch_size=1, color=0xffffff)
    return g.node("ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=control_net,
                  image=hint.out(0), strength=1.0, start_percent=0.0, end_percent=1.0)


def _controlnet_graph(g, wrap=None):
    """txt2img with a ControlNet whose weights are bf16 while it declares fp32; `wrap` puts a pack node between."""
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    control = g.node("PSTest_HalfWeightsControlNet", dtype="bf16",
                     control_net=g.node("ControlNetLoader", control_net_name=CONTROLNET).out(0)).out(0)
    model = ckpt.out(0)
    if wrap == "guard":
        model = g.node("PrecisionSafeGuard", model=model).out(0)
    elif wrap == "policy":
        p = policy(g)
        p.set_input("control_net", control)
        control = p.out(5)
    elif wrap == "enforce":
        p = _enforcing(g)
        p.set_input("model", model)
        model = p.out(1)
    pos = g.node("CLIPTextEncode", text="a red square", clip=ckpt.out(1))
    neg = g.node("CLIPTextEncode", text="", clip=ckpt.out(1))
    applied = _controlled(g, ckpt, control, pos.out(0), neg.out(0))
    latent = g.node("EmptyLatentImage", width=16, height=16, batch_size=1)
    sampler = g.node("KSampler", model=model, positive=applied.out(0), negative=applied.out(1),
                     latent_image=latent.out(0), seed=0, steps=2, cfg=2.0, sampler_name="euler",
                     scheduler="normal", denoise=1.0)
    _decoded(g, sampler, ckpt)
    return sampler


def test_half_weight_controlnet__stock_raw_error__pack_names_the_controlnet_and_its_fix_works(comfy):
    g = GraphBuilder()
    sampler = _controlnet_graph(g)
    msg = _fails_on(comfy, g, sampler, "RuntimeError")
    assert msg.startswith("mat1 and mat2 must have the same dtype, but got Float and BFloat16")  # stock, on KSampler

    g = GraphBuilder()
    sampler = _controlnet_graph(g, wrap="guard")
    msg = _pack_error(comfy, g, sampler, "KSampler", "control_net 0 (ControlNet)", "weights bf16",
                      "its input is fp32", "pass the CONTROL_NET through Precision Policy")
    assert "unet_dtype" not in msg  # the MODEL is not blamed

    for fix in ("policy", "enforce"):  # the two fixes the message names, applied
        g = GraphBuilder()
        sampler = _controlnet_graph(g, wrap=fix)
        _ok(comfy, g)
        _finite_latent(comfy, sampler)


def test_bf16_image_into_core_preview__stock_numpy_typeerror__pack_enforce_casts_on_the_way(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = _enforcing(g)
    p.set_input("vae", ckpt.out(2))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    half = g.node("PSTest_CastImage", image=dec.out(0), dtype="bf16")
    g.node("PreviewImage", images=half.out(0))
    save = g.node("SaveImage", images=half.out(0), filename_prefix="precision_safe_tests/corpus_enforced")
    r = _ok(comfy, g)
    saved = [v for k, v in r.outputs.items() if comfy.executor.history_result["meta"][k]["display_node"] == save.id]
    assert len(saved) == 1 and len(saved[0]["images"]) == 1  # core SaveImage wrote it (stock: the TypeError above)


@pytest.mark.parametrize("how", ["stock", "policy bf16", "enforce auto"])
def test_lora_into_fp16_stored_unet__stock_overflows_to_nan__pack_merges_at_the_compute_dtype(comfy, how):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    model = g.node("PSTest_LoadUnetAs", unet_name=UNET, dtype="fp16").out(0)
    p = None
    if how == "policy bf16":
        p = policy(g, unet_dtype="bf16")
    elif how == "enforce auto":
        p = _enforcing(g)
    if p is not None:
        p.set_input("model", model)
        model = p.out(1)
    lora = g.node("LoraLoaderModelOnly", model=model, lora_name=LORA, strength_model=1.0)
    _, sampler = txt2img(g, size=16, model=lora.out(0), clip=ckpt.out(1))
    _decoded(g, sampler, ckpt)
    _ok(comfy, g)
    z = comfy.output(sampler.id)["samples"]
    if how == "stock":
        assert not torch.isfinite(z).any()  # the delta merged into fp16 weights is inf: a NaN latent, black image
    else:
        assert torch.isfinite(z).all()
