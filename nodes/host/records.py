"""Precision records that travel with the values: each pack node's outputs carry the records of the pack nodes whose
values reached it plus its own, so Save Image (with precision record) reads from what reaches it what made its images.

Where a value carries them (always on a new object, never on the one the node received): a MODEL clone's
`model_options` and a CLIP clone's patcher's (both survive further clones, e.g. LoRA loaders); an attribute on a copy
of a VAE, UPSCALE_MODEL, CONTROL_NET or CLIP_VISION; a key on a LATENT (or other dict) copy, which core samplers copy
on; an attribute on a view of a tensor. A core node that makes a new value from its inputs (VAEDecode's IMAGE,
KSampler's samples) drops them, and values of other kinds (SEGS, detector models, CONDITIONING) carry none: the saver
lists such upstream pack nodes from the prompt instead.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Iterable, Optional

import comfy.clip_vision
import comfy.controlnet
import comfy.model_patcher
import comfy.sd
import torch
from spandrel import ImageModelDescriptor

from ..precision.report import PrecisionRecord

KEY = "precision_safe_records"  # in model_options / as an attribute / as a dict key
# VAE, UPSCALE_MODEL, CONTROL_NET, CLIP_VISION: their nodes use them as templates (ControlNet apply copies its own)
_SHALLOW_COPIED = (comfy.sd.VAE, ImageModelDescriptor, comfy.controlnet.ControlBase, comfy.clip_vision.ClipVisionModel)


def executing() -> tuple[Optional[str], Optional[str]]:
    """(prompt id, node id) of the node ComfyUI is running now, or (None, None) outside the executor."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # a core without executing contexts
        return None, None
    ctx = get_executing_context()
    return (str(ctx.prompt_id), str(ctx.node_id)) if ctx is not None else (None, None)


def label(display_name: str, unique_id) -> str:
    """How every message names a pack node: its display name and the id the user sees ('Safe VAE Decode #5')."""
    return f"{display_name} #{unique_id}" if unique_id is not None else display_name


def _schema(node: type):
    return node.SCHEMA or node.define_schema()  # SCHEMA: set when ComfyUI registered the class


def node_label(node: type) -> str:
    """The label of the running pack node of class `node` (a V3 ComfyNode as ComfyUI runs it, hidden inputs set)."""
    return label(_schema(node).display_name, node.hidden.unique_id if node.hidden is not None else None)


def carried(value) -> list[dict]:
    """The records `value` carries (a list or tuple: its items'), oldest first:
    [{"prompt_id", "step", "node_id", "class_type", "record"}], `step` the id of the node that ran (a conform step
    files its record under the node it conformed for)."""
    if isinstance(value, (list, tuple)):
        return merged(carried(v) for v in value)
    if isinstance(value, comfy.model_patcher.ModelPatcher):
        return list(value.model_options.get(KEY, ()))
    if isinstance(value, comfy.sd.CLIP):
        return list(value.patcher.model_options.get(KEY, ()))
    if isinstance(value, dict):
        return list(value.get(KEY, ()))
    return list(getattr(value, "__dict__", {}).get(KEY, ()))


def merged(groups: Iterable[list]) -> list[dict]:
    """The entries of `groups` in order, each node run once (the same record can reach a node by several inputs)."""
    seen, out = set(), []
    for group in groups:
        for entry in group:
            key = (entry["prompt_id"], entry["step"])
            if key not in seen:
                seen.add(key)
                out.append(entry)
    return out


def carrying(value, entries: list[dict]):
    """`value`, as a new object carrying `entries` where its kind can carry them (else `value` itself)."""
    if not entries or value is None:
        return value
    entries = list(entries)
    if isinstance(value, comfy.model_patcher.ModelPatcher):
        clone = value.clone()
        clone.model_options[KEY] = entries
        return clone
    if isinstance(value, comfy.sd.CLIP):
        clone = value.clone()
        clone.patcher.model_options[KEY] = entries
        return clone
    if isinstance(value, dict):
        return {**value, KEY: entries}
    if isinstance(value, torch.Tensor):
        view = value.view_as(value)
        setattr(view, KEY, entries)
        return view
    if isinstance(value, _SHALLOW_COPIED):
        tagged = copy.copy(value)  # shares the weights, as the pack's own VAE and boundary copies do
        setattr(tagged, KEY, entries)
        return tagged
    return value


class NodeRun:
    """One pack node's run: its record (filled by the node), what reached it, and its outputs carrying both."""

    def __init__(self, record: PrecisionRecord, node_id, class_type: str, upstream: list[dict]):
        self.record, self.node_id, self.class_type, self.upstream = record, node_id, class_type, upstream
        self.prompt_id, self.step = executing()

    def entry(self) -> dict:
        return {"prompt_id": self.prompt_id, "step": self.step or str(self.node_id), "node_id": str(self.node_id),
                "class_type": self.class_type, "record": self.record.to_dict()}

    def carry(self, *outputs) -> tuple:
        """The outputs, each carrying the records that reached this node and this node's own."""
        entries = [*self.upstream, self.entry()]
        return tuple(carrying(v, entries) for v in outputs)


@contextlib.contextmanager
def recording(node: type, *inputs):
    """The NodeRun of one run of pack node class `node`, timed; its record is labelled as messages name the node."""
    unique_id = node.hidden.unique_id if node.hidden is not None else None
    run = NodeRun(PrecisionRecord(node=node_label(node)), unique_id, _schema(node).node_id,
                  merged(carried(v) for v in inputs))
    start = time.perf_counter()
    try:
        yield run
    finally:
        run.record.seconds = time.perf_counter() - start


def ui_payload(record: PrecisionRecord, text: str | None = None) -> dict:
    """`text` (default: the record as text) is shown by the stock frontend; `precision_safe` carries the structured
    record (API + web UI)."""
    return {"text": [record.to_text() if text is None else text], "precision_safe": [record.to_dict()]}
