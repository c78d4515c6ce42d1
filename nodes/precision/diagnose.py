"""Explain a torch dtype or shape error raised deep inside a model: which submodule, what it expected, which input,
the fix.

Free when nothing fails: no hooks, no patching, only a try/except. The work happens after a dtype error has
escaped: the exception's traceback still holds every Python frame it went through, so the innermost frame
whose `self` is a submodule of the given models says where it happened, and that frame's arguments say what
tensor the submodule got.
"""
from __future__ import annotations

import inspect
import itertools
import re
from typing import Mapping, Optional

import torch

from .context import ROLES, dtype_name
from .errors import PrecisionError
from .reach import held, storage_of, weights_dtype

# torch's dtype mismatch messages (CPU and CUDA wordings). Group `inp` is the dtype of the tensor fed in, `own`
# the dtype of the weight/buffer/other operand it met; the order was checked per op (see notes/detector.md).
_FAMILIES = [re.compile(p) for p in (
    r"mat1 and mat2 must have the same dtype, but got (?P<inp>\w+) and (?P<own>\w+)",
    r"self and mat2 must have the same dtype(?:, but got (?P<inp>\w+) and (?P<own>\w+))?",
    r"expected m(?:at)?1 and m(?:at)?2 to have the same dtype, but got: (?P<inp>[\w:]+) != (?P<own>[\w:]+)",
    r"expected scalar type (?P<inp>\w+) but found (?P<own>\w+)",
    r"Input type \((?P<inp>[\w.:]+)\) and (?:bias|weight) type \((?P<own>[\w.:]+)\) should be the same",
    r"mixed dtype \(CPU\): expect parameter to have scalar type of (?P<inp>\w+)",
    r"Expected query, key, and value to have the same dtype, but got query\.dtype: (?P<inp>[\w:]+) "
    r"key\.dtype: (?P<own>[\w:]+)",
    r"Index put requires the source and destination dtypes match, got (?P<own>\w+) for the destination "
    r"and (?P<inp>\w+) for the source",
    r"expected dtype (?P<own>[\w:]+) for `end` but got dtype (?P<inp>[\w:]+)",
    r"Promotion for Float8 Types is not supported, attempted to promote (?P<inp>\w+) and (?P<own>\w+)",
)]
_NUMPY = re.compile(r"Got unsupported ScalarType (?P<inp>\w+)")
# torch._scaled_mm (fp8 matmul) refusing an operand's dtype: CUDA's and the CPU's wordings
_FP8_MM = [(re.compile(p), part) for p, part in (
    (r"Bias must be (?:BFloat16 or Half|[\w ]+?),? but got (?P<got>\w+)", "bias"),
    (r"Bias is not supported when out_dtype is set to (?P<got>\w+)", "bias"),
    (r"scale_a and scale_b must be float|scales should be float", "scale"),
)]
_SHORT = {"half": "fp16", "float16": "fp16", "float": "fp32", "float32": "fp32", "bfloat16": "bf16",
          "double": "float64"}


def _short(token: Optional[str]) -> Optional[str]:
    """'c10::Half', 'Half', 'torch.cuda.HalfTensor', 'CPUBFloat16Type' -> the pack's names (fp16, bf16, fp32)."""
    if not token:
        return None
    t = token.replace("c10::", "").replace("torch.", "").replace("cuda.", "")
    t = re.sub(r"^(?:CPU|CUDA|MPS|XPU)(?=[A-Z])", "", t)
    t = re.sub(r"(?:Tensor|Type)$", "", t).lower()
    return _SHORT.get(t, t)


def parse_dtype_error(exc: BaseException) -> Optional[dict]:
    """{'inp': .., 'own': .., 'numpy': bool} for a torch dtype mismatch, None for any other error."""
    if not isinstance(exc, (RuntimeError, TypeError)) or isinstance(exc, PrecisionError):
        return None
    text = str(exc)
    for pattern in _FAMILIES:
        m = pattern.search(text)
        if m:
            inp, own = _short(m.group("inp")), _short(m.groupdict().get("own"))
            if inp and inp.startswith("float8") and not (own or "").startswith("float8"):
                inp, own = own, inp  # fp8 is only ever stored: it is the weights' side, whatever order torch names
            return {"inp": inp, "own": own, "numpy": False}
    m = _NUMPY.search(text)
    return {"inp": _short(m.group("inp")), "own": None, "numpy": True} if m else None


def parse_fp8_mm_error(exc: BaseException) -> Optional[dict]:
    """{'part': 'bias' | 'scale', 'got': dtype name or None} for torch._scaled_mm refusing an operand's dtype."""
    if not isinstance(exc, (RuntimeError, ValueError)) or isinstance(exc, PrecisionError):
        return None
    for pattern, part in _FP8_MM:
        m = pattern.search(str(exc))
        if m:
            return {"part": part, "got": _short(m.groupdict().get("got"))}
    return None


class DtypeMismatchError(PrecisionError):
    """A PrecisionError for a dtype clash inside a model, with what was found as fields (None = unknown)."""

    def __init__(self, node: str, problem: str, fix: str, *, module_path=None, weight_dtype=None,
                 input_dtype=None, graph_inputs=(), role=None, torch_message=""):
        super().__init__(node, problem, fix)
        self.module_path = module_path
        self.weight_dtype = weight_dtype
        self.input_dtype = input_dtype
        self.graph_inputs = list(graph_inputs)
        self.role = role
        self.torch_message = torch_message


def _first_tensor_arg(frame) -> Optional[torch.Tensor]:
    """The first float tensor among a frame's arguments (`input`, `x`, or inside *args), in signature order."""
    code = frame.f_code
    n = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS)
    values = frame.f_locals
    for name in code.co_varnames[:n]:
        if name == "self":
            continue
        value = values.get(name)
        for t in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                return t
    return None


def _code_of(obj):
    """The code object a non-module callable runs (a function, a method, or an object's __call__)."""
    fn = getattr(obj, "__func__", obj)
    code = getattr(fn, "__code__", None)
    return code if code is not None else getattr(getattr(type(obj), "__call__", None), "__code__", None)


def _locate(tb, modules: Mapping) -> Optional[tuple]:
    """(key, qualified path, module, tensor arg) of the innermost traceback frame run by one of `modules` (values
    are nn.Modules, matched with their submodules, or other callables such as model patches, matched by the frame's
    `self` or code)."""
    owners, codes = {}, {}  # built only now, on failure: named_modules is a full walk of the model
    for key, root in modules.items():
        if isinstance(root, torch.nn.Module):
            for sub, m in root.named_modules():
                owners.setdefault(id(m), (key, f"{key}.{sub}" if sub else key, m))
        elif root is not None:
            owners.setdefault(id(root), (key, key, root))
            code = _code_of(root)
            if code is not None:
                codes.setdefault(code, (key, key, root))
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first: F.group_norm has no `self`, GroupNorm.forward does
        hit = codes.get(frame.f_code)
        if hit is None and "self" in frame.f_code.co_varnames:
            owner = frame.f_locals.get("self")
            hit = owners.get(id(owner))
            if hit is not None and hit[2] is not owner:
                hit = None
        if hit is not None:
            return hit + (_first_tensor_arg(frame),)
    return None


def _own_dtype(module) -> Optional[str]:
    """The module's own weight dtype (its direct parameters, then buffers, then any descendant's); for another
    callable (a patch), the dtype of the weights it holds."""
    if not isinstance(module, torch.nn.Module):
        dtype = weights_dtype(module)
        return dtype_name(dtype) if dtype is not None else None
    for t in itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False), module.parameters()):
        if t.is_floating_point():
            return dtype_name(t.dtype)
    return None


def _graph_tensors(inputs: Mapping):
    """(name, tensor) for each tensor input, and one level into dicts (a LATENT is {'samples': tensor})."""
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, Mapping):
            for sub, t in value.items():
                if isinstance(t, torch.Tensor):
                    yield f"{name}.{sub}", t


def _source(tensor, dtype: Optional[str], inputs: Mapping) -> tuple[list, bool]:
    """Graph inputs the tensor came from, and whether that is certain (the same tensor/storage) or a dtype guess."""
    named = list(_graph_tensors(inputs))
    if tensor is not None:
        for name, t in named:
            if t is tensor or (t.numel() and t.device == tensor.device and t.data_ptr() == tensor.data_ptr()):
                return [name], True
    return [name for name, t in named if dtype_name(t.dtype) == dtype], False


def _role_of(key: Optional[str], roles: Mapping) -> Optional[str]:
    if key is None:
        return None
    return roles.get(key) or (key if key in ROLES else None)


def explain(exc: BaseException, node: str, modules: Optional[Mapping] = None, inputs: Optional[Mapping] = None,
            roles: Optional[Mapping] = None) -> Optional[DtypeMismatchError]:
    """The explained error for a torch dtype error, or None when `exc` is not one."""
    found = parse_dtype_error(exc)
    if found is None:
        mm = parse_fp8_mm_error(exc)
        return _explain_fp8_mm(exc, mm, node, modules or {}, roles or {}) if mm else None
    modules, inputs, roles = modules or {}, inputs or {}, roles or {}
    site = _locate(exc.__traceback__, modules)
    inp, own = found["inp"], found["own"]
    if site is not None:
        key, path, module, tensor = site
        own = _own_dtype(module) or own
        # the first tensor argument is the input that clashed, unless it already matches the weights: then some
        # other operand clashed and torch's message names its dtype
        if tensor is not None and (dtype_name(tensor.dtype) != own or not inp):
            inp = dtype_name(tensor.dtype)
        elif tensor is not None:
            tensor = None
        where = f"{path} ({type(module).__name__}, weights {own or 'unknown'})"
    else:
        tensor, path = None, None
        keys = [k for k, m in modules.items() if m is not None]
        # no frame of theirs: guess the model by the weight dtype torch named, when only one fits
        fits = [k for k in keys if own and _own_dtype(modules[k]) == own]
        key = keys[0] if len(keys) == 1 else (fits[0] if len(fits) == 1 else None)
        where = (f"{'likely ' if len(keys) > 1 else ''}'{key}' (submodule unknown)" if key
                 else "the model (submodule unknown)")

    names, certain = _source(tensor, inp, inputs)
    if certain:
        origin = f"that is graph input '{names[0]}'"
    elif len(names) == 1:
        origin = f"likely graph input '{names[0]}' (the only {inp} input)"
    elif names:
        origin = "likely one of graph inputs " + ", ".join(f"'{n}'" for n in names) + f" (all {inp})"
    else:
        origin = f"no graph input is {inp}, so the model made it"

    role = _role_of(key, roles)
    role_txt = f"Precision Policy's '{role}'" if role else "the Precision Policy role that runs this model"
    if (own or "").startswith("float8") and (inp or "fp32") in ("fp16", "bf16", "fp32"):
        # fp8 is storage only: code used fp8 weights raw (a LoRA delta or a patch added to them), no dtype of the
        # role's makes torch compute in fp8; weights at the compute dtype do
        problem = (f"dtype mismatch in {where}: its input is {inp or 'of a wider dtype'}, its weights {own}; fp8 is a "
                   f"storage dtype torch does not compute in, ComfyUI's ops cast it per layer, and this code used it "
                   f"raw; {origin}")
        fix = (f"pass the MODEL through Precision Policy with unet_dtype {inp or 'bf16'} after the LoRA / patch that "
               f"touches these weights: its clone merges weight patches at the compute dtype, not into the {own} "
               f"storage; or load the model at fp16/bf16 (UNETLoader weight_dtype default)")
        problem += f" (torch: {str(exc).splitlines()[0]})."
        return DtypeMismatchError(node, problem, fix + ".", module_path=path, weight_dtype=own, input_dtype=inp,
                                  graph_inputs=names, role=role, torch_message=str(exc))
    if found["numpy"]:
        # numpy has no bf16: only running the role at another dtype helps, casting inputs to it would not
        problem = f"a {inp} tensor reached numpy, which has no {inp} type, in {where}; {origin}"
        fix = f"set {role_txt} to fp16 or fp32"
    else:
        problem = f"dtype mismatch in {where}: its input is {inp or 'of another dtype'}; {origin}"
        fix = f"set {role_txt} to {inp or 'the input dtype'} so the model runs at the input's dtype"
        if names:
            fix += f", or set on_mismatch to 'cast' so the input is converted to {own or 'the model dtype'} first"
        else:
            fix += " (casting the node's inputs cannot help: the tensor was made inside the model)"
    problem += f" (torch: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})."
    return DtypeMismatchError(node, problem, fix + ".", module_path=path, weight_dtype=own, input_dtype=inp,
                              graph_inputs=names, role=role, torch_message=str(exc))


def _scale_dtype(module) -> Optional[str]:
    """The dtype of a layer's fp8 scale (ComfyUI's scaled fp8 `scale_weight`, a QuantizedTensor's scale)."""
    for t in (getattr(module, "scale_weight", None), getattr(module, "weight_scale", None),
              getattr(getattr(module, "weight", None), "_layout_params", {}).get("scale")):
        if isinstance(t, torch.Tensor):
            return dtype_name(t.dtype)
    return None


def _explain_fp8_mm(exc, found: dict, node: str, modules: Mapping, roles: Mapping) -> DtypeMismatchError:
    """torch._scaled_mm (the fp8 matmul of fp8 weights on GPUs that have it) refused a bias or a scale."""
    site = _locate(exc.__traceback__, modules)
    key, path, module, tensor = site if site is not None else (None, None, None, None)
    where = f"{path} ({type(module).__name__})" if site is not None else "the model (submodule unknown)"
    compute = dtype_name(tensor.dtype) if tensor is not None else None
    role = _role_of(key, roles) or "unet"
    fast = ("or load the model without fast fp8 matmul (UNETLoader weight_dtype fp8_e4m3fn, not fp8_e4m3fn_fast; "
            "no --fast fp8_matrix_mult): its weights are then dequantized per layer")
    if found["part"] == "bias":
        got = found["got"] or "another dtype"
        problem = (f"fp8 matmul (torch._scaled_mm) in {where} refused a {got} bias: it takes a bf16 or fp16 bias and "
                   f"output, and the layer computes at {compute or got}")
        fix = (f"set Precision Policy's '{role}' to bf16 (fp16 where the GPU has no bf16): ComfyUI then casts the bias "
               f"and the output to it; {fast}")
    else:
        scale = _scale_dtype(module) if module is not None else None
        problem = (f"fp8 matmul (torch._scaled_mm) in {where} refused its scales: it takes fp32 scales, and this "
                   f"layer's scale is {scale or 'of another dtype'} (the checkpoint's scale_weight / weight_scale)")
        fix = f"save the checkpoint's scale tensors as fp32 (a scale is one number: no loss); {fast}"
    problem += f" (torch: {str(exc).splitlines()[0]})."
    return DtypeMismatchError(node, problem, fix + ".", module_path=path, weight_dtype="float8", input_dtype=compute,
                              role=role, torch_message=str(exc))


class explain_dtype_errors:
    """Context manager: a torch dtype error escaping the block is re-raised as a DtypeMismatchError (a
    PrecisionError) `from` the original; every other exception passes through as the same object.

        with explain_dtype_errors(node="SafeVAEDecode", modules={"vae": vae}, inputs={"samples": z},
                                  roles={"vae": "vae"}):
            image = vae.decode(z)

    `modules`: key -> nn.Module, the key prefixes paths; `roles`: key -> PrecisionPolicy role (a key that is
    itself a role name needs no entry); `inputs`: graph input name -> tensor (or dict of tensors).
    """

    __slots__ = ("node", "modules", "inputs", "roles")

    def __init__(self, node: str, modules: Optional[Mapping] = None, inputs: Optional[Mapping] = None,
                 roles: Optional[Mapping] = None):
        self.node, self.modules, self.inputs, self.roles = node, modules, inputs, roles

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, (RuntimeError, TypeError, ValueError)):
            return False
        try:
            err = explain(exc, self.node, self.modules, self.inputs, self.roles)
        except Exception:  # a bug in the explainer must never hide the user's real error
            err = None
        if err is None:
            return False
        raise err from exc


# -- shape mismatches: a tensor of another model family (a 16-channel SD3 latent into an SD1.5 VAE, SDXL conditioning
# into an SD1.5 UNet). Group `want` is what the layer was built for, `got` (or `shape`) what its input has.
_SHAPE_FAMILIES = [(re.compile(p), axis) for p, axis in (
    (r"weight of size \[[\d, ]+\], expected input\[(?P<shape>[\d, ]+)\] to have (?P<want>\d+) channels, but got "
     r"(?P<got>\d+) channels instead", "channels"),
    (r"Expected weight to be a vector of size equal to the number of channels in input, but got weight of shape "
     r"\[(?P<want>\d+)\] and input of shape \[(?P<shape>[\d, ]+)\]", "channels"),
    (r"Expected number of channels in input to be divisible by num_groups, but got input of shape "
     r"\[(?P<shape>[\d, ]+)\]", "channels"),
    (r"mat1 and mat2 shapes cannot be multiplied \(\d+x(?P<got>\d+) and (?P<want>\d+)x\d+\)", "features"),
    (r"Given normalized_shape=\[(?:\d+, )*(?P<want>\d+)\], expected input with shape \[[^\]]*\], but got input of "
     r"size\s*\[(?P<shape>[\d, ]+)\]", "features"),
    (r"Expected \d+D \(unbatched\) or (?P<want>\d+)D \(batched\) input to conv\d+d, but got input of size: "
     r"\[(?P<shape>[\d, ]+)\]", "dims"),
)]
_AXIS = {"channels": 1, "features": -1}


def parse_shape_error(exc: BaseException) -> Optional[dict]:
    """{'axis': 'channels' | 'features' | 'dims', 'want': int | None, 'got': int} for a torch shape mismatch at a
    layer's input, None for any other error."""
    if not isinstance(exc, RuntimeError) or isinstance(exc, PrecisionError):
        return None
    text = str(exc)
    for pattern, axis in _SHAPE_FAMILIES:
        m = pattern.search(text)
        if m is None:
            continue
        found = m.groupdict()
        shape = [int(n) for n in found["shape"].split(",")] if found.get("shape") else None
        got = int(found["got"]) if found.get("got") else (len(shape) if axis == "dims" else shape[_AXIS[axis]])
        return {"axis": axis, "want": int(found["want"]) if found.get("want") else None, "got": got}
    return None


def _size(t: torch.Tensor, axis: str) -> Optional[int]:
    if axis == "dims":
        return t.ndim
    return t.shape[_AXIS[axis]] if t.ndim >= 2 else None


def _takes(module: torch.nn.Module, axis: str) -> Optional[int]:
    """What the module was built for along `axis`, from its own attributes (conv, linear, norms)."""
    if axis == "channels":
        value = getattr(module, "in_channels", None) or getattr(module, "num_channels", None)
    elif axis == "features":
        shape = getattr(module, "normalized_shape", None)
        value = getattr(module, "in_features", None) or (shape[-1] if shape else None)
    else:
        value = None
    return value if isinstance(value, int) else None


class ShapeMismatchError(PrecisionError):
    """A PrecisionError for a tensor whose channels/features/dimensions do not fit the layer it reached."""

    def __init__(self, node: str, problem: str, fix: str, *, module_path=None, axis=None, want=None, got=None,
                 graph_inputs=(), torch_message=""):
        super().__init__(node, problem, fix)
        self.module_path, self.axis, self.want, self.got = module_path, axis, want, got
        self.graph_inputs = list(graph_inputs)
        self.torch_message = torch_message


def _named(names) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _packed_weight(site, modules: Mapping, want: Optional[int], got: int) -> Optional[tuple]:
    """(name, tensor) of a packed quantized weight (GGUF blocks) whose stored rows are `want` long where its logical
    rows are `got`: what a plain matmul meets when code uses such a weight itself instead of calling its layer."""
    def fits(t) -> bool:
        return (isinstance(t, torch.Tensor) and storage_of(t).packed and t.dim() == 2 and t.size(-1) == want
                and int(t.shape[-1]) == got)
    names = {}
    for key, root in modules.items():
        if isinstance(root, torch.nn.Module):
            for n, t in root.named_parameters():
                names.setdefault(id(t), (f"{key}.{n}", t))
    owner = site[2] if site is not None else None
    candidates = list(owner.parameters()) if isinstance(owner, torch.nn.Module) else list(held(owner)) if owner else []
    for t in candidates:
        if fits(t):
            return names.get(id(t), ("a weight it holds", t))
    return next(((n, t) for n, t in names.values() if fits(t)), None)


def explain_shape(exc: BaseException, node: str, modules: Optional[Mapping] = None,
                  inputs: Optional[Mapping] = None, roles: Optional[Mapping] = None,
                  families: Optional[Mapping] = None) -> Optional[ShapeMismatchError]:
    """The explained error for a torch shape mismatch at a layer's input, or None when `exc` is not one.

    `families`: (channels, spatial dims) -> names of the model families whose latents have that shape (ComfyUI's
    latent formats), so a channel mismatch on a latent can say which kind of model made it and which it meets."""
    found = parse_shape_error(exc)
    if found is None:
        return None
    modules, inputs, roles, families = modules or {}, inputs or {}, roles or {}, families or {}
    axis, want, got = found["axis"], found["want"], found["got"]
    site = _locate(exc.__traceback__, modules)
    key, path, tensor = None, None, None
    where = "the model (submodule unknown)"
    if site is not None:
        key, path, module, tensor = site
        want = want if want is not None else _takes(module, axis)
        where = f"{path} ({type(module).__name__})"
        if tensor is not None and _size(tensor, axis) != got:
            tensor = None
    packed = _packed_weight(site, modules, want, got) if axis == "features" and want is not None else None
    if packed is not None:
        name, w = packed
        fmt = storage_of(w).format
        problem = (f"{fmt} packed storage reached a plain matmul in {where}: weight '{name}' holds "
                   f"{list(w.shape)} values as {list(w.size())} bytes ({w.dtype}), and this code multiplies the stored "
                   f"bytes ({want} per row) with an input of {got} features instead of calling the layer, whose ops "
                   f"dequantize it (torch: {str(exc).splitlines()[0]}).")
        fix = (f"keep '{name.split('.', 1)[-1]}' unquantized (F16) when making the GGUF file (the converter's keep "
               "list), or load an F16 / fp8 safetensors file of this model; or make the code that uses it call its "
               "layer (or dequantize it) instead of reading its storage")
        return ShapeMismatchError(node, problem, fix + ".", module_path=path, axis=axis, want=want, got=got,
                                  graph_inputs=[], torch_message=str(exc))
    named = list(_graph_tensors(inputs))
    certain = [n for n, t in named if tensor is not None and (t is tensor or (
        t.numel() and t.device == tensor.device and t.data_ptr() == tensor.data_ptr() and t.shape == tensor.shape))]
    names = certain or [n for n, t in named if _size(t, axis) == got]
    graph = dict(named)
    if len(names) == 1:
        shown = f"graph input '{names[0]}' {list(graph[names[0]].shape)}"
        origin = f"that is {shown}" if certain else f"likely {shown} (the only input with {got} {axis})"
    elif names:
        origin = "likely one of graph inputs " + ", ".join(f"'{n}'" for n in names) + f" (all with {got} {axis})"
    else:
        origin = f"no graph input has {got} {axis}, so the model made it"
    role = _role_of(key, roles)
    kind = {"vae": "VAE", "unet": "MODEL"}.get(role, "model")
    takes = f"{want} {axis}" if want is not None else f"another number of {axis}"
    problem = f"shape mismatch in {where}: it takes {takes} but its input has {got}; {origin}."

    sample = graph[names[0]] if len(names) == 1 else tensor
    spatial = sample.ndim - 2 if sample is not None else None
    made_by, meant_for = families.get((got, spatial)), families.get((want, spatial))
    if axis == "channels" and made_by and meant_for:
        problem += (f" A {got}-channel latent is what {_named(made_by)} models make; this {kind} is for "
                    f"{want}-channel latents ({_named(meant_for)}).")
        if role == "vae":
            fix = (f"decode with the VAE that belongs to the model that made the latent (a {got}-channel VAE), or "
                   f"make the latent with a model for {want}-channel latents ({_named(meant_for)})")
        else:
            fix = (f"give this {kind} a {want}-channel latent (an Empty Latent Image, or VAE Encode with this model's "
                   f"own VAE), or sample with a model made for {got}-channel latents ({_named(made_by)})")
    elif axis == "features" and role == "unet":
        fix = (f"encode the prompt with the text encoder (CLIP) that belongs to this model: it takes {takes}, the "
               f"conditioning has {got}")
    elif axis == "dims":
        fix = (f"this {kind} takes {want}-dimensional tensors, the input is {got}-dimensional (a video latent meets "
               "an image model, or the reverse): use the model that made the input")
    else:
        fix = f"connect an input with {takes} (the one connected has {got}), made by this {kind}'s own family"
    problem += f" (torch: {str(exc).splitlines()[0]})."
    return ShapeMismatchError(node, problem, fix + ".", module_path=path, axis=axis, want=want, got=got,
                              graph_inputs=names, torch_message=str(exc))


class explain_shape_errors(explain_dtype_errors):
    """Context manager: a torch shape mismatch escaping the block is re-raised as a ShapeMismatchError (a
    PrecisionError) `from` the original; every other exception passes through as the same object. Free while
    nothing fails, like explain_dtype_errors; `families` as in explain_shape."""

    __slots__ = ("families",)

    def __init__(self, node: str, modules: Optional[Mapping] = None, inputs: Optional[Mapping] = None,
                 roles: Optional[Mapping] = None, families: Optional[Mapping] = None):
        super().__init__(node, modules, inputs, roles)
        self.families = families

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, RuntimeError):
            return False
        try:
            err = explain_shape(exc, self.node, self.modules, self.inputs, self.roles, self.families)
        except Exception:  # a bug in the explainer must never hide the user's real error
            err = None
        if err is None:
            return False
        raise err from exc
