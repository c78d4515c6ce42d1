"""SafeVAEDecode: VAE decode that finds NaN/Inf per batch item and redoes only those in a wider dtype."""
from __future__ import annotations

from comfy_api.latest import io

from ..host.attach import find_context
from ..host.checks import check_latent, warn_bf16_image
from ..host.facts import resolution
from ..host.links import require_input
from ..host.records import recording, ui_payload
from ..host.types import CATEGORY, PrecisionContextType
from ..host.vae_decode import safe_decode
from ..precision.conform import conform


class SafeVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeVAEDecode",
            display_name="Safe VAE Decode",
            category=f"{CATEGORY}/latent",
            description="Decodes a LATENT at the precision context's VAE dtype. Batch items that come out NaN/Inf "
                        "(an fp16 VAE overflowing gives a black image) are decoded again, alone, in a wider dtype "
                        "(fp16 -> bf16 -> fp32). A decode too big for the free memory (ComfyUI's own estimate) is done "
                        "tile by tile and stops between tiles on an interrupt, or refused with the figures when even "
                        "that cannot fit; out-of-memory also falls back to tiles. The node shows what it did: dtype "
                        "used, items retried, tiling, time.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode."),
                io.Vae.Input("vae", tooltip="The VAE. A VAE from PrecisionPolicy carries its policy."),
                PrecisionContextType.Input("context", optional=True,
                                           tooltip="Precision context; wins over one attached to the VAE."),
            ],
            outputs=[io.Image.Output("IMAGE", tooltip="Decoded images in the context's intermediate dtype.")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, samples, vae, context=None) -> io.NodeOutput:
        with recording(cls, samples, vae) as run:
            record = run.record
            vae = require_input(record.node, cls.hidden.unique_id, cls.hidden.prompt, "vae", vae)
            ctx, record.context_source = find_context(context, vae)
            latent = check_latent(record.node, samples.get("samples") if isinstance(samples, dict) else None,
                                  vae.latent_channels)
            between = resolution(ctx, "intermediate")
            latent = conform(latent, between, ctx.on_mismatch, latent.device, record=record, input_name="samples")
            images = safe_decode(vae, latent, ctx, record)
            images = images.to(between.dtype)  # our own output: no mismatch
            warn_bf16_image(record, images)
        return io.NodeOutput(*run.carry(images), ui=ui_payload(record))

NODES = [SafeVAEDecode]
