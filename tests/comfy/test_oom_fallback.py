"""SafeVAEDecode's out-of-memory fallback with a real VAE: the first full decode raises the OOM error ComfyUI
catches (injected: a CPU cannot run out of GPU memory on demand), the tiled decode runs and the node says so."""
import copy

import torch


def test_oom_falls_back_to_tiled_and_is_reported(comfy):
    import comfy.model_management as mm
    import nodes
    vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[2]
    vae_decode = comfy.pack_module("nodes.host.vae_decode")
    report = comfy.pack_module("nodes.precision.report")

    class FirstDecodeOOM(type(vae)):
        def decode(self, samples_in, vae_options={}):
            raise mm.OOM_EXCEPTION("CUDA out of memory (injected)")

    limited = copy.copy(vae)
    limited.__class__ = FirstDecodeOOM
    latent = torch.randn(1, 4, 12, 12)
    record = report.PrecisionRecord("Safe VAE Decode #t")
    img = vae_decode.decode_once(limited, latent, record)
    assert record.notes == ["out of memory: decoded 1 item(s) tiled"]
    ref = vae.decode(latent)
    assert img.shape == ref.shape and torch.isfinite(img).all()
    torch.testing.assert_close(img, ref, atol=0.1, rtol=0)  # tiled decode: the same image up to seams
