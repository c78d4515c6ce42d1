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
        # the config is shared, not copied: newer ComfyUI's config answers None for any attribute it lacks, so
        # deepcopy would call its "__setstate__"
        memo = {id(base.model_config): base.model_config}
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


class LatentDigest:
    """Shows a sha256 of a LATENT's bytes (dtype, shape and values): two branches that must agree bit for bit."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def run(self, samples):
        import hashlib
        z = samples["samples"].detach().contiguous().cpu()
        digest = hashlib.sha256(f"{z.dtype}{tuple(z.shape)}".encode() + z.view(torch.uint8).numpy().tobytes())
        return {"ui": {"text": [digest.hexdigest()]}}


NODE_CLASS_MAPPINGS["PSTest_LatentDigest"] = LatentDigest


# --- Model patches and models as other packs hand them over (issue 10) ---------------------------------------------

class ProjectionPatch:
    """An attn2 output patch holding its own projection, as IPAdapter-style packs do (a plain object, so ComfyUI
    leaves its dtype alone): n + 0.1 * proj(n), with the projection in the dtype the pack loaded it in."""

    def __init__(self, dtype, channels=320):
        self.proj = torch.nn.Linear(channels, channels).to(dtype)

    def __call__(self, n, extra_options):
        return n + 0.1 * self.proj(n)


class Fp8ShiftPatch:
    """An attn2 output patch whose weights are stored fp8 (beside an fp8 UNet) and used as they are: torch refuses
    to mix them with the UNet's activations ("Promotion for Float8 Types is not supported")."""

    def __init__(self, channels=320):
        self.shift = (torch.rand(channels) * 0.01).to(torch.float8_e4m3fn)

    def __call__(self, n, extra_options):
        return n + self.shift


class HalfPatch:
    """Adds an attn2 output patch to a MODEL clone: a projection in half precision, or fp8 weights used raw."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "dtype": (["bf16", "fp16", "fp8_e4m3fn"],)}}

    def run(self, model, dtype):
        torch.manual_seed(0)
        patch = Fp8ShiftPatch() if dtype == "fp8_e4m3fn" else ProjectionPatch(DTYPES[dtype])
        clone = model.clone()
        clone.set_model_attn2_output_patch(patch)
        return (clone,)


class HalfWeightsControlNet:
    """A ControlNet copy whose network weights were cast to half while it still declares fp32 (what a loader or
    pack that casts behind ComfyUI's back hands over). The ControlNet it gets is not changed."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("CONTROL_NET",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control_net": ("CONTROL_NET",), "dtype": (["bf16", "fp16"],)}}

    def run(self, control_net, dtype):
        import comfy.model_patcher
        new = control_net.copy()
        new.control_model = _cast_module_copy(control_net.control_model, DTYPES[dtype])  # its .dtype stays fp32
        new.control_model_wrapped = comfy.model_patcher.ModelPatcher(
            new.control_model, load_device=control_net.load_device,
            offload_device=control_net.control_model_wrapped.offload_device)
        return (new,)


class LoadUnetAs:
    """UNETLoader with the storage dtype a flag such as --fp16-unet would give (ComfyUI's own loader, dtype given)."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths
        return {"required": {"unet_name": (folder_paths.get_filename_list("diffusion_models"),),
                             "dtype": (["fp16", "bf16", "fp32"],)}}

    def run(self, unet_name, dtype):
        import comfy.sd
        import folder_paths
        path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
        return (comfy.sd.load_diffusion_model(path, model_options={"dtype": DTYPES[dtype]}),)


NODE_CLASS_MAPPINGS.update({"PSTest_HalfPatch": HalfPatch, "PSTest_HalfWeightsControlNet": HalfWeightsControlNet,
                            "PSTest_LoadUnetAs": LoadUnetAs})


class HugeLatent:
    """A zero latent batch of any size that takes no memory (every item is a view of one [1, 4, h, w] tensor): a
    decode too big for this machine, without the machine having to hold its input."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 16384, "max": 1 << 20}),
                             "height": ("INT", {"default": 16384, "max": 1 << 20}),
                             "batch": ("INT", {"default": 1, "min": 1, "max": 1 << 20})}}

    def run(self, width, height, batch):
        return ({"samples": torch.zeros(1, 4, height // 8, width // 8).expand(batch, -1, -1, -1)},)


NODE_CLASS_MAPPINGS["PSTest_HugeLatent"] = HugeLatent


class HalfNormFilter:
    """A third-party filter whose own network (held by the class, as many packs hold a loaded model) is in bf16:
    an fp32 IMAGE into it fails in torch ("mixed dtype (CPU): expect parameter to have scalar type of Float"). It
    returns its output at its network's dtype, as such nodes do."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    NET = torch.nn.GroupNorm(1, 3).to(torch.bfloat16)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        with torch.no_grad():
            return (self.NET(image.movedim(-1, 1)).movedim(1, -1).clamp(0, 1),)


class CastMask:
    """A MASK at another dtype (segmenters and video loaders hand on fp16/bf16 masks)."""
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MASK",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "dtype": (list(DTYPES),)}}

    def run(self, image, dtype):
        return (image[..., 0].to(DTYPES[dtype]),)


NODE_CLASS_MAPPINGS.update({"PSTest_HalfNormFilter": HalfNormFilter, "PSTest_CastMask": CastMask})

from .impact_style import NODE_CLASS_MAPPINGS as _IMPACT_STYLE  # noqa: E402  (SEGS as Impact Pack makes and reads them)

NODE_CLASS_MAPPINGS.update(_IMPACT_STYLE)

from .gguf_style import NODE_CLASS_MAPPINGS as _GGUF_STYLE  # noqa: E402  (GGUF models as ComfyUI-GGUF lays them out)

NODE_CLASS_MAPPINGS.update(_GGUF_STYLE)
