"""Tiny models for the Detailer's option tests, derived from the tiny SD1.5 checkpoint (made once, deterministic):

- diffusion_models/tiny_sd15_inpaint.safetensors: its UNet with 9 input channels (latent + mask + masked latent),
  which ComfyUI loads as an SD1.5 inpaint model (UNETLoader).
- loras/tiny_nan.safetensors: a LoRA for its UNet's time embedding holding a NaN: every sample comes out NaN, as with
  a broken LoRA in the wild.
- controlnet/tiny_controlnet.safetensors: a ControlNet mirroring its UNet's encoder, built with ComfyUI's own class
  and torch's default init (its zero convs are random, so the hint visibly matters).
"""
import importlib.util
import os

from comfy_client import CHECKPOINT, COMFY_DIR, ROOT

INPAINT_UNET = "tiny_sd15_inpaint.safetensors"
NAN_LORA = "tiny_nan.safetensors"
CONTROLNET = "tiny_controlnet.safetensors"


def _path(folder, name):
    return os.path.join(COMFY_DIR, "models", folder, name)


def _save(tensors, path):
    import safetensors.torch
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors.torch.save_file(tensors, path + ".tmp")
    os.replace(path + ".tmp", path)


def _unet():
    from safetensors.torch import load_file
    prefix = "model.diffusion_model."
    sd = load_file(_path("checkpoints", CHECKPOINT))
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def ensure():
    import torch
    if not os.path.exists(_path("diffusion_models", INPAINT_UNET)):
        unet = _unet()
        w = unet["input_blocks.0.0.weight"]
        extra = torch.randn((w.shape[0], 5) + tuple(w.shape[2:]), generator=torch.Generator().manual_seed(0))
        unet["input_blocks.0.0.weight"] = torch.cat([w, (extra * w.float().std()).to(w.dtype)], 1)
        _save(unet, _path("diffusion_models", INPAINT_UNET))
    if not os.path.exists(_path("loras", NAN_LORA)):
        up = torch.zeros(1280, 4)
        up[0, 0] = float("nan")
        _save({"lora_unet_time_embed_0.lora_up.weight": up, "lora_unet_time_embed_0.lora_down.weight": torch.ones(4, 320),
               "lora_unet_time_embed_0.alpha": torch.tensor(4.0)}, _path("loras", NAN_LORA))
    if not os.path.exists(_path("controlnet", CONTROLNET)):
        _save(_controlnet(), _path("controlnet", CONTROLNET))


def _controlnet():
    import torch
    import comfy.ops
    from comfy.cldm.cldm import ControlNet
    spec = importlib.util.spec_from_file_location(
        "make_tiny_models", os.path.join(ROOT, "scripts", "fixtures", "make_tiny_models.py"))
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    torch.manual_seed(1)
    net = tiny.reset_init(ControlNet(
        image_size=32, in_channels=4, hint_channels=3, model_channels=320, num_res_blocks=[1], channel_mult=[1],
        transformer_depth=[1], transformer_depth_middle=1, num_heads=8, context_dim=768, use_spatial_transformer=True,
        use_linear_in_transformer=False, legacy=False, operations=comfy.ops.disable_weight_init))
    return {f"control_model.{k}": v.half().contiguous() for k, v in net.state_dict().items()}
