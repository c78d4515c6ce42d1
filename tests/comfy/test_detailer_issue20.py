"""Issue 20 through ComfyUI's real executor: the Detailer refuses a prompt that cannot fit in memory before it
allocates (it used to grow until the kernel killed the server), re-samples a NaN region with the UNet at a wider dtype
under on_nonfinite=retry and pastes it, warns once for the run, and takes a custom SAMPLER / SIGMAS."""
import dataclasses
import os
import resource

import numpy as np
import torch
from comfy_execution.graph_utils import GraphBuilder
from PIL import Image

from graphs import detailer, policy
from comfy_client import CHECKPOINT

OVERFLOW_LORA = "tiny_overflow_lora.safetensors"  # finite merged at bf16/fp32, inf merged into fp16 weights


def _save_input(name, image: np.ndarray) -> str:
    import folder_paths
    Image.fromarray((image * 255).round().astype(np.uint8)).save(os.path.join(folder_paths.get_input_directory(), name))
    return name


def _squares(size=128, side=24):
    """Four squares of one size (four regions of one sampling size) on grey."""
    img = np.full((size, size, 3), 0.3, np.float32)
    for x, y, colour in ((10, 10, (0.9, 0.1, 0.1)), (80, 12, (0.1, 0.9, 0.1)), (12, 84, (0.1, 0.1, 0.9)),
                         (86, 86, (0.9, 0.9, 0.1))):
        img[y:y + side, x:x + side] = colour
    return img


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _run(comfy, g, d):
    g.node("PreviewImage", images=d.out(0))
    return comfy.run(g.finalize())


def test_the_issues_out_of_memory_prompt_is_refused_before_it_allocates_and_the_next_prompt_runs(comfy):
    """guide_size 4096, max_size 4096, crop_factor 10 on a 256² image: RSS grew to 22.4 GB and the kernel killed the
    server. Now the node refuses with the figures and a max_size that fits, and memory stays where it was."""
    img = np.zeros((256, 256, 3), np.float32)
    img[116:140, 116:140] = (1.0, 0.0, 0.0)
    name = _save_input("ps_oom_square.png", img)
    before = _peak_rss_gib()
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=name)
    mask = g.node("ImageToMask", image=load.out(0), channel="red")
    d = detailer(g, load.out(0), ckpt, detector=None, sam=False, mask=mask.out(0), crop_factor=10.0,
                 guide_size=4096, max_size=4096, steps=1)
    r = _run(comfy, g, d)
    assert not r.success and r.error["node_id"] == d.id
    msg = r.error["exception_message"]
    assert "would be sampled at 4096x4096" in msg and "nothing was sampled" in msg and "GiB" in msg, msg
    assert "input 'max_size'" in msg and "fits now" in msg, msg
    assert _peak_rss_gib() - before < 2.0, "the refused prompt still allocated gigabytes"

    fixed = int(msg.split("max_size ")[-1].split(" or less")[0])  # the size the message offers: it runs
    assert 64 <= fixed < 4096
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    load = g.node("LoadImage", image=name)
    mask = g.node("ImageToMask", image=load.out(0), channel="red")
    d = detailer(g, load.out(0), ckpt, detector=None, sam=False, mask=mask.out(0), crop_factor=1.5, steps=1)
    r = _run(comfy, g, d)
    assert r.success, r.error  # the server (here the executor) is alive and the next prompt runs


def test_memory_plan_splits_a_batch_that_does_not_fit_and_keeps_one_that_does(comfy):
    """The planner on ComfyUI's own estimates for the tiny checkpoint: with free memory for two regions at a time,
    four regions are sampled two by two; with room for all, as one batch."""
    nodes = comfy.pack_module("nodes.detailer.memory")
    budget = comfy.pack_module("nodes.regions.budget")
    options = comfy.pack_module("nodes.regions.options")
    ckpt = comfy.node_class("CheckpointLoaderSimple")().load_checkpoint(CHECKPOINT)
    opts = options.SamplingOptions(steps=1, cfg=2.0, sampler_name="euler", scheduler="normal", denoise=0.5)
    need = nodes.need_for(ckpt[0], ckpt[2], opts, canvas_bytes=0)
    two, three = need(2, (512, 512)).total, need(3, (512, 512)).total
    assert need(1, (512, 512)).sample < two < three  # the sampler's estimate grows with the batch
    assert budget.fitting_batch(4, (512, 512), need, (two + three) / 2) == 2
    assert budget.fitting_batch(4, (512, 512), need, need(4, (512, 512)).total) == 4
    assert budget.fitting_batch(4, (512, 512), need, need(1, (512, 512)).total / 2) == 0
    smaller = budget.largest_fitting_size((512, 512), need, need(1, (512, 512)).total / 2)
    assert smaller and max(smaller) < 512 and need(1, smaller).total <= need(1, (512, 512)).total / 2


def _overflow_graph(g, name, mode, **over):
    """fp16 UNet + a LoRA whose delta is inf in fp16: every region's sample is NaN at fp16, finite at bf16."""
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    lora = g.node("LoraLoaderModelOnly", model=ckpt.out(0), lora_name=OVERFLOW_LORA, strength_model=1.0)
    load = g.node("LoadImage", image=name)
    p = policy(g, unet_dtype="fp16", on_nonfinite=mode)
    d = detailer(g, load.out(0), ckpt, sam=False, model=lora.out(0), steps=1, guide_size=16, dilation=0,
                 context=p.out(0), **over)
    return d, load


def test_retry_resamples_the_nan_regions_with_the_unet_one_dtype_wider_and_pastes_them(comfy):
    name = _save_input("ps_overflow_squares.png", _squares())
    outs = {}
    for mode in ("keep", "retry"):
        g = GraphBuilder()
        d, load = _overflow_graph(g, name, mode, max_batch=2)
        r = _run(comfy, g, d)
        assert r.success, r.error
        outs[mode] = (r.ui(d.id)["precision_safe"][0], comfy.output(d.id, 0), comfy.output(d.id, 1),
                      comfy.output(load.id))
    rec, out, mask, src = outs["keep"]
    assert rec["ran"]["unet"] == "fp16 · cpu" and rec["retries"] == []
    assert torch.equal(out, src) and mask.sum() == 0  # nothing pasted ...
    assert len(rec["warnings"]) == 1, rec["warnings"]  # ... said once for the two batches, every region named
    assert all(f"#{i} " in rec["warnings"][0] for i in range(4)) and "on_nonfinite 'retry'" in rec["warnings"][0]

    rec, out, mask, src = outs["retry"]
    assert rec["ran"]["unet"] == "fp16 · cpu"  # the run's dtype; the retry is recorded apart
    assert rec["retries"] == ["unet: region(s) #0 square, #1 square re-sampled fp16 -> bf16: finite",
                              "unet: region(s) #2 square, #3 square re-sampled fp16 -> bf16: finite"], rec["retries"]
    assert rec["warnings"] == []
    assert torch.isfinite(out).all() and not torch.equal(out, src)
    for box in ((10, 10), (80, 12), (12, 84), (86, 86)):  # every region pasted back
        assert mask[0, box[1] + 12, box[0] + 12] > 0
    assert torch.equal(out[0][mask[0] == 0], src[0][mask[0] == 0])


def test_the_retry_leaves_the_shared_model_as_it_was(comfy):
    name = _save_input("ps_overflow_one.png", _squares())
    g = GraphBuilder()
    d, _ = _overflow_graph(g, name, "retry", top_k=1)
    r = _run(comfy, g, d)
    assert r.success, r.error
    lora_id = next(nid for nid, n in g.finalize().items() if n["class_type"] == "LoraLoaderModelOnly")
    shared = comfy.output(lora_id)
    assert shared.model_dtype() == torch.float32 and len(shared.patches) > 0  # still fp32, its LoRA unmerged
    assert r.ui(d.id)["precision_safe"][0]["retries"] == ["unet: region(s) #0 square re-sampled fp16 -> bf16: finite"]


def test_a_nan_model_is_warned_about_once_for_every_batch(comfy):
    """The warning was repeated once per batch; it is said once, the regions listed."""
    import detailer_models
    detailer_models.ensure()
    name = _save_input("ps_nan_once.png", _squares())
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    lora = g.node("LoraLoaderModelOnly", model=ckpt.out(0), lora_name=detailer_models.NAN_LORA, strength_model=1.0)
    d = detailer(g, g.node("LoadImage", image=name).out(0), ckpt, sam=False, model=lora.out(0), steps=1,
                 guide_size=16, max_batch=1, context=policy(g, on_nonfinite="retry").out(0))
    r = _run(comfy, g, d)
    assert r.success, r.error
    rec = r.ui(d.id)["precision_safe"][0]
    assert len([n for n in rec["notes"] if n.startswith("batch ")]) == 4
    assert len(rec["warnings"]) == 1, rec["warnings"]
    w = rec["warnings"][0]
    assert "#0 square, #1 square, #2 square, #3 square" in w and "no unet dtype wider than fp32" in w, w


def test_custom_sampler_and_sigmas_are_used_for_every_region(comfy):
    name = _save_input("ps_custom_sampler.png", _squares())

    def run(**custom):
        g = GraphBuilder()
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        over = {}
        if "sampler" in custom:
            over["sampler"] = g.node("KSamplerSelect", sampler_name=custom["sampler"]).out(0)
        if "steps" in custom:
            over["sigmas"] = g.node("BasicScheduler", model=ckpt.out(0), scheduler="normal", steps=custom["steps"],
                                    denoise=custom["denoise"]).out(0)
        d = detailer(g, g.node("LoadImage", image=name).out(0), ckpt, sam=False, steps=2, denoise=0.5, **over)
        r = _run(comfy, g, d)
        assert r.success, r.error
        return comfy.output(d.id, 0), r.ui(d.id)["precision_safe"][0]["notes"]

    plain, notes = run()
    assert not any("custom" in n for n in notes)
    # the widgets' own sampler and schedule given as inputs: the same image (KSampler makes them the same way)
    same, notes = run(sampler="euler", steps=2, denoise=0.5)
    assert "custom SAMPLER (not euler) and custom SIGMAS (2 steps; steps, scheduler and denoise unused) for every " \
           "region" in notes
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)
    other_sigmas, _ = run(steps=3, denoise=0.8)
    other_sampler, notes = run(sampler="heun")
    assert notes[0] == "custom SAMPLER (not euler) for every region"
    for other in (other_sigmas, other_sampler):
        assert not torch.equal(other, plain) and torch.isfinite(other).all()


def test_the_detailer_inputs_are_its_options_fields(comfy):
    """Every options field is a node input of that name with the same default, so a renamed field or input fails
    here (the Detailer's execute takes each by name; a mismatch is a TypeError, never dropped)."""
    options = comfy.pack_module("nodes.regions.options")
    for node_id, cls, skip in (("PrecisionSafeDetailer", options.CropOptions, ()),
                               ("PrecisionSafeDetailer", options.SamplingOptions,
                                ("sampler", "sigmas", "tiled_encode", "tiled_decode")),
                               ("PrecisionSafeDetailerDetectionOptions", options.DetectionOptions, ()),
                               ("PrecisionSafeDetailerSamOptions", options.SamOptions, ())):
        inputs = {i.id: i for i in comfy.node_class(node_id).define_schema().inputs}
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            assert f.name in inputs, f"{cls.__name__}.{f.name} is no input of {node_id}"
            if f.default is not dataclasses.MISSING:
                want = "" if f.name == "labels" else f.default
                assert inputs[f.name].default == want, f"{node_id}.{f.name}"
