"""Enforce a precision context downstream: the prompt rewrite, as a pure function of the API prompt.

A PrecisionPolicy with `enforce_downstream` on governs every node that depends on it (the transitive dependents of
its outputs). Each such node that takes a tensor (IMAGE, LATENT, MASK, CONDITIONING) or a model (MODEL, CLIP, VAE,
UPSCALE_MODEL, CONTROL_NET, CLIP_VISION) is replaced, under its own id, by a wrapper node of the pack. The wrapper
keeps every input the node had (so ComfyUI still orders, caches and re-runs it exactly as before) and, when it runs,
expands into conform steps followed by the original node, fed the conformed values. Because the steps and the node
are the wrapper's expansion, ComfyUI reports anything they raise under the original node's id.

`rewrite(unwrap(p))` is the one entry point: a prompt that was already rewritten (e.g. re-queued from a saved PNG)
is first brought back to what the user made, so rewriting twice changes nothing. No ComfyUI import here: node type
facts come in as `NodeType`s.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Optional

TENSOR_KINDS = ("IMAGE", "LATENT", "MASK", "CONDITIONING")
MODEL_KINDS = ("MODEL", "CLIP", "VAE", "UPSCALE_MODEL", "CONTROL_NET", "CLIP_VISION")
KINDS = TENSOR_KINDS + MODEL_KINDS

POLICY = "PrecisionSafePolicy"
SWITCH = "enforce_downstream"  # the policy's boolean input
WRAPPER = "PrecisionSafeEnforced"  # stands in for a node that produces outputs
WRAPPER_OUTPUT = "PrecisionSafeEnforcedOutput"  # stands in for an output node (SaveImage, PreviewImage, ...)
WRAPPERS = (WRAPPER, WRAPPER_OUTPUT)
SPEC = "precision_safe_enforced"  # the wrapper's input holding what it stands in for (JSON)
CONTEXT = "precision_safe_context"  # the wrapper's input linked to the policy's context output
MAX_OUTPUTS = 32  # outputs a wrapper can stand in for (and inputs its conform step can take)
PACK_PREFIX = "PrecisionSafe"  # the pack's own nodes conform their inputs themselves


@dataclasses.dataclass(frozen=True)
class NodeType:
    """What the rewrite needs to know about a node class."""

    inputs: Mapping[str, str]  # declared input name -> type ("IMAGE", "INT", "*", "IMAGE,MASK", ...)
    outputs: tuple = ()  # output types
    output_is_list: tuple = ()
    input_is_list: bool = False
    output_node: bool = False
    # why it must run exactly as declared (lazy or raw-link inputs, its own change check, not idempotent); None: can
    # be wrapped
    runs_as_is: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a wrapper stands in for, stored in its SPEC input."""

    class_type: str
    conform: Mapping[str, str]  # input name -> kind
    node: str  # the node's label in messages: "KSampler #7" or its title in the editor
    policy: str  # id of the PrecisionPolicy whose context applies

    def dumps(self) -> str:
        return json.dumps({"class_type": self.class_type, "conform": dict(self.conform), "node": self.node,
                           "policy": self.policy}, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> "Spec":
        d = json.loads(text)
        return cls(d["class_type"], d["conform"], d["node"], d["policy"])


@dataclasses.dataclass(frozen=True)
class Plan:
    """The rewritten prompt, which node each policy governs, and the governed nodes left as they are (and why)."""

    prompt: dict
    wrapped: Mapping[str, str]  # node id -> policy id
    left_out: Mapping[str, str]  # node id -> reason


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def enforcing_policies(prompt: Mapping) -> list[str]:
    return [nid for nid, node in prompt.items()
            if node.get("class_type") == POLICY and node.get("inputs", {}).get(SWITCH) is True]


def touches(prompt: Mapping) -> bool:
    """Whether the rewrite has anything to do with this prompt (cheap: no graph walk)."""
    return any(isinstance(n, dict) and (n.get("class_type") in WRAPPERS or
                                        (n.get("class_type") == POLICY and n.get("inputs", {}).get(SWITCH) is True))
               for n in prompt.values())


def unwrap(prompt: Mapping) -> dict:
    """The prompt as the user made it: every wrapper replaced by the node it stands in for."""
    out = {}
    for nid, node in prompt.items():
        if isinstance(node, dict) and node.get("class_type") in WRAPPERS and isinstance(node["inputs"].get(SPEC), str):
            spec = Spec.loads(node["inputs"][SPEC])
            inputs = {k: v for k, v in node["inputs"].items() if k not in (SPEC, CONTEXT)}
            node = {**node, "class_type": spec.class_type, "inputs": inputs}
        out[nid] = node
    return out


def _dependents(prompt: Mapping) -> dict:
    deps = {nid: set() for nid in prompt}
    for nid, node in prompt.items():
        for value in node.get("inputs", {}).values():
            if is_link(value) and str(value[0]) in deps:
                deps[str(value[0])].add(nid)
    return deps


def _distances(deps: Mapping, start: str) -> dict:
    """Shortest number of links from `start` to each node downstream of it."""
    seen, frontier, step = {}, [start], 0
    while frontier:
        step += 1
        nxt = []
        for nid in frontier:
            for d in deps[nid]:
                if d not in seen and d != start:
                    seen[d] = step
                    nxt.append(d)
        frontier = nxt
    return seen


def _order(prompt: Mapping) -> list[str]:
    """Node ids, each after every node it takes a link from (links to missing nodes ignored; cycles left as they
    are: validation reports them)."""
    done, out = set(), []
    for root in prompt:
        stack = [(root, False)]
        while stack:
            nid, expanded = stack.pop()
            if nid in done:
                continue
            if expanded:
                done.add(nid)
                out.append(nid)
                continue
            stack.append((nid, True))
            for v in prompt[nid].get("inputs", {}).values():
                if is_link(v) and str(v[0]) in prompt and str(v[0]) not in done:
                    stack.append((str(v[0]), False))
    return out


def _list_outputs(prompt: Mapping, types: Mapping[str, NodeType]) -> dict:
    """node id -> for each output, whether it carries a list of several values (OUTPUT_IS_LIST, or a node mapped
    over a list input)."""
    multi = {}
    for nid in _order(prompt):
        t = types.get(prompt[nid].get("class_type"))
        if t is None:
            multi[nid] = ()
            continue
        fed_list = not t.input_is_list and any(
            is_link(v) and _output_flag(multi, str(v[0]), v[1]) for v in prompt[nid].get("inputs", {}).values())
        flags = tuple(t.output_is_list) + (False,) * (len(t.outputs) - len(t.output_is_list))
        multi[nid] = tuple(f or fed_list for f in flags)
    return multi


def _output_flag(multi: Mapping, nid: str, index: int) -> bool:
    flags = multi.get(nid, ())
    return index < len(flags) and flags[index]


def _kind(declared: Optional[str], received: Optional[str]) -> Optional[str]:
    """The kind an input is conformed as: its declared type when that is one, else the type it receives."""
    for t in (declared, received):
        if t in KINDS:
            return t
    return None


def label(node_id: str, node: Mapping) -> str:
    """How messages name a node: its title in the editor (sent as _meta.title), else its class, with its id."""
    title = (node.get("_meta") or {}).get("title") or node.get("class_type", "node")
    return f"{title} #{node_id}"


def rewrite(prompt: Mapping, types: Mapping[str, NodeType]) -> Plan:
    """Wrap every node downstream of an enforcing PrecisionPolicy that takes a conformable input.

    `prompt` must be as the user made it (`unwrap` it first); it is not modified. A node governed by several
    enforcing policies takes the context of the nearest (fewest links; the lower id on a tie).
    """
    policies = enforcing_policies(prompt)
    if not policies:
        return Plan(dict(prompt), {}, {})
    deps = _dependents(prompt)
    governed: dict[str, tuple] = {}
    for pid in policies:
        for nid, dist in _distances(deps, pid).items():
            key = (dist, int(pid) if pid.isdigit() else pid)
            if nid not in governed or key < governed[nid][0]:
                governed[nid] = (key, pid)
    multi = _list_outputs(prompt, types)
    # outputs something links to: a list on an output nothing uses (a saver's pass-through) is no obstacle
    used = {(str(v[0]), v[1]) for n in prompt.values() for v in n.get("inputs", {}).values() if is_link(v)}
    out, wrapped, left_out = dict(prompt), {}, {}
    for nid in sorted(governed, key=lambda n: (len(n), n)):
        pid = governed[nid][1]
        node = prompt[nid]
        class_type = node.get("class_type", "")
        t = types.get(class_type)
        if class_type.startswith(PACK_PREFIX) or t is None:
            continue
        conform = {}
        for name, value in node.get("inputs", {}).items():
            if not is_link(value):
                continue
            src = prompt.get(str(value[0]))
            src_t = types.get(src.get("class_type")) if src else None
            received = src_t.outputs[value[1]] if src_t and value[1] < len(src_t.outputs) else None
            kind = _kind(t.inputs.get(name), received)
            if kind:
                conform[name] = kind
        if not conform:
            continue
        why = t.runs_as_is
        if why is None and any(flag and (nid, i) in used for i, flag in enumerate(multi.get(nid, ()))):
            why = "an output carries a list of values (OUTPUT_IS_LIST or a list input)"
        if why is None and max(len(t.outputs), len(conform)) > MAX_OUTPUTS:
            why = f"more than {MAX_OUTPUTS} outputs or conformable inputs"
        if why is None and (SPEC in node["inputs"] or CONTEXT in node["inputs"]):
            why = f"it has an input named {SPEC} or {CONTEXT}"
        if why is not None:
            left_out[nid] = why
            continue
        spec = Spec(class_type, conform, label(nid, node), pid)
        out[nid] = {**node, "class_type": WRAPPER_OUTPUT if t.output_node else WRAPPER,
                    "inputs": {**node["inputs"], SPEC: spec.dumps(), CONTEXT: [pid, 0]}}
        wrapped[nid] = pid
    return Plan(out, wrapped, left_out)
