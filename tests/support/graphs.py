"""API-format prompts for the in-process and server tests, built with ComfyUI's own GraphBuilder."""
from comfy_client import CHECKPOINT, ERROR_MODE_PROMPT, OVERFLOW_VAE  # noqa: F401  (ERROR_MODE_PROMPT: for the tests)


def txt2img(g, size=64, batch=1, seed=0, steps=2, model=None, clip=None):
    """Checkpoint -> CLIP encode -> KSampler. Returns (checkpoint node, sampler node)."""
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    model = model or ckpt.out(0)
    clip = clip or ckpt.out(1)
    pos = g.node("CLIPTextEncode", text="a red square", clip=clip)
    neg = g.node("CLIPTextEncode", text="", clip=clip)
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=batch)
    sampler = g.node("KSampler", model=model, positive=pos.out(0), negative=neg.out(0), latent_image=latent.out(0),
                     seed=seed, steps=steps, cfg=2.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    return ckpt, sampler


def policy(g, **choices):
    kw = dict(unet_dtype="auto", vae_dtype="auto", text_encoder_dtype="auto", detector_dtype="auto",
              sam_dtype="auto", intermediate_dtype="auto", on_mismatch="cast", on_nonfinite="retry")
    kw.update(choices)
    return g.node("PrecisionSafePolicy", **kw)


def overflow_vae(g):
    return g.node("VAELoader", vae_name=OVERFLOW_VAE)


def overflow_batch(g, sampler, size=16):
    """A 2-item latent batch for the overflow VAE in fp16: item 0 (an empty latent) stays in fp16's range,
    item 1 (the sampled latent, values in the hundreds with the random tiny UNet) overflows."""
    quiet = g.node("EmptyLatentImage", width=size, height=size, batch_size=1)
    return g.node("LatentBatch", samples1=quiet.out(0), samples2=sampler.out(0))


def save_input(name, image) -> str:
    """A float [H, W, 3] array in [0, 1] saved as a PNG in ComfyUI's input folder, for LoadImage."""
    import os

    import folder_paths
    import numpy as np
    from PIL import Image
    Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8)).save(
        os.path.join(folder_paths.get_input_directory(), name))
    return name


DETECTION = ("threshold", "labels", "dilation", "crop_factor", "drop_size", "min_area_ratio", "max_area_ratio", "top_k",
             "sort_by")
SAM_OPTIONS = ("hint", "score_threshold", "multimask", "bbox_expansion", "sam_dilation", "mask_hint_threshold")


def detailer(g, image, ckpt, detector="bbox/tiny_shapes_bbox.pt", sam=True, **over):
    """Detector (+ SAM) -> Detailer on `image`, settings small enough for a CPU. Detection and SAM option names
    given in `over` go to a Detection / SAM Options node (SAM's dilation as `sam_dilation`); `detector=None` with
    `segs=` or `mask=` uses that region source instead."""
    pos = g.node("CLIPTextEncode", text="a shape", clip=ckpt.out(1))
    neg = g.node("CLIPTextEncode", text="", clip=ckpt.out(1))
    detection = dict(threshold=0.5, dilation=2, crop_factor=1.5, drop_size=4, sort_by="left-right")
    detection.update({k: over.pop(k) for k in DETECTION if k in over})
    detection = {**dict(labels="", min_area_ratio=0.0, max_area_ratio=1.0, top_k=0), **detection}
    sam_opts = {k: over.pop(k) for k in SAM_OPTIONS if k in over}
    kw = dict(image=image, model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0), vae=ckpt.out(2),
              guide_size=48, guide_size_for="bbox", max_size=64, force_inpaint=True, feather=2, noise_mask=True,
              noise_mask_feather=0, inpaint_model=False, denoise=0.5, steps=2, cfg=2.0, sampler_name="euler",
              scheduler="normal", seed=1, cycles=1, max_batch=0, tiled_vae="off", tile_size=512,
              detection=g.node("PrecisionSafeDetailerDetectionOptions", **detection).out(0))
    if detector:
        kw["detector"] = g.node("PrecisionSafeDetectorLoader", model_name=detector).out(0)
    if sam:
        kw["sam"] = g.node("PrecisionSafeSAMLoader", model_name="tiny_sam_shapes.pth").out(0)
        if sam_opts:
            sam_opts = {("dilation" if k == "sam_dilation" else k): v for k, v in sam_opts.items()}
            kw["sam_options"] = g.node("PrecisionSafeDetailerSamOptions", **{
                **dict(hint="box", score_threshold=0.93, multimask=False, bbox_expansion=0, dilation=2,
                       mask_hint_threshold=0.5), **sam_opts}).out(0)
    kw.update(over)
    return g.node("PrecisionSafeDetailer", **kw)


# API prompts written out by hand, as an HTTP client sends them (the server tests)
POLICY = {"unet_dtype": "auto", "vae_dtype": "auto", "text_encoder_dtype": "auto", "detector_dtype": "auto",
          "sam_dtype": "auto", "intermediate_dtype": "auto", "on_mismatch": "cast", "on_nonfinite": "retry"}


def api_txt2img(size=16, model=("1", 0), seed=0, steps=2, cfg=2.0):
    """Nodes 1-6: checkpoint, prompts, empty latent, KSampler (node 6)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": list(model), "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": seed,
            "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
    }
