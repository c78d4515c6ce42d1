"""What the API prompt (node id -> {class_type, inputs}, a link is [source id, output index]) says about a node's
links: where an input comes from, who consumes an output and whether they require it. Used to name the node and
input at fault when a value is missing, instead of letting a consumer fail on None deep inside.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

from ..precision.enforce import PACK_PREFIX
from ..precision.errors import PrecisionError
from .records import label


def prompt_label(class_type: str, node_id: str) -> str:
    """A node of the prompt as messages name it: a pack node by its display name (as its own messages name it),
    another by its class."""
    import nodes  # ComfyUI's registry (the pack's own package is never imported under this name)
    pack_name = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type) if class_type.startswith(PACK_PREFIX) else None
    return label(pack_name or class_type, node_id)


class Source(NamedTuple):
    node_id: str
    output: int
    class_type: str

    def label(self) -> str:
        return prompt_label(self.class_type, self.node_id)


class Consumer(NamedTuple):
    node_id: str
    class_type: str
    input_name: str
    input_type: str  # "MODEL", "VAE", ... as the consumer declares it ("" if unknown)
    required: bool

    def node(self) -> str:
        return prompt_label(self.class_type, self.node_id)

    def label(self) -> str:
        return f"{self.node()} (input '{self.input_name}')"


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _node(prompt, node_id) -> dict:
    return (prompt.get(str(node_id)) if isinstance(prompt, dict) else None) or {}


def source_of(prompt, node_id, input_name: str) -> Optional[Source]:
    """The node and output linked into `node_id`'s input; None when it is not linked (or the prompt is unknown)."""
    link = _node(prompt, node_id).get("inputs", {}).get(input_name)
    if not _is_link(link):
        return None
    return Source(str(link[0]), link[1], str(_node(prompt, link[0]).get("class_type", "node")))


def _input_info(class_type: str, input_name: str) -> tuple[str, bool]:
    """(declared type, required?) of a node class's input, from ComfyUI's node registry."""
    from comfy_execution.graph import get_input_info

    import nodes  # ComfyUI's registry (the pack's own package is never imported under this name)
    cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if cls is None:
        return "", True
    kind, category, _ = get_input_info(cls, input_name)
    # a plain str: V3's io types compare unequal to nothing when either side is "*"
    return (str(kind) if isinstance(kind, str) else ""), category == "required"


def _passes_through(class_type: str, input_name: str) -> Optional[int]:
    """The output a pack node hands an input on as, unchanged (Dtype Inspect's value, enforce's conform step):
    declared by the node class as PASSES_THROUGH = {input: output}."""
    import nodes  # ComfyUI's registry (the pack's own package is never imported under this name)
    return (getattr(nodes.NODE_CLASS_MAPPINGS.get(class_type), "PASSES_THROUGH", None) or {}).get(input_name)


def consumers_of(prompt, node_id, output: int) -> list[Consumer]:
    """Every node input linked to `node_id`'s output `output`, in prompt order; through a node that hands the value
    on unchanged, the inputs its output reaches (that node's own input takes any type, so it is not the one that
    needs the value)."""
    found = []
    for other, node in (prompt.items() if isinstance(prompt, dict) else ()):
        for name, value in (node or {}).get("inputs", {}).items():
            if _is_link(value) and str(value[0]) == str(node_id) and value[1] == output:
                class_type = str(node.get("class_type", "node"))
                handed_on = _passes_through(class_type, name)
                if handed_on is not None and str(other) != str(node_id):
                    found += consumers_of(prompt, other, handed_on)
                else:
                    found.append(Consumer(str(other), class_type, name, *_input_info(class_type, name)))
    return found


def _empty_output(prompt, source: Source) -> tuple[str, bool]:
    """(name of `source`'s output, whether the source node has an input of that name left unconnected): the pack's
    pass-through nodes name an output after the input it hands on, so that input is why the output is empty."""
    import nodes  # ComfyUI's registry (the pack's own package is never imported under this name)
    cls = nodes.NODE_CLASS_MAPPINGS.get(source.class_type)
    names = list(getattr(cls, "RETURN_NAMES", None) or getattr(cls, "RETURN_TYPES", None) or ())
    output = names[source.output] if source.output < len(names) else f"#{source.output}"
    unconnected = output not in _node(prompt, source.node_id).get("inputs", {})
    return output, bool(unconnected and _input_info(source.class_type, output)[0])


def _upstream_fix(prompt, source: Source, kind: str) -> str:
    output, empty = _empty_output(prompt, source)
    return (f"connect a {kind} to {source.label()}'s '{output}' input" if empty
            else f"check {source.label()}'s '{output}' output")


def check_passthrough(node: str, node_id, prompt, outputs: Mapping[int, tuple], record) -> None:
    """Outputs that hand on an optional input (PrecisionPolicy's 'model' output is its 'model' input, cloned):
    `outputs` maps output index -> (input name, value). An empty (None) one that a consumer requires stops the
    run here, on the input that is empty, instead of on the consumer with a raw AttributeError; consumers whose
    input is optional or takes any type (Dtype Inspect) get None, noted in the record."""
    for index, (name, value) in outputs.items():
        if value is not None:
            continue
        consumers = consumers_of(prompt, node_id, index)
        needed = [c for c in consumers if c.required and c.input_type != "*"]  # "*" (any) takes None too
        if not needed:
            if consumers:
                record.notes.append(f"'{name}' output is empty (None): passed to "
                                    + ", ".join(c.label() for c in consumers))
            continue
        kind = needed[0].input_type or name.upper()
        source = source_of(prompt, node_id, name)
        why = (f"its '{name}' input got nothing (None) from {source.label()}" if source
               else f"nothing is connected to its '{name}' input")
        problem = f"{why}, so its '{name}' output is empty, but " + ", ".join(c.label() for c in needed) + " needs it."
        fix = (_upstream_fix(prompt, source, kind) if source
               else f"connect a {kind} to this node's '{name}' input (e.g. from the checkpoint loader)")
        first = needed[0]
        fix += f", or connect {first.node()}'s '{first.input_name}' straight to a {kind}."
        raise PrecisionError(node, problem, fix, name)


def require_input(node: str, node_id, prompt, name: str, value):
    """`value`, or a PrecisionError naming the upstream node whose output was empty (and its unconnected input, when
    that is the reason)."""
    if value is not None:
        return value
    source = source_of(prompt, node_id, name)
    if source is None:
        raise PrecisionError(node, "the input is empty (None).", f"connect an output to '{name}'.", name)
    output, empty = _empty_output(prompt, source)
    problem = f"got nothing (None) from {source.label()}'s '{output}' output" + (
        f": nothing is connected to that node's '{output}' input." if empty else ".")
    kind = _input_info(_node(prompt, node_id).get("class_type", ""), name)[0] or "value"
    raise PrecisionError(node, problem, f"{_upstream_fix(prompt, source, kind)}, or connect '{name}' to another "
                                        f"{kind} output.", name)
