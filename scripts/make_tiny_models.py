"""Make the tiny, random-weight models the tests and the demo run on (deterministic, offline, seconds).

- checkpoints/tiny_sd15.safetensors: an SD1.5-shaped checkpoint ComfyUI's CheckpointLoaderSimple detects as
  SD15 (one UNet level; CLIP-L and the SD VAE at full size, their configs are fixed), built with ComfyUI's
  own classes and torch's default init from a fixed seed.
- vae/tiny_overflow_vae.safetensors: the same VAE with the weight (not the bias) of `post_quant_conv`, the first
  layer a latent meets, scaled by OVERFLOW_GAIN: a latent of ordinary magnitude drives activations past fp16's
  65504 (fp16 decode -> NaN, a black image) while bf16/fp32 stay finite, and a latent scaled by ~0.01 stays in
  range, so one batch can hold items that overflow beside items that don't.
- diffusion_models/tiny_sd15_unet.safetensors: the checkpoint's UNet alone, for UNETLoader (and its fp8
  weight_dtype, what --fp8_e4m3fn-unet does).
- upscale_models/tiny_compact_x2.safetensors: a 2x RealESRGAN-Compact upscaler (spandrel's own architecture class,
  8 features), which UpscaleModelLoader detects from its keys.
- controlnet/tiny_controlnet.safetensors: a ControlNet shaped like the tiny UNet (ComfyUI's cldm class), which
  ControlNetLoader detects as SD15.
- loras/tiny_overflow_lora.safetensors: a rank-1 LoRA on one attn2 projection whose delta (~1e5 per weight) is past
  fp16's range: merged into fp16-stored weights it is inf (a NaN latent); merged at bf16/fp32 it stays finite.
- vae/tiny_taesd.safetensors: ComfyUI's TAESD (4-channel latents) with random weights: ComfyUI estimates its decode
  memory like the SD VAE's (so a large latent must be tiled) while a tile decodes in about a second on a CPU.

- with --full: checkpoints/sd15_full_random.safetensors, the same but with a full-size SD1.5 UNet (860 M
  parameters, fp16 like the released checkpoints), built on the GPU when there is one: what the GPU benchmarks time.

Usage: python scripts/make_tiny_models.py COMFYUI_DIR [--full]  (run with the host venv; skips files that exist)
"""
import os
import sys

OVERFLOW_GAIN = 1e5
MODELS = ("checkpoints/tiny_sd15.safetensors", "vae/tiny_overflow_vae.safetensors", "vae/tiny_taesd.safetensors")


def reset_init(module):
    """ComfyUI's ops skip weight init (weights come from files); give every layer torch's default init."""
    for m in module.modules():
        for cls in type(m).__mro__:
            if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                cls.reset_parameters(m)
                break
    return module


# SD1.5's real UNet layout (ComfyUI detects SD15 from these shapes); the tiny one keeps a single level.
FULL_UNET = dict(num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_output=[1] * 9 + [0] * 3)
TINY_UNET = dict(num_res_blocks=[1], channel_mult=[1], transformer_depth=[1], transformer_depth_output=[1, 1])


def build(comfy_dir, full=False):
    import torch
    sys.argv = [sys.argv[0]] + ([] if full and torch.cuda.is_available() else ["--cpu"])  # before comfy imports
    sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.ops
    import comfy.clip_model
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ldm.models.autoencoder import AutoencoderKL
    import json

    torch.manual_seed(0)
    ops = comfy.ops.disable_weight_init
    device = "cuda" if full and torch.cuda.is_available() else "cpu"  # default init of 860 M weights: ~3 s there
    with torch.device(device):
        unet = reset_init(UNetModel(
            image_size=32, in_channels=4, out_channels=4, model_channels=320, transformer_depth_middle=1,
            num_heads=8, context_dim=768, use_spatial_transformer=True, use_linear_in_transformer=False,
            legacy=False, operations=ops, **(FULL_UNET if full else TINY_UNET)))
    with open(os.path.join(comfy_dir, "comfy", "sd1_clip_config.json")) as f:
        clip_cfg = json.load(f)
    clip = reset_init(comfy.clip_model.CLIPTextModel(clip_cfg, torch.float32, "cpu", ops))
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = reset_init(AutoencoderKL(ddconfig=ddconfig, embed_dim=4))

    sd = {}
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in clip.state_dict().items()})
    vae_sd = vae.state_dict()
    sd.update({f"first_stage_model.{k}": v for k, v in vae_sd.items()})
    sd = {k: v.half().contiguous().cpu() for k, v in sd.items()}

    overflow = {k: v.clone() for k, v in vae_sd.items()}
    overflow["post_quant_conv.weight"] = overflow["post_quant_conv.weight"] * OVERFLOW_GAIN

    from comfy.taesd.taesd import TAESD
    taesd = {k: v.contiguous() for k, v in reset_init(TAESD()).state_dict().items()}
    return dict(zip(MODELS, (sd, overflow, taesd)))


LORA_TARGET = "input_blocks.1.1.transformer_blocks.0.attn2.to_k"  # Linear(768 -> 320) of the tiny UNet
LORA_DELTA = 1e5
EXTRAS = {"unet": "diffusion_models/tiny_sd15_unet.safetensors",
          "upscaler": "upscale_models/tiny_compact_x2.safetensors",
          "controlnet": "controlnet/tiny_controlnet.safetensors", "lora": "loras/tiny_overflow_lora.safetensors"}


def build_extras(comfy_dir, ckpt_path):
    """path under models/ -> state dict, for the extra tiny models (see the module docstring)."""
    import torch
    import comfy.cldm.cldm
    import comfy.ops
    from safetensors import safe_open
    from spandrel.architectures.Compact import Compact

    prefix = "model.diffusion_model."
    with safe_open(ckpt_path, "pt") as f:
        unet = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    torch.manual_seed(1)
    upscaler = reset_init(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)).state_dict()
    control = reset_init(comfy.cldm.cldm.ControlNet(
        image_size=32, in_channels=4, hint_channels=3, model_channels=320, num_res_blocks=[1], channel_mult=[1],
        transformer_depth=[1], transformer_depth_middle=1, num_heads=8, context_dim=768,
        use_spatial_transformer=True, use_linear_in_transformer=False, legacy=False,
        operations=comfy.ops.disable_weight_init)).state_dict()
    key = "lora_unet_" + LORA_TARGET.replace(".", "_")
    lora = {f"{key}.lora_down.weight": torch.ones(1, 768), f"{key}.lora_up.weight": torch.full((320, 1), LORA_DELTA),
            f"{key}.alpha": torch.tensor(1.0)}
    control = {k: v.half().contiguous() for k, v in control.items()}
    return {EXTRAS["unet"]: unet, EXTRAS["upscaler"]: upscaler, EXTRAS["controlnet"]: control, EXTRAS["lora"]: lora}


def install_assets(comfy_dir):
    """Copy the committed tiny detector/SAM files into the host's model folders and the demo image into its
    input folder (copies, so the host works wherever this repository moves)."""
    import filecmp
    import shutil
    assets = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "assets")
    for folder, _, files in os.walk(assets):
        for name in files:
            src = os.path.join(folder, name)
            dst = os.path.join(comfy_dir, os.path.relpath(src, assets))
            if not (os.path.exists(dst) and filecmp.cmp(src, dst, shallow=False)):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
                print(f"[models] installed {dst}")


def _write(path, data):
    import safetensors.torch
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors.torch.save_file(data, path + ".tmp")
    os.replace(path + ".tmp", path)  # never leave a half-written model behind
    print(f"[models] wrote {path} ({os.path.getsize(path) / 2**20:.0f} MiB)")


def main():
    comfy_dir = os.path.abspath(sys.argv[1])
    if "--full" in sys.argv[2:]:
        return make_full(comfy_dir)
    install_assets(comfy_dir)
    models = os.path.join(comfy_dir, "models")
    paths = {name: os.path.join(models, name) for name in MODELS}
    missing = [name for name, path in paths.items() if not os.path.exists(path)]
    if missing:
        built = build(comfy_dir)
        for name in missing:
            _write(paths[name], built[name])
    else:
        print(f"[models] already there: {', '.join(paths.values())}")
    if all(os.path.exists(os.path.join(models, n)) for n in EXTRAS.values()):
        return
    if "comfy" not in sys.modules:
        sys.argv = [sys.argv[0], "--cpu"]  # before comfy imports: no CUDA probing
        sys.path.insert(0, comfy_dir)
        import comfy.options
        comfy.options.enable_args_parsing()
    for name, data in build_extras(comfy_dir, paths[MODELS[0]]).items():
        path = os.path.join(models, name)
        if not os.path.exists(path):
            _write(path, data)


def make_full(comfy_dir):
    path = os.path.join(comfy_dir, "models", "checkpoints", "sd15_full_random.safetensors")
    if os.path.exists(path):
        print(f"[models] already there: {path}")
        return
    sd = build(comfy_dir, full=True)[MODELS[0]]  # the checkpoint, here with the full-size UNet
    import safetensors.torch
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors.torch.save_file(sd, path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"[models] wrote {path} ({os.path.getsize(path) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
