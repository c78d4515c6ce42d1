"""Test-only nodes that make the awkward inputs real graphs can carry (half-precision IMAGE/LATENT as
`--fp16-intermediates` or other packs produce them, poisoned latents, wrong shapes), like ComfyUI's own testing pack.
Linked into the test host's custom_nodes/ by the test set-up only."""
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class CastLatent:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "dtype": (list(DTYPES),)}}

    def run(self, samples, dtype):
        return ({**samples, "samples": samples["samples"].to(DTYPES[dtype])},)


class CastImage:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "dtype": (list(DTYPES),)}}

    def run(self, image, dtype):
        return (image.to(DTYPES[dtype]),)


class PoisonLatent:
    """Puts NaN into the listed batch items, as a diverged sampler would."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "items": ("STRING", {"default": "0"})}}

    def run(self, samples, items):
        z = samples["samples"].clone()
        for i in (int(s) for s in items.split(",") if s.strip()):
            z[i, 0, 0, 0] = float("nan")
        return ({**samples, "samples": z},)


class ReshapeLatent:
    """A latent with another channel count or an empty batch."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "channels": ("INT", {"default": 16}),
                             "batch": ("INT", {"default": -1, "min": -1})}}

    def run(self, samples, channels, batch):
        z = samples["samples"]
        b = z.shape[0] if batch < 0 else batch
        return ({"samples": torch.randn((b, channels) + tuple(z.shape[2:]), generator=torch.Generator().manual_seed(0))},)


NODE_CLASS_MAPPINGS = {"PSTest_CastLatent": CastLatent, "PSTest_CastImage": CastImage,
                       "PSTest_PoisonLatent": PoisonLatent, "PSTest_ReshapeLatent": ReshapeLatent}
