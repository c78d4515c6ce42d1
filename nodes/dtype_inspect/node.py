"""DtypeInspect: show dtype, device, shape and NaN/Inf statistics of any value; pass the value through unchanged."""
from __future__ import annotations

from comfy_api.latest import io

from ..host.attach import find_context
from ..host.records import recording
from ..host.types import CATEGORY, PrecisionContextType
from ..precision.errors import PrecisionError
from .describe import describe, flags, report_text


class DtypeInspect(io.ComfyNode):
    PASSES_THROUGH = {"value": 0}  # an empty value is named on the node it came from (links.py)

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeDtypeInspect",
            display_name="Dtype Inspect",
            category=CATEGORY,
            description="Shows on the node the dtype, device and shape of any value (MODEL, CLIP, VAE, LATENT, "
                        "IMAGE, MASK, CONDITIONING, tensors), min/max/mean and NaN/Inf counts of tensors, and flags "
                        "what disagrees with the precision context. The value passes through unchanged.",
            inputs=[
                io.AnyType.Input("value", tooltip="Any value to inspect; it is passed on unchanged."),
                PrecisionContextType.Input("context", optional=True,
                                           tooltip="Context to check against (else one attached to the value, "
                                                   "else auto)."),
                io.Boolean.Input("strict", default=False, optional=True,
                                 tooltip="Stop the run on this node when something disagrees with the context."),
            ],
            outputs=[
                io.AnyType.Output("value_out", display_name="value", tooltip="The input value, unchanged."),
                io.String.Output("report", tooltip="The report as text."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, value, strict=False, context=None) -> io.NodeOutput:
        with recording(cls, value) as run:
            record = run.record
            ctx, source = find_context(context, value)
            rows = describe(value)
            flagged = flags(rows, ctx)
            text = report_text(rows, flagged, source)
        if strict and flagged:
            raise PrecisionError(record.node, "; ".join(flagged) + ".",
                                 "fix the upstream node, change the Precision Policy roles, or turn strict off.",
                                 "value")
        payload = {"text": [text], "precision_safe": [{**record.to_dict(), "inspect": [
            {"label": row.label, "role": row.role, **row.info} for row in rows], "flags": flagged}]}
        return io.NodeOutput(*run.carry(value), text, ui=payload)

NODES = [DtypeInspect]
