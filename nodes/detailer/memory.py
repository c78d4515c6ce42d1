"""What a Detailer batch takes, from ComfyUI's own estimates: the model's `memory_required` for the sampler (the
figure ComfyUI loads models by), the VAE's `memory_used_encode` for one item (core encodes in as many items as fit),
and the free memory as Safe VAE Decode counts it. The decode has its own check in the decode (tiles or a refusal)."""
from __future__ import annotations

import torch

from ..host.vae_decode import _free_bytes
from ..regions.budget import Need
from ..regions.options import SamplingOptions

PIXEL_COPIES = 4  # crops, their resized masks, the decoded crops, the inpaint model's greyed copy


def free_memory(model) -> float:
    """Bytes the batch can have on the sampling device (on an accelerator: free plus the models ComfyUI unloads)."""
    return _free_bytes(torch.device(model.load_device))


def need_for(model, vae, opts: SamplingOptions, canvas_bytes: int):
    """(regions, (height, width)) -> Need for sampling that many crops of that size with `model` and `vae`."""
    device = torch.device(model.load_device)
    weights = 0.0 if device.type == "cpu" else 1.0  # on a CPU the weights are in memory already, not in `free`
    unet_bytes, vae_bytes = weights * model.model_size(), weights * vae.patcher.model_size()
    scale = getattr(vae, "downscale_ratio", 8)
    scale = scale if isinstance(scale, int) else 8
    channels = getattr(vae, "latent_channels", 4)

    def need(n: int, hw: tuple[int, int]) -> Need:
        h, w = hw
        side = opts.tile_size if opts.tiled_encode else None
        encode = vae.memory_used_encode((1, 3, min(h, side or h), min(w, side or w)), vae.vae_dtype)
        sample = model.memory_required([2 * n, channels, h // scale, w // scale])  # cond + uncond, as ComfyUI counts
        return Need(held=canvas_bytes + PIXEL_COPIES * n * h * w * 3 * 4, encode=float(encode) + vae_bytes,
                    sample=float(sample) + unet_bytes)

    return need
