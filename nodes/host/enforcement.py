"""Enforce downstream, ComfyUI side: node type facts for the pure rewrite (nodes/precision/enforce.py), the
on-prompt handler that applies it, and what a policy node says it governs.

The handler runs on every POST /prompt before ComfyUI validates it. It changes nothing unless a PrecisionPolicy has
`enforce_downstream` on (its default) or the prompt was rewritten before. Then it first validates the prompt as the user made it
with ComfyUI's own `validate_prompt`: an invalid prompt is handed on unchanged, so ComfyUI reports its own errors on
the user's nodes; a valid one is rewritten from the validated copy (whose widget values ComfyUI has already
converted). It returns a new request and never modifies the one it got, so an exception (which ComfyUI logs and
swallows) leaves the request as it came.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging

from ..precision import enforce
from ..precision.enforce import NodeType
from ..precision.memo import PerSource

log = logging.getLogger(__name__)

_TYPES = PerSource()  # node class -> NodeType


def _input_type(spec) -> str:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def node_type(cls) -> NodeType:
    """What the rewrite needs to know about node class `cls` (read once per class)."""
    return _TYPES.made(cls, NodeType, lambda: _read_type(cls))[0]


def _read_type(cls) -> NodeType:
    declared = cls.INPUT_TYPES()
    inputs, raw = {}, set()
    for section in ("required", "optional"):
        for name, spec in (declared.get(section) or {}).items():
            inputs[name] = _input_type(spec)
            extra = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            if extra.get("rawLink"):
                raw.add(name)
    return NodeType(inputs=inputs, outputs=tuple(str(t) for t in cls.RETURN_TYPES), raw_links=frozenset(raw))


def node_types(prompt: dict) -> dict:
    """class_type -> NodeType for the classes in `prompt` that ComfyUI knows."""
    import nodes
    return {ct: node_type(nodes.NODE_CLASS_MAPPINGS[ct]) for ct in {n.get("class_type") for n in prompt.values()
                                                                    if isinstance(n, dict)}
            if ct in nodes.NODE_CLASS_MAPPINGS}


def _validate(prompt: dict, targets) -> tuple[bool, dict]:
    """ComfyUI's own validation of a copy of `prompt`: (valid with no node errors, the validated copy)."""
    import execution
    checked = copy.deepcopy(prompt)

    def run():
        return asyncio.run(execution.validate_prompt("precision-safe-enforce-check", checked, targets))
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here (the in-process harness): run it directly
        valid = run()
    else:  # inside the server's loop (the POST handler): on a thread with its own loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            valid = pool.submit(run).result()
    return bool(valid[0]) and not valid[3], checked


def prepare(json_data: dict) -> dict:
    """The on-prompt handler: the request with its prompt rewritten for enforcement (a new dict), or as it came."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if not isinstance(prompt, dict) or not enforce.touches(prompt):
        return json_data
    original = enforce.unwrap(prompt)
    ok, validated = _validate(original, json_data.get("partial_execution_targets"))
    if not ok:
        log.info("precision-safe: the prompt does not validate as it is; enforce downstream left it unchanged")
        return {**json_data, "prompt": original}
    plan = enforce.rewrite(validated, node_types(validated))
    for nid, why in plan.left_out.items():
        log.info("precision-safe: enforce downstream leaves %s as it is: %s", enforce.label(nid, validated[nid]), why)
    return {**json_data, "prompt": plan.prompt}


def governed_summary(prompt, policy_id) -> str:
    """What enforce downstream does for one policy in the prompt that runs: the inputs it conforms, by node, and
    what it leaves alone (with why)."""
    prompt = prompt if isinstance(prompt, dict) else {}
    specs = enforce.governed_by(prompt, policy_id)
    if not specs:
        return ("enforce downstream: on; no node downstream takes a conformable input (or the prompt was queued "
                "without the pack's handler)")
    by_node: dict[str, list[str]] = {}
    for spec in specs:
        by_node.setdefault(spec.node, []).append(spec.input)
    text = f"enforce downstream: {len(specs)} inputs conformed (" + "; ".join(
        f"{node}: {', '.join(names)}" for node, names in sorted(by_node.items())) + ")"
    original = enforce.unwrap(prompt)
    left = enforce.rewrite(original, node_types(original)).left_out
    if left:
        text += "; left as they are: " + "; ".join(f"{enforce.label(n, original[n])} ({w})" for n, w in left.items())
    return text
