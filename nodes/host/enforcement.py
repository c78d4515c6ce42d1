"""Enforce downstream, ComfyUI side: node type facts for the pure rewrite (nodes/precision/enforce.py), the
on-prompt handler that applies it, and the expansion a wrapper node runs.

The handler runs on every POST /prompt before ComfyUI validates it. It changes nothing unless a PrecisionPolicy has
`enforce_downstream` on (or the prompt was rewritten before). Then it first validates the prompt as the user made it
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
import threading
import weakref

from ..precision import enforce
from ..precision.enforce import CONTEXT, SPEC, NodeType, Spec

log = logging.getLogger(__name__)
CONFORM = "PrecisionSafeConform"

_TYPES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # node class -> NodeType
_registered = threading.Event()


def _input_type(spec) -> str:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def node_type(cls) -> NodeType:
    """What the rewrite needs to know about node class `cls` (read once per class)."""
    known = _TYPES.get(cls)
    if known is not None:
        return known
    from comfy_api.internal import _ComfyNodeInternal, first_real_override
    declared = cls.INPUT_TYPES()
    inputs, why = {}, None
    for section in ("required", "optional"):
        for name, spec in (declared.get(section) or {}).items():
            inputs[name] = _input_type(spec)
            extra = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            if extra.get("lazy") or extra.get("rawLink"):
                why = f"input '{name}' is {'lazy' if extra.get('lazy') else 'a raw link'}"
    v3 = isinstance(cls, type) and issubclass(cls, _ComfyNodeInternal)
    if why is None and (first_real_override(cls, "fingerprint_inputs") if v3 else hasattr(cls, "IS_CHANGED")):
        why = "it decides itself when to run again (IS_CHANGED / fingerprint_inputs)"
    if why is None and getattr(cls, "NOT_IDEMPOTENT", False):
        why = "it is marked not idempotent"
    outputs = tuple(str(t) for t in cls.RETURN_TYPES)
    found = NodeType(inputs=inputs, outputs=outputs, output_is_list=tuple(getattr(cls, "OUTPUT_IS_LIST", ()) or ()),
                     input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
                     output_node=bool(getattr(cls, "OUTPUT_NODE", False)), runs_as_is=why)
    _TYPES[cls] = found
    return found


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


def register() -> bool:
    """Install `prepare` as an on-prompt handler of the running server, once. False without a server (in-process
    executors call `prepare` themselves)."""
    import sys
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or not hasattr(instance, "add_on_prompt_handler") or _registered.is_set():
        return False
    instance.add_on_prompt_handler(prepare)
    _registered.set()
    return True


def value_input(i: int) -> str:
    """The conform step's input carrying the governed node's i-th conformed input (names of the governed node's own
    inputs could clash with the step's)."""
    return f"value_{i}"


def expansion(spec: Spec, node: dict):
    """The graph a wrapper expands into: one conform step taking every conformed input, then the original node fed
    by its outputs. Returns (graph, the original node's builder entry)."""
    from comfy_execution.graph_utils import GraphBuilder
    g = GraphBuilder()
    inputs = {k: v for k, v in node["inputs"].items() if k not in (SPEC, CONTEXT)}
    step = g.node(CONFORM)
    step.set_input("context", node["inputs"][CONTEXT])
    step.set_input("spec", spec.dumps())
    for i, name in enumerate(spec.conform):
        step.set_input(value_input(i), inputs[name])
        inputs[name] = step.out(i)
    original = g.node(spec.class_type)
    for key, value in inputs.items():
        original.set_input(key, value)
    return g, original


def governed_summary(prompt, policy_id) -> str:
    """What enforce downstream did for one policy in the prompt that runs: the nodes it governs, and those it left
    as they are (with why)."""
    prompt = prompt if isinstance(prompt, dict) else {}
    pid = str(policy_id)
    original = enforce.unwrap(prompt)
    governed = [enforce.label(nid, original[nid]) for nid, n in prompt.items() if isinstance(n, dict)
                and n.get("class_type") in enforce.WRAPPERS and str(n["inputs"].get(CONTEXT, [None])[0]) == pid]
    if not governed:
        return ("enforce downstream: on, but no node downstream takes a conformable input (or the prompt was "
                "queued without the pack's handler)")
    left = enforce.rewrite(original, node_types(original)).left_out
    text = f"enforce downstream: {len(governed)} nodes get conformed inputs ({', '.join(sorted(governed))})"
    if left:
        text += "; left as they are: " + "; ".join(f"{enforce.label(n, original[n])} ({w})" for n, w in left.items())
    return text
