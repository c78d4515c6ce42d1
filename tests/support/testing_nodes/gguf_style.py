"""A GGUF UNet loader laid out as ComfyUI-GGUF lays its models out, without importing it: every tensor of the file
is a `GGMLTensor` (a torch.Tensor subclass holding the file's bytes, with `tensor_type`, a GGMLQuantizationType, and
`tensor_shape`, the logical shape its `.shape` answers), quantized ones as packed uint8 blocks; the model is built
by comfy.sd.load_diffusion_model_state_dict with ops subclassing comfy.ops.manual_cast that dequantize each layer's
weights to the input's dtype when it runs. Q8_0 and Q4_0 are dequantized here in torch."""
import functools

import torch

try:
    import gguf
except ImportError:  # the test tools were not installed: the loader is simply not offered
    gguf = None


class GGMLTensor(torch.Tensor):
    """Packed GGUF storage: `.dtype` is the bytes' (uint8) for quantized types, `.shape` the logical shape."""

    def __new__(cls, data, *, tensor_type, tensor_shape):
        return super().__new__(cls, data)

    def __init__(self, data, *, tensor_type, tensor_shape):
        super().__init__()
        self.tensor_type = tensor_type
        self.tensor_shape = tensor_shape

    def to(self, *args, **kwargs):
        new = super().to(*args, **kwargs)
        new.tensor_type = getattr(self, "tensor_type", None)
        new.tensor_shape = getattr(self, "tensor_shape", new.data.shape)
        return new

    def clone(self, *args, **kwargs):
        return self  # as ComfyUI-GGUF: ComfyUI's weight backups keep the packed tensor itself

    def detach(self, *args, **kwargs):
        return self

    @property
    def shape(self):
        return getattr(self, "tensor_shape", self.size())


PLAIN = {"F32", "F16"}


def is_packed(t) -> bool:
    return getattr(getattr(t, "tensor_type", None), "name", "F32") not in PLAIN


def dequantize(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values of a GGMLTensor at `dtype` (a plain tensor)."""
    raw = t.as_subclass(torch.Tensor)
    kind = t.tensor_type.name
    if kind in PLAIN:
        return raw.to(dtype).reshape(t.tensor_shape)
    if kind == "Q8_0":
        blocks = raw.reshape(-1, 34)
        scale = blocks[:, :2].contiguous().view(torch.float16).float()
        values = blocks[:, 2:].contiguous().view(torch.int8).float()
    elif kind == "Q4_0":
        blocks = raw.reshape(-1, 18)
        scale = blocks[:, :2].contiguous().view(torch.float16).float()
        q = blocks[:, 2:]
        values = torch.cat([q & 0x0F, q >> 4], dim=1).float() - 8
    else:
        raise NotImplementedError(f"dequantizing {kind} is not implemented by the test loader")
    return (values * scale).to(dtype).reshape(t.tensor_shape)


class _Layer:
    """What ComfyUI-GGUF's layers do: take the file's tensors as they are, and dequantize per call."""
    comfy_cast_weights = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("weight", "bias"):
            value = state_dict.get(prefix + name)
            if value is not None:
                setattr(self, name, torch.nn.Parameter(value, requires_grad=False))
            elif getattr(self, name, None) is not None:
                missing_keys.append(prefix + name)

    def _weights(self, input):
        weight = dequantize(self.weight, input.dtype).to(input.device)
        bias = dequantize(self.bias, input.dtype).to(input.device) if self.bias is not None else None
        return weight, bias

    def forward_comfy_cast_weights(self, input, *args, **kwargs):
        return self._quantized_forward(input, *self._weights(input))


@functools.lru_cache(maxsize=1)
def gguf_ops():
    """The ops class (made on first use: ComfyUI is imported by then, and unit tests importing this need none)."""
    import comfy.ops
    manual_cast = comfy.ops.manual_cast

    class GGUFOps(manual_cast):
        class Linear(_Layer, manual_cast.Linear):
            def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
                torch.nn.Module.__init__(self)  # the file's tensors become the weights: nothing to allocate
                self.in_features, self.out_features = in_features, out_features
                self.weight = self.bias = None

            def _quantized_forward(self, input, weight, bias):
                return torch.nn.functional.linear(input, weight, bias)

        class Conv2d(_Layer, manual_cast.Conv2d):
            def _quantized_forward(self, input, weight, bias):
                return self._conv_forward(input, weight, bias)

        class GroupNorm(_Layer, manual_cast.GroupNorm):
            def _quantized_forward(self, input, weight, bias):
                return torch.nn.functional.group_norm(input, self.num_groups, weight, bias, self.eps)

        class LayerNorm(_Layer, manual_cast.LayerNorm):
            def _quantized_forward(self, input, weight, bias):
                return torch.nn.functional.layer_norm(input, self.normalized_shape, weight, bias, self.eps)

            def _weights(self, input):
                return (None, None) if self.weight is None else super()._weights(input)

    return GGUFOps


def gguf_state_dict(path: str) -> dict:
    """name -> GGMLTensor for every tensor of a GGUF file (its bytes, its type, its logical shape)."""
    import warnings
    reader = gguf.GGUFReader(path)
    sd = {}
    for tensor in reader.tensors:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            data = torch.from_numpy(tensor.data)
        shape = torch.Size(int(v) for v in reversed(tensor.shape))
        if tensor.tensor_type.name in PLAIN:
            data = data.view(*shape)
        sd[tensor.name] = GGMLTensor(data, tensor_type=tensor.tensor_type, tensor_shape=shape)
    return sd


def _gguf_files() -> dict:
    """name -> path of the .gguf files in the diffusion_models folders (ComfyUI lists no .gguf by itself)."""
    import os
    import folder_paths
    return {n: os.path.join(d, n) for d in folder_paths.get_folder_paths("diffusion_models") if os.path.isdir(d)
            for n in os.listdir(d) if n.endswith(".gguf")}


class UnetLoaderGGUF:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (sorted(_gguf_files()),)}}

    def run(self, unet_name):
        import comfy.sd
        path = _gguf_files()[unet_name]
        model = comfy.sd.load_diffusion_model_state_dict(gguf_state_dict(path),
                                                         model_options={"custom_operations": gguf_ops()})
        if model is None:
            raise RuntimeError(f"could not detect the model type of {unet_name}")
        return (model,)


class TiedWeightPatch:
    """An attn2 output patch that reuses one of the UNet's own weights by reading it (as code tying a projection to an
    existing layer does, e.g. a language model's head reusing its embedding): n + 0.1 * n @ W.T, with W cast to the
    activations' dtype. On a GGUF model the cast turns the packed bytes into floats: a plain matmul of the wrong
    shape."""

    def __init__(self, weight):
        self.weight = weight

    def __deepcopy__(self, memo):  # clones of the MODEL share the weight it reuses (ModelPatcher.clone deep-copies)
        return TiedWeightPatch(self.weight)

    def __call__(self, n, extra_options):
        return n + 0.1 * torch.nn.functional.linear(n, self.weight.to(n.dtype))


class TieWeight:
    CATEGORY = "precision safe testing"
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)
    WEIGHT = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.weight"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def run(self, model):
        import comfy.utils
        clone = model.clone()
        clone.set_model_attn2_output_patch(TiedWeightPatch(comfy.utils.get_attr(model.model, self.WEIGHT)))
        return (clone,)


NODE_CLASS_MAPPINGS = {"PSTest_UnetLoaderGGUF": UnetLoaderGGUF, "PSTest_TieWeight": TieWeight} if gguf else {}
