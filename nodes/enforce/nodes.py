"""The node enforce downstream inserts on a governed link (never added by hand): it conforms one value to what its
consumer can take under the policy's context, so the consumer runs as itself, under its own id."""
from __future__ import annotations

import logging

from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..host.dtype_guard import GuardInfo
from ..host.facts import NodeClass
from ..host.links import prompt_label
from ..host.records import NodeRun, carried, executing
from ..host.types import CATEGORY, PrecisionContextType
from ..precision.enforce import CONFORM, CONTEXT, POLICY, SPEC, VALUE, Spec
from ..precision.errors import PrecisionError
from ..precision.report import PrecisionRecord
from .conform_value import Step, conform_value

log = logging.getLogger(__name__)


class ConformStep(io.ComfyNode):
    """One governed input, conformed: tensors cast to what the consumer takes (recorded) or refused in error mode,
    models as clones carrying the context. Lists pass through item by item. A refusal blocks the consumer with the
    pack's message, which ComfyUI reports as an execution error on the consumer's own id."""

    PASSES_THROUGH = {VALUE: 0}  # its input `value` is handed on as output 0 (an empty one: links.py names why)

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=CONFORM,
            display_name="Conform input (inserted by Precision Policy)",
            category=f"{CATEGORY}/internal",
            description="Inserted by enforce_downstream on a link into a node downstream of a Precision Policy: "
                        "conforms the value to what that node can take under the policy's context. Its refusals are "
                        "reported on that node. Not meant to be added by hand.",
            inputs=[io.AnyType.Input(VALUE, tooltip="The value going to the governed node."),
                    PrecisionContextType.Input(CONTEXT, tooltip="The enforcing PrecisionPolicy's context."),
                    io.String.Input(SPEC, tooltip="The governed node, its input and the value's kind (JSON).")],
            outputs=[io.AnyType.Output("value_out", display_name="value", is_output_list=True,
                                       tooltip="The value, conformed.")],
            hidden=[io.Hidden.unique_id],
            is_input_list=True,
        )

    @classmethod
    def execute(cls, value, context, spec) -> io.NodeOutput:
        import nodes  # ComfyUI's node registry (the pack's own package is never imported under this name)
        spec = Spec.loads(spec[0])
        ctx, policy = context[0], prompt_label(POLICY, spec.policy)
        record = PrecisionRecord(node=spec.node, context_source=f"enforced by {policy}")
        guard = GuardInfo(guard_node=f"enforced by {policy}", prompt_id=executing()[0], ctx=ctx,
                          node=spec.node)
        step = Step(spec.node, NodeClass(nodes.NODE_CLASS_MAPPINGS[spec.consumer], spec.node), spec.input, policy,
                    ctx, record, guard)
        out = []
        for item in value:
            try:
                out.append((item, conform_value(spec.kind, item, step)))
            except Exception as e:  # noqa: BLE001 - whatever it is, it must land on the user's node, not this step
                if not isinstance(e, PrecisionError):
                    log.exception("precision-safe: conforming %s input '%s' failed", spec.node, spec.input)
                out.append((item, ExecutionBlocker(str(e) if isinstance(e, PrecisionError)
                                                   else f"[{spec.node}, input '{spec.input}'] conforming it to "
                                                        f"{policy}'s context failed: {type(e).__name__}: {e}")))
        if not (record.casts or record.notes):  # nothing changed: the values pass on as they came
            return io.NodeOutput([conformed for _, conformed in out])
        # the record is the consumer's: it names the node and input the conform step changed a value for
        return io.NodeOutput([NodeRun(record, spec.node_id, spec.consumer, carried(item)).carry(conformed)[0]
                              for item, conformed in out])


NODES = [ConformStep]
