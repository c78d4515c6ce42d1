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


# --- Fault-corpus nodes: inputs as a third-party pack or loader would hand them over ---------------------------------

def _cast_module_copy(module, dtype):
    """A deep copy of `module` whose float parameters/buffers are `dtype`, made without a full-precision copy."""
    import copy
    memo = {}
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point() and id(t) not in memo:
            cast = t.detach().to(dtype)
            memo[id(t)] = torch.nn.Parameter(cast, requires_grad=False) if isinstance(t, torch.nn.Parameter) else cast
    return copy.deepcopy(module, memo)


class HalfWeightsVAE:
    """A VAE copy whose weights were cast to half while `vae_dtype` still says fp32: what a third-party loader or
    patch that casts weights behind ComfyUI's back hands over. Core's VAEDecode then casts the latent to the stated
    fp32 and the first conv meets half weights. The VAE it gets is not changed."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("VAE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("VAE",), "dtype": (["bf16", "fp16"],)}}

    def run(self, vae, dtype):
        import copy
        import comfy.model_patcher
        new = copy.copy(vae)
        new.first_stage_model = _cast_module_copy(vae.first_stage_model, DTYPES[dtype])
        new.patcher = comfy.model_patcher.ModelPatcher(new.first_stage_model, load_device=vae.patcher.load_device,
                                                       offload_device=vae.patcher.offload_device)
        return (new,)


class HalfWeightsModel:
    """A MODEL whose diffusion-model weights were cast to half while the model still reports fp32 (no manual cast):
    core's KSampler feeds the UNet fp32 and the first conv meets half weights. The MODEL it gets is not changed."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "dtype": (["bf16", "fp16"],)}}

    def run(self, model, dtype):
        import copy
        import comfy.model_patcher
        base = model.model
        memo = {}
        for t in list(base.diffusion_model.parameters()):
            if t.is_floating_point() and id(t) not in memo:
                memo[id(t)] = torch.nn.Parameter(t.detach().to(DTYPES[dtype]), requires_grad=False)
        new_base = copy.deepcopy(base, memo)  # diffusion_model.dtype stays fp32: the model misreports its weights
        return (comfy.model_patcher.ModelPatcher(new_base, load_device=model.load_device,
                                                 offload_device=model.offload_device),)


class PoisonImage:
    """Puts NaN into the listed batch items of an IMAGE."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "items": ("STRING", {"default": "0"})}}

    def run(self, image, items):
        x = image.clone()
        for i in (int(s) for s in items.split(",") if s.strip()):
            x[i] = float("nan")
        return (x,)


NODE_CLASS_MAPPINGS.update({"PSTest_HalfWeightsVAE": HalfWeightsVAE, "PSTest_HalfWeightsModel": HalfWeightsModel,
                            "PSTest_PoisonImage": PoisonImage})

from .impact_style import NODE_CLASS_MAPPINGS as _IMPACT_STYLE  # noqa: E402  (SEGS as Impact Pack makes and reads them)

NODE_CLASS_MAPPINGS.update(_IMPACT_STYLE)
