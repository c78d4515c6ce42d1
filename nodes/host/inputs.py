"""Widget inputs of the pack's nodes that ComfyUI refuses before the run, as it refuses a core node's bad value: POST
/prompt answers 400 with node_errors naming the node, the input and the allowed values.

- Combo: ComfyUI 0.3.75 checks a dropdown's value only when the input's type is the list of its options (V1 style);
  a V3 `io.Combo.Input` has the type "COMBO" and any string passes. `Combo` is that input with its options as its
  type; /object_info lists the same options (in the type and in `options`), so the editor draws the same dropdown.
- Boolean: ComfyUI converts a BOOLEAN value with `bool()`, so "yes", "false" or 0 pass as true/false. The on-prompt
  handler `mark_non_booleans` replaces such a value on a pack node by a `NotABoolean`, which `bool()` refuses:
  ComfyUI's validation then reports it on the node with the input's name (invalid_input_type).
"""
from __future__ import annotations

import json

from comfy_api.latest import io

_PACK = __name__.rsplit(".nodes.host.", 1)[0]  # the pack's top-level package, as ComfyUI imported it


class Combo(io.Combo.Input):
    """`io.Combo.Input` whose input type is its options list, which ComfyUI's validation checks values against."""

    def get_io_type(self):
        return list(self.options)


class NotABoolean(str):
    """A BOOLEAN widget value that is not true/false, as JSON (a str, so node_errors still serialise)."""
    __slots__ = ()

    def __bool__(self):
        raise ValueError("not a JSON boolean; allowed values: true, false")


def _boolean_inputs(cls) -> set[str]:
    declared = cls.INPUT_TYPES()
    return {name for section in ("required", "optional") for name, spec in (declared.get(section) or {}).items()
            if isinstance(spec, (list, tuple)) and spec and spec[0] == "BOOLEAN"}


def mark_non_booleans(json_data: dict) -> dict:
    """The on-prompt handler: the request with each pack node's non-boolean BOOLEAN value made a `NotABoolean` (a new
    dict), or as it came when there is none."""
    import nodes
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if not isinstance(prompt, dict):
        return json_data
    marked = {}
    for nid, node in prompt.items():
        cls = nodes.NODE_CLASS_MAPPINGS.get(node.get("class_type")) if isinstance(node, dict) else None
        if cls is None or not cls.__module__.startswith(_PACK + ".") or not isinstance(node.get("inputs"), dict):
            continue
        booleans = _boolean_inputs(cls)
        bad = {name: NotABoolean(json.dumps(value)) for name, value in node["inputs"].items()
               if name in booleans and not isinstance(value, (bool, list, NotABoolean))}
        if bad:
            marked[nid] = {**node, "inputs": {**node["inputs"], **bad}}
    return {**json_data, "prompt": {**prompt, **marked}} if marked else json_data
