"""PrecisionGuard's clones: a torch dtype error inside a *core* node's sampling or VAE decode/encode is re-raised as
the pack's explained error (submodule, both dtypes, graph input, fix), on the core node that was running; so is a
shape mismatch between model families (a 16-channel SD3 latent into an SD1.5 VAE: latent channels vs the VAE's, the
model families that make each, the fix).

Scoped to the clones: the MODEL gets an OUTER_SAMPLE wrapper through ComfyUI's own wrapper API on a clone (older
cores without it: a chained `model_function_wrapper`); the VAE is a shallow copy whose class is a subclass of its
own that runs decode/encode inside `explain_dtype_errors`. The shared MODEL/VAE, their classes and every global stay
untouched, so sibling branches using the originals see stock behaviour. Nothing runs unless an error escapes: the
explanation is built from the traceback afterwards.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Mapping
from typing import Optional

import torch

from ..precision.context import PrecisionContext, dtype_name
from ..precision.diagnose import DtypeMismatchError, explain_dtype_errors, explain_shape_errors
from .links import prompt_label
from .patches import patch_modules
from .records import executing

KEY = "precision_safe_guard"  # wrapper key on MODEL clones / attribute on guarded VAE copies


@dataclasses.dataclass(frozen=True)
class GuardInfo:
    """Who guarded the object and the prompt it ran in (for naming the core node that fails)."""

    guard_node: str  # "Precision Guard #5"
    prompt_id: Optional[str] = None
    class_types: Mapping[str, str] = dataclasses.field(default_factory=dict)  # node id -> class_type
    ctx: Optional[PrecisionContext] = None
    node: Optional[str] = None  # the one node this object was made for ("KSampler #7"), when known

    def label(self) -> str:
        """'KSampler #7 (guarded by Precision Guard #5)': the node running now, named when the prompt is known."""
        if self.node is not None:
            return f"{self.node} ({self.guard_node})"
        prompt_id, node_id = executing()
        if node_id is None:
            return f"guarded by {self.guard_node}"
        cls = self.class_types.get(node_id) if prompt_id == self.prompt_id else None
        return f"{prompt_label(cls or 'node', node_id)} (guarded by {self.guard_node})"


def _misreported(err: DtypeMismatchError, kind: str, role: str, declared: Optional[torch.dtype],
                 ctx: Optional[PrecisionContext]) -> Optional[DtypeMismatchError]:
    """A sharper error when the object's weights are not at the dtype it declares: core cast the input to the
    declared dtype, so the input is right and the weights are wrong. None when that is not the case."""
    if declared is None or not err.weight_dtype or not err.input_dtype:
        return None
    stated = dtype_name(declared)
    if err.weight_dtype == stated or err.input_dtype != stated:
        return None
    weights = err.weight_dtype
    now = f" (the connected context runs '{role}' at {ctx.choice(role)})" if ctx is not None else ""
    problem = (f"{err.problem} The {kind} declares {stated}, so ComfyUI cast the input to {stated}, but its weights "
               f"there are {weights}: whatever loaded or patched the {kind} cast them without telling ComfyUI.")
    fix = (f"pass the {kind} through Precision Policy with {role}_dtype {weights}{now}: its copy declares and computes "
           f"{weights} consistently; or load the {kind} with a loader that sets its dtype.")
    return DtypeMismatchError(err.node, problem, fix, module_path=err.module_path, weight_dtype=weights,
                              input_dtype=err.input_dtype, graph_inputs=err.graph_inputs, role=role,
                              torch_message=err.torch_message)


def _blames_a_part(err: DtypeMismatchError, kind: str) -> Optional[DtypeMismatchError]:
    """The error, with a fix that works, when the clash is inside a model patch or a ControlNet rather than in the
    MODEL itself: its own dtype is the culprit, not the UNet block that called it. None otherwise."""
    path = err.module_path or ""
    if path.startswith("patch "):
        fix = ("turn on enforce_downstream on a Precision Policy upstream of this node: the MODEL it hands over runs "
               "each patch at the UNet's dtype (inputs cast at the patch's boundary; fp8 patch weights copied to the "
               "compute dtype)")
        if err.weight_dtype in ("fp16", "bf16", "fp32") and err.weight_dtype != err.input_dtype:
            fix += f"; or set Precision Policy's unet_dtype to {err.weight_dtype}, the patch's dtype"
        what = "this patch"
    elif path.startswith("control_net"):
        fix = ("pass the CONTROL_NET through Precision Policy before the node that applies it (or turn on "
               "enforce_downstream upstream of that node): its copy runs at the context's dtype with casts at its "
               "boundary")
        what = "this ControlNet"
    else:
        return None
    problem = f"{err.problem} The {kind}'s own blocks are not at fault: {what}'s weights are {err.weight_dtype}."
    return DtypeMismatchError(err.node, problem, fix + ".", module_path=err.module_path, weight_dtype=err.weight_dtype,
                              input_dtype=err.input_dtype, graph_inputs=err.graph_inputs, role=err.role,
                              torch_message=err.torch_message)


@functools.lru_cache(maxsize=1)
def latent_families() -> dict:
    """(channels, spatial dims) -> names of ComfyUI's latent formats of that shape, in its own order: (4, 2) ->
    SD15, SDXL, ...; (16, 2) -> SC_Prior, SD3, Flux. Read from comfy.latent_formats, so new families come with
    ComfyUI."""
    import comfy.latent_formats as formats
    families: dict = {}
    for name, cls in vars(formats).items():
        if isinstance(cls, type) and issubclass(cls, formats.LatentFormat) and cls is not formats.LatentFormat:
            families.setdefault((cls.latent_channels, cls.latent_dimensions), []).append(name)
    return families


@contextlib.contextmanager
def _translate(info: GuardInfo, kind: str, role: str, declared, modules: Mapping, inputs: Mapping,
               roles: Optional[Mapping] = None):
    label = info.label()
    try:
        with explain_dtype_errors(label, modules=modules, inputs=inputs, roles=roles), \
                explain_shape_errors(label, modules=modules, inputs=inputs, roles=roles, families=latent_families()):
            yield
    except DtypeMismatchError as err:
        better = _blames_a_part(err, kind) or _misreported(err, kind, role, declared, info.ctx)
        if better is None:
            raise
        raise better from err.__cause__


# -- MODEL ----------------------------------------------------------------------------------------------------------

def _sampling_inputs(guider, args) -> dict:
    """Graph tensors a core sampler node handed over: the latent and the prompts' conditioning tensors."""
    inputs = {}
    if len(args) > 1 and isinstance(args[1], torch.Tensor):
        inputs["latent_image"] = args[1]
    for name, conds in (getattr(guider, "original_conds", None) or {}).items():
        if conds and isinstance(conds[0], dict) and isinstance(conds[0].get("cross_attn"), torch.Tensor):
            inputs[name] = conds[0]["cross_attn"]
    return inputs


def _controls(guider) -> dict:
    """The ControlNets (and those they chain to) in the sampler's conditioning: name -> network."""
    found = {}
    for conds in (getattr(guider, "original_conds", None) or {}).values():
        for c in conds or ():
            control = c.get("control") if isinstance(c, dict) else None
            while control is not None:
                net = getattr(control, "control_model", None)
                if isinstance(net, torch.nn.Module) and all(m is not net for m in found.values()):
                    found[f"control_net {len(found)} ({type(control).__name__})"] = net
                control = getattr(control, "previous_controlnet", None)
    return found


class _OnFailure(Mapping):
    """A mapping built on first use: the explainer reads `modules` and `roles` only after an error escaped, so the
    walk over patches and ControlNets costs nothing while nothing fails."""

    def __init__(self, build):
        self._build, self._built = build, None

    def _get(self) -> dict:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return len(self._get())


def _model_scope(info: GuardInfo, base, inputs, patcher=None, guider=None):
    """`base` is the BaseModel (an nn.Module): its diffusion model is the 'unet' role, the rest (sampling, casts) too.
    The patcher's patches and the conditioning's ControlNets come first: a clash inside one of them names it."""
    def parts() -> dict:
        return {**(patch_modules(patcher) if patcher is not None else {}), **(_controls(guider) if guider else {})}
    modules = _OnFailure(lambda: {**parts(), "unet": getattr(base, "diffusion_model", base), "model": base})
    roles = _OnFailure(lambda: {"model": "unet", **{k: "unet" for k in parts()}})
    declared = base.get_dtype() if hasattr(base, "get_dtype") else None
    return _translate(info, "MODEL", "unet", declared, modules, inputs, roles=roles)


def _outer_sample(info: GuardInfo, executor, *args, **kwargs):
    """WrappersMP.OUTER_SAMPLE wrapper: the whole sampling run of KSampler/SamplerCustom/... on this clone."""
    guider = executor.class_obj
    with _model_scope(info, guider.model_patcher.model, _sampling_inputs(guider, args), guider.model_patcher, guider):
        return executor(*args, **kwargs)


class _UnetFunctionWrapper:
    """Fallback for cores without patcher wrappers: `model_function_wrapper`, chained to one already set.

    It holds no model (ModelPatcher.clone deep-copies model_options): the model is the one `apply_model` belongs to.
    """

    def __init__(self, info: GuardInfo, previous=None):
        self.info, self.previous = info, previous

    def __deepcopy__(self, memo):
        return _UnetFunctionWrapper(self.info, copy.deepcopy(self.previous, memo))

    def __call__(self, apply_model, args):
        with _model_scope(self.info, getattr(apply_model, "__self__", None), {"latent (noised)": args.get("input")}):
            if self.previous is not None:
                return self.previous(apply_model, args)
            return apply_model(args["input"], args["timestep"], **args["c"])


def _has_wrapper_api(patcher) -> bool:
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        return False
    return hasattr(WrappersMP, "OUTER_SAMPLE") and hasattr(patcher, "add_wrapper_with_key")


def guard_model(model, info: GuardInfo):
    """A MODEL clone whose sampling errors are explained; a guard already on it is replaced, not stacked."""
    clone = model.clone()
    if _has_wrapper_api(clone):
        from comfy.patcher_extension import WrappersMP
        clone.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, KEY)
        clone.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, KEY, functools.partial(_outer_sample, info))
        return clone, "sampling wrapped (ComfyUI OUTER_SAMPLE wrapper)"
    previous = clone.model_options.get("model_function_wrapper")
    if isinstance(previous, _UnetFunctionWrapper):
        previous = previous.previous
    clone.set_model_unet_function_wrapper(_UnetFunctionWrapper(info, previous))
    return clone, "model calls wrapped (model_function_wrapper)"


# -- VAE ------------------------------------------------------------------------------------------------------------

_VAE_METHODS = {"decode": "samples", "decode_tiled": "samples", "encode": "pixels", "encode_tiled": "pixels"}
_GUARDED_CLASSES: dict = {}


def _guarded_method(original, name: str, input_name: str):
    @functools.wraps(original)
    def method(self, *args, **kwargs):
        info = self.__dict__.get(KEY)
        if info is None:
            return original(self, *args, **kwargs)
        x = args[0] if args else next(iter(kwargs.values()), None)
        with _translate(info, "VAE", "vae", getattr(self, "vae_dtype", None),
                        {"vae": self.first_stage_model}, {input_name: x} if isinstance(x, torch.Tensor) else {}):
            return original(self, *args, **kwargs)
    return method


def _guarded_class(cls):
    """A subclass of the VAE's class whose decode/encode translate dtype errors (made once per class; the class
    itself is never changed). A subclass, not instance attributes, so copies of the copy (e.g. a pack cast copy
    with other weights) still run their own weights."""
    if getattr(cls, "_precision_safe_guarded", False):
        return cls
    if cls not in _GUARDED_CLASSES:
        ns = {name: _guarded_method(getattr(cls, name), name, inp)
              for name, inp in _VAE_METHODS.items() if callable(getattr(cls, name, None))}
        name = f"Guarded{cls.__name__}"
        while name in globals():  # another VAE class of the same name
            name += "_"
        ns.update(_precision_safe_guarded=True, __module__=__name__, __qualname__=name, __doc__=cls.__doc__)
        _GUARDED_CLASSES[cls] = globals()[name] = type(name, (cls,), ns)  # a module attribute: picklable
    return _GUARDED_CLASSES[cls]


def guard_vae(vae, info: GuardInfo):
    """A shallow copy of the VAE (same weights) whose decode/encode errors are explained."""
    guarded = copy.copy(vae)
    guarded.__class__ = _guarded_class(type(vae))
    setattr(guarded, KEY, info)
    return guarded, "decode/encode wrapped"


def guard_of(obj) -> Optional[GuardInfo]:
    """The GuardInfo on a guarded VAE or MODEL clone (None if not guarded)."""
    info = getattr(obj, "__dict__", {}).get(KEY)
    if info is not None:
        return info
    wrappers = getattr(obj, "wrappers", None)
    if isinstance(wrappers, dict):
        for w in wrappers.get("outer_sample", {}).get(KEY, []):
            if isinstance(w, functools.partial) and isinstance(w.args[0], GuardInfo):
                return w.args[0]
    options = getattr(obj, "model_options", None)
    fallback = options.get("model_function_wrapper") if isinstance(options, dict) else None
    return fallback.info if isinstance(fallback, _UnetFunctionWrapper) else None
