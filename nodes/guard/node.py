"""PrecisionGuard: MODEL/VAE clones on which a torch dtype error inside core nodes (KSampler, VAEDecode, ...) is
re-raised as the pack's explained error, on the core node that failed."""
from __future__ import annotations

from comfy_api.latest import io

from ..host import extra_models
from ..host.attach import find_context
from ..host.dtype_guard import GuardInfo, guard_model, guard_vae
from ..host.links import check_passthrough
from ..host.records import executing, recording, ui_payload
from ..host.types import CATEGORY, PrecisionContextType


class PrecisionGuard(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeGuard",
            display_name="Precision Guard",
            category=CATEGORY,
            description="Pass a MODEL and/or VAE through it before core nodes (KSampler, VAEDecode, VAEEncode, ...). "
                        "If a dtype mismatch happens inside them (e.g. half weights meeting fp32 inputs), the run "
                        "stops on that core node with an explained error (which submodule, both dtypes, which graph "
                        "input, the fix) instead of a raw torch traceback; so does a channel/shape mismatch between "
                        "model families (e.g. a 16-channel SD3 latent into an SD1.5 VAE: the latent's channels vs the "
                        "VAE's, which families make each). Changes no dtype and costs nothing while "
                        "nothing fails. Outputs are clones: other branches using the originals are not affected.",
            inputs=[
                io.Model.Input("model", optional=True,
                               tooltip="Optional MODEL; comes out as a clone whose sampling errors are explained."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional VAE; comes out as a copy (same weights) whose decode/encode errors "
                                     "are explained."),
                PrecisionContextType.Input("context", optional=True,
                                           tooltip="Optional precision context: named in the fix the errors suggest "
                                                   "(else one attached to the MODEL/VAE, else auto). Changes no "
                                                   "dtype; use PrecisionPolicy for that."),
                *extra_models.inputs(),
            ],
            outputs=[
                io.Model.Output("model_out", display_name="model",
                                tooltip="The guarded MODEL clone (None if no MODEL was given)."),
                io.Vae.Output("vae_out", display_name="vae",
                              tooltip="The guarded VAE copy (None if no VAE was given)."),
                *extra_models.outputs(),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model=None, vae=None, context=None, upscale_model=None, control_net=None,
                clip_vision=None) -> io.NodeOutput:
        more = {"upscale_model": upscale_model, "control_net": control_net, "clip_vision": clip_vision}
        with recording(cls, model, vae, *more.values()) as run:
            record = run.record
            check_passthrough(record.node, cls.hidden.unique_id, cls.hidden.prompt,
                              {0: ("model", model), 1: ("vae", vae), **extra_models.passthrough(more, 2)}, record)
            ctx, record.context_source = find_context(context, model, vae)
            prompt = cls.hidden.prompt if isinstance(cls.hidden.prompt, dict) else {}
            info = GuardInfo(
                guard_node=record.node, prompt_id=executing()[0],
                class_types={str(k): v.get("class_type", "") for k, v in prompt.items() if isinstance(v, dict)},
                ctx=ctx if record.context_source != "default (auto)" else None)
            new_model = new_vae = None
            if model is not None:
                new_model, how = guard_model(model, info)
                record.notes.append(f"MODEL clone: {how}")
            if vae is not None:
                new_vae, how = guard_vae(vae, info)
                record.notes.append(f"VAE copy: {how}")
            extras = extra_models.with_policy(ctx, record, more)
            if model is None and vae is None and not any(more.values()):
                record.warnings.append("nothing connected: connect a MODEL and/or a VAE")
        return io.NodeOutput(*run.carry(new_model, new_vae, *extras), ui=ui_payload(record))

NODES = [PrecisionGuard]
