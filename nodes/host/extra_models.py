"""UPSCALE_MODEL, CONTROL_NET and CLIP_VISION through PrecisionPolicy and PrecisionGuard: the optional inputs, the
outputs, and the clones (nodes/host/boundary_copies.py) both nodes return for them."""
from __future__ import annotations

from comfy_api.latest import io

from .boundary_copies import KIND_ROLE, WITH_POLICY

_KINDS = (("upscale_model", io.UpscaleModel, "UPSCALE_MODEL"), ("control_net", io.ControlNet, "CONTROL_NET"),
          ("clip_vision", io.ClipVision, "CLIP_VISION"))


def inputs() -> list:
    return [t.Input(name, optional=True,
                    tooltip=f"Optional {kind}; comes out as a copy running at the context's '{KIND_ROLE[kind]}' dtype "
                            "whose inputs are cast to its weights' dtype and outputs back to the caller's (the "
                            "original is not changed).")
            for name, t, kind in _KINDS]


def outputs() -> list:
    return [t.Output(f"{name}_out", display_name=name,
                     tooltip=f"The {kind} copy with casts at its boundary (None if not given).")
            for name, t, kind in _KINDS]


def passthrough(given: dict, first_output: int) -> dict:
    """{output index: (input name, value)} of these outputs, which follow the node's own from `first_output` on, for
    nodes/host/links.py's check of outputs that hand on an empty input."""
    return {first_output + i: (name, given.get(name)) for i, (name, _, _) in enumerate(_KINDS)}


def with_policy(ctx, record, given: dict) -> list:
    """The clones for the objects given (None for those not given), with a note each in the record."""
    out = []
    for name, _, kind in _KINDS:
        obj = given.get(name)
        if obj is None:
            out.append(None)
            continue
        new, note = WITH_POLICY[kind](obj, ctx)
        record.notes.append(note)
        out.append(new)
    return out
