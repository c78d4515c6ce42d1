"""Enforce a precision context downstream: the prompt rewrite, as a pure function of the API prompt.

A PrecisionPolicy with `enforce_downstream` on (the default) governs every node that depends on it (the transitive
dependents of its outputs). Each link into such a node that carries a tensor (IMAGE, LATENT, MASK, CONDITIONING) or
a model (MODEL, CLIP, VAE, UPSCALE_MODEL, CONTROL_NET, CLIP_VISION) gets a conform step of the pack inserted on it:
producer -> conform step -> consumer. The consumer itself is not touched: same id, same class, same inputs but for
that link, so it runs, reports progress, files its ui in /history and fails exactly as it would without the pack.
A conform step is an ordinary node, so ComfyUI orders, caches and re-runs it like any other (a step whose value did
not change is reused from the cache).

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

PACK_PREFIX = "PrecisionSafe"  # the pack's node ids; its own nodes conform their inputs themselves
POLICY = "PrecisionSafePolicy"
SWITCH = "enforce_downstream"  # the policy's boolean input; absent means on (its default)
CONFORM = "PrecisionSafeConform"  # the conform step inserted on a governed link
VALUE, CONTEXT, SPEC = "value", "context", "spec"  # the conform step's inputs
# What earlier versions of the pack put in place of a governed node, in prompts saved then (PNG chunks): unwrapped.
_OLD_WRAPPERS = ("PrecisionSafeEnforced", "PrecisionSafeEnforcedOutput")
_OLD_SPEC, _OLD_CONTEXT = "precision_safe_enforced", "precision_safe_context"


@dataclasses.dataclass(frozen=True)
class NodeType:
    """What the rewrite needs to know about a node class."""

    inputs: Mapping[str, str]  # declared input name -> type ("IMAGE", "INT", "*", "IMAGE,MASK", ...)
    outputs: tuple = ()  # output types
    raw_links: frozenset = frozenset()  # inputs that receive the link itself, not its value: never conformed


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a conform step conforms, for whom: stored in its SPEC input."""

    consumer: str  # the consumer's class_type
    node_id: str  # the consumer's id
    node: str  # the consumer's label in messages: "KSampler #7" or its title in the editor
    input: str  # the consumer's input the value goes to
    kind: str  # IMAGE, MODEL, ...
    policy: str  # id of the PrecisionPolicy whose context applies

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> "Spec":
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The rewritten prompt, and which links of which nodes got a conform step (node id -> {input: policy id})."""

    prompt: dict
    governed: Mapping[str, Mapping[str, str]]
    left_out: Mapping[str, str]  # node id -> why one of its inputs is not conformed


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def enforces(node: Mapping) -> bool:
    """Whether a prompt node is a PrecisionPolicy with enforcement on."""
    return node.get("class_type") == POLICY and node.get("inputs", {}).get(SWITCH, True) is True


def step_id(node_id: str, input_name: str) -> str:
    """The id of the conform step on `node_id`'s input: readable in logs, never a user's id (the editor and API
    clients number nodes; ComfyUI's own expansions prefix digits)."""
    return f"{node_id}.precision_safe.{input_name}"


def touches(prompt: Mapping) -> bool:
    """Whether the rewrite has anything to do with this prompt (cheap: no graph walk)."""
    return any(isinstance(n, dict) and (enforces(n) or n.get("class_type") in (CONFORM, *_OLD_WRAPPERS))
               for n in prompt.values())


def _source(prompt: Mapping, link):
    """Follow a link back through conform steps to the value the user linked."""
    while is_link(link) and (prompt.get(str(link[0])) or {}).get("class_type") == CONFORM:
        link = prompt[str(link[0])]["inputs"][VALUE]
    return link


def unwrap(prompt: Mapping) -> dict:
    """The prompt as the user made it: conform steps removed (their consumers linked to what they conformed), and
    what earlier versions wrapped given back its own class."""
    out = {}
    for nid, node in prompt.items():
        if not isinstance(node, dict):
            out[nid] = node
            continue
        if node.get("class_type") == CONFORM:
            continue
        inputs = {k: _source(prompt, v) for k, v in node.get("inputs", {}).items()}
        node = {**node, "inputs": inputs}
        if node.get("class_type") in _OLD_WRAPPERS and isinstance(inputs.get(_OLD_SPEC), str):
            class_type = json.loads(inputs[_OLD_SPEC])["class_type"]
            node = {**node, "class_type": class_type,
                    "inputs": {k: v for k, v in inputs.items() if k not in (_OLD_SPEC, _OLD_CONTEXT)}}
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


def _governors(prompt: Mapping) -> dict:
    """node id -> id of the enforcing policy it depends on most nearly (fewest links; the lower id on a tie)."""
    deps = _dependents(prompt)
    governed: dict[str, tuple] = {}
    for pid in (nid for nid, node in prompt.items() if enforces(node)):
        for nid, dist in _distances(deps, pid).items():
            key = (dist, int(pid) if pid.isdigit() else pid)
            if nid not in governed or key < governed[nid][0]:
                governed[nid] = (key, pid)
    return {nid: pid for nid, (_, pid) in governed.items()}


def rewrite(prompt: Mapping, types: Mapping[str, NodeType]) -> Plan:
    """Insert a conform step on every conformable link into a node downstream of an enforcing PrecisionPolicy.

    `prompt` must be as the user made it (`unwrap` it first); it is not modified. Links into the pack's own nodes
    are left alone (they conform their inputs themselves), and so are nodes ComfyUI does not know (validation
    reports them) and raw-link inputs (the node reads the link, not a value).
    """
    out, governed, left_out = dict(prompt), {}, {}
    for nid, pid in sorted(_governors(prompt).items(), key=lambda kv: (len(kv[0]), kv[0])):
        node = prompt[nid]
        class_type = node.get("class_type", "")
        t = types.get(class_type)
        if class_type.startswith(PACK_PREFIX) or t is None:
            continue
        inputs = dict(node.get("inputs", {}))
        for name, value in node.get("inputs", {}).items():
            if not is_link(value):
                continue
            src = prompt.get(str(value[0]))
            src_t = types.get(src.get("class_type")) if src else None
            received = src_t.outputs[value[1]] if src_t and value[1] < len(src_t.outputs) else None
            kind = _kind(t.inputs.get(name), received)
            if kind is None:
                continue
            if name in t.raw_links:
                left_out[nid] = f"input '{name}' takes a raw link"
                continue
            sid = step_id(nid, name)
            spec = Spec(class_type, nid, label(nid, node), name, kind, pid)
            out[sid] = {"class_type": CONFORM, "inputs": {VALUE: value, CONTEXT: [pid, 0], SPEC: spec.dumps()},
                        "_meta": {"title": f"conform {spec.node} '{name}'"}}
            inputs[name] = [sid, 0]
            governed.setdefault(nid, {})[name] = pid
        if nid in governed:
            out[nid] = {**node, "inputs": inputs}
    return Plan(out, governed, left_out)


def governed_by(prompt: Mapping, policy_id: str) -> list[Spec]:
    """The conform steps of a rewritten prompt that apply `policy_id`'s context."""
    specs = [Spec.loads(n["inputs"][SPEC]) for n in prompt.values()
             if isinstance(n, dict) and n.get("class_type") == CONFORM and isinstance(n["inputs"].get(SPEC), str)]
    return [s for s in specs if s.policy == str(policy_id)]
