"""Quantized versions of the tiny UNet, made on the spot from diffusion_models/tiny_sd15_unet.safetensors (fp16) in
about a second each, for the quantized-weights tests:

- tiny_sd15_unet_q8_0.gguf / tiny_sd15_unet_q4_0.gguf: GGUF files written with the `gguf` package, laid out as
  ComfyUI-GGUF's converter lays them out: 2-D weights whose rows split into 32-value blocks quantized (Q8_0 or Q4_0),
  conv kernels F16, 1-D tensors (biases, norms) F32. `keep` names weights left at F16 (the converter's keep list).
- tiny_sd15_unet_fp8_scaled.safetensors: an "fp8 scaled" checkpoint as ComfyUI reads them: every Linear weight
  stored fp8_e4m3fn divided by a per-layer `scale_weight`, and the `scaled_fp8` marker tensor; the rest fp16.
- tiny_sd15_unet_mixed_fp8.safetensors: a mixed-precision checkpoint with `_quantization_metadata` (ComfyUI's
  QuantizedTensor layouts): the listed Linear layers float8_e4m3fn with a `weight_scale`, the rest fp16.

Plain fp8 storage needs no file: core UNETLoader's weight_dtype fp8_e4m3fn / fp8_e5m2 loads the fp16 UNet so.
"""
from __future__ import annotations

import json
import os

UNET = "tiny_sd15_unet.safetensors"
GGUF = {"Q8_0": "tiny_sd15_unet_q8_0.gguf", "Q4_0": "tiny_sd15_unet_q4_0.gguf"}
FP8_SCALED = "tiny_sd15_unet_fp8_scaled.safetensors"
MIXED = "tiny_sd15_unet_mixed_fp8.safetensors"


def _unet(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, UNET))


def quantizable(name: str, t) -> bool:
    """What ComfyUI-GGUF's converter quantizes: 2-D weights whose rows are whole 32-value blocks."""
    return name.endswith(".weight") and t.ndim == 2 and t.shape[-1] % 32 == 0


def write_gguf(path: str, sd: dict, qtype_name: str, keep=()) -> dict:
    """Write `sd` as a GGUF file; returns name -> GGML type name of every tensor written."""
    import gguf
    import numpy as np
    qtype = gguf.GGMLQuantizationType[qtype_name]
    writer = gguf.GGUFWriter(path + ".tmp", arch="sd1")
    types = {}
    for name, t in sd.items():
        values = t.float().numpy()
        if quantizable(name, t) and name not in keep:
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
            types[name] = qtype_name
        elif t.ndim > 1:
            writer.add_tensor(name, values.astype(np.float16))
            types[name] = "F16"
        else:
            writer.add_tensor(name, values.astype(np.float32))
            types[name] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(path + ".tmp", path)
    return types


def fp8_scaled(sd: dict) -> dict:
    import torch
    out = {}
    for name, t in sd.items():
        if quantizable(name, t):
            scale = t.float().abs().max() / torch.finfo(torch.float8_e4m3fn).max
            out[name] = (t.float() / scale).to(torch.float8_e4m3fn)
            out[name[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[name] = t
    out["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)  # 2 values: no fp8 input scaling
    return out


def mixed_fp8(sd: dict) -> tuple[dict, dict]:
    """(state dict, safetensors metadata) of a `_quantization_metadata` checkpoint."""
    import torch
    out, layers = {}, {}
    for name, t in sd.items():
        if quantizable(name, t):
            scale = t.float().abs().max() / torch.finfo(torch.float8_e4m3fn).max
            out[name] = (t.float() / scale).to(torch.float8_e4m3fn)
            out[name[: -len("weight")] + "weight_scale"] = scale.reshape(())
            layers[name[: -len(".weight")]] = {"format": "float8_e4m3fn"}
        else:
            out[name] = t
    return out, {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


def _save(path, sd, metadata=None):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)


def ensure(folder: str, with_gguf: bool = True) -> None:
    """Every file above in `folder` (the host's models/diffusion_models), made only when missing; `with_gguf` False:
    the safetensors ones only (no `gguf` package needed)."""
    sd = None
    for qtype, name in GGUF.items() if with_gguf else ():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            sd = sd if sd is not None else _unet(folder)
            write_gguf(path, sd, qtype)
    if not os.path.exists(os.path.join(folder, FP8_SCALED)):
        sd = sd if sd is not None else _unet(folder)
        _save(os.path.join(folder, FP8_SCALED), fp8_scaled(sd))
    if not os.path.exists(os.path.join(folder, MIXED)):
        sd = sd if sd is not None else _unet(folder)
        _save(os.path.join(folder, MIXED), *mixed_fp8(sd))
