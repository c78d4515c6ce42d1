"""The nodes enforce downstream inserts (never added by hand): a wrapper standing in for a governed node under its
id, and the conform step its expansion runs before the original node."""
from __future__ import annotations

from comfy_api.latest import io

from ..host import run_records
from ..host.dtype_guard import GuardInfo
from ..host.enforcement import CONFORM, expansion, value_input
from ..host.types import CATEGORY, PrecisionContextType
from ..precision.enforce import CONTEXT, MAX_OUTPUTS, SPEC, WRAPPER, WRAPPER_OUTPUT, Spec
from ..precision.report import PrecisionRecord
from .conform_value import Step, conform_values, policy_label

INTERNAL = f"{CATEGORY}/internal"


class _Any(str):
    """A type name that matches every input type in ComfyUI's link validation (its documented `__ne__` extension):
    the wrapper's outputs are whatever the node it stands in for returns."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


AnyOutput = io.Custom(_Any("*"))


def _wrapper_schema(node_id: str, output_node: bool) -> io.Schema:
    return io.Schema(
        node_id=node_id,
        display_name="Enforced " + ("output node" if output_node else "node") + " (inserted by Precision Policy)",
        category=INTERNAL,
        description="Inserted by Precision Policy's enforce_downstream in place of a node downstream of it (same id, "
                    "same inputs); runs that node with its inputs conformed to the precision context. Not meant to "
                    "be added by hand.",
        inputs=[io.String.Input(SPEC, tooltip="What this node stands in for (JSON), written by enforce_downstream."),
                PrecisionContextType.Input(CONTEXT, tooltip="The enforcing PrecisionPolicy's context.")],
        outputs=[AnyOutput.Output(f"out{i}", tooltip="Output of the node this stands in for.")
                 for i in range(MAX_OUTPUTS)],
        hidden=[io.Hidden.unique_id, io.Hidden.dynprompt],
        is_input_list=True, is_output_node=output_node, enable_expand=True,
    )


class _Enforced(io.ComfyNode):
    """What both wrappers run. (Each wrapper subclasses this, not the other: ComfyUI caches schema facts such as
    OUTPUT_NODE on the class, and a subclass would read its parent's.)"""

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:  # the governed node's own inputs arrive too; they order the run
        spec = Spec.loads(inputs[SPEC][0])
        node = cls.hidden.dynprompt.get_node(cls.hidden.unique_id)
        graph, original = expansion(spec, node)
        import nodes
        n = len(nodes.NODE_CLASS_MAPPINGS[spec.class_type].RETURN_TYPES)
        # a node without outputs still returns one placeholder: ComfyUI's expansion needs a result tuple
        return io.NodeOutput(*([original.out(i) for i in range(n)] or [None]), expand=graph.finalize())


class EnforcedNode(_Enforced):
    @classmethod
    def define_schema(cls):
        return _wrapper_schema(WRAPPER, output_node=False)


class EnforcedOutputNode(_Enforced):
    @classmethod
    def define_schema(cls):
        return _wrapper_schema(WRAPPER_OUTPUT, output_node=True)

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        # Always run (it only builds the expansion): ComfyUI reports a cached output node's ui from that node's cache
        # entry, and the ui is the expanded node's, so a cached wrapper would drop it from /history on a re-run. The
        # expanded node itself (and the conform steps) are still reused from the wrapper's subcache.
        return float("nan")


class ConformStep(io.ComfyNode):
    """The inputs of a governed node, conformed: tensors cast to the context's intermediate dtype (recorded) or
    refused in error mode, models as clones carrying the context. Lists pass through item by item."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=CONFORM,
            display_name="Conform inputs (inserted by Precision Policy)",
            category=INTERNAL,
            description="Inserted by enforce_downstream before a governed node: conforms its inputs (value_0, "
                        "value_1, ... in the order the spec lists them) to the precision context. Its errors are "
                        "reported on the governed node. Not meant to be added by hand.",
            inputs=[PrecisionContextType.Input("context", tooltip="The enforcing PrecisionPolicy's context."),
                    io.String.Input("spec", tooltip="The governed node, its inputs and their kinds (JSON).")],
            outputs=[io.AnyType.Output(f"value_out_{i}", display_name=f"value {i}", is_output_list=True,
                                       tooltip="The i-th conformed input.") for i in range(MAX_OUTPUTS)],
            hidden=[io.Hidden.unique_id, io.Hidden.dynprompt],
            is_input_list=True,
        )

    @classmethod
    def execute(cls, context, spec, **values) -> io.NodeOutput:
        spec = Spec.loads(spec[0])
        ctx, policy = context[0], policy_label(spec.policy)
        dynprompt = cls.hidden.dynprompt
        real_id = dynprompt.get_real_node_id(cls.hidden.unique_id)
        record = PrecisionRecord(node=spec.node, context_source=f"enforced by {policy}")
        guard = GuardInfo(guard_node=f"enforced by {policy}", prompt_id=run_records.executing()[0], ctx=ctx,
                          node=spec.node)
        out = [conform_values(kind, values[value_input(i)], Step(spec.node, name, policy, ctx, record, guard))
               for i, (name, kind) in enumerate(spec.conform.items())]
        if record.casts or record.notes:
            run_records.add(record, node_id=real_id, class_type=spec.class_type)
        return io.NodeOutput(*out)

NODES = [EnforcedNode, EnforcedOutputNode, ConformStep]
