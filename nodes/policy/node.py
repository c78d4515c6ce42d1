"""PrecisionPolicy: make the precision context and apply it to MODEL / CLIP / VAE clones."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..host import extra_models
from ..host.attach import clip_with_policy, model_with_policy, vae_with_policy
from ..host.checks import BF16_IMAGES
from ..host.enforcement import governed_summary
from ..host.facts import describe_table, table
from ..host.inputs import Combo
from ..host.links import check_passthrough
from ..host.records import recording, ui_payload
from ..host.types import CATEGORY, PrecisionContextType
from ..precision.context import DTYPE_CHOICES, ON_MISMATCH, ON_NONFINITE, ROLES, PrecisionContext

_ROLE_TIPS = {
    "unet": "Compute dtype of the diffusion model (KSampler). auto: what ComfyUI chose for the connected MODEL (no "
            "cost). Another dtype converts plain weights once (a copy, its size shown on the node): no per-step "
            "cast. Quantized weights (GGUF, fp8, fp8 scaled, QuantizedTensor layers) are never copied: their ops "
            "dequantize them per layer to that dtype; the node says per format what was done.",
    "vae": "Dtype of VAE decode/encode. auto: what ComfyUI chose for the VAE, except fp16 for a VAE probed to "
           "overflow in fp16 (then bf16, or fp32 on GPUs without bf16).",
    "text_encoder": "Dtype the text encoder's weights are held in (what ComfyUI's --*-text-enc flags set). auto: "
                    "ComfyUI's choice. Another dtype converts the CLIP's weights once; Dtype Inspect checks it.",
    "detector": "Compute dtype of detection models (ultralytics YOLO) in the Detailer. auto: fp32 on CPU, bf16 on "
                "GPUs that have it, else fp16.",
    "sam": "Compute dtype of the SAM image encoder (its prompt encoder/mask decoder always stay fp32). auto: as "
           "detector.",
    "intermediate": "Dtype of IMAGE/LATENT/MASK tensors passed between nodes. auto: ComfyUI's (fp32). bf16 breaks "
                    "core Save Image / Preview Image and other nodes that convert IMAGEs to numpy (numpy has no "
                    "bf16); fp16 does not.",
}


class PrecisionPolicy(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafePolicy",
            display_name="Precision Policy",
            category=CATEGORY,
            description="Makes a precision context: the compute dtype of each role, and what to do on a dtype "
                        "mismatch or non-finite output. Connect it to pack nodes, or pass MODEL/CLIP/VAE through "
                        "it: they come out as clones carrying the policy, so core nodes downstream (KSampler, "
                        "VAEDecode) run at these dtypes too. The originals are never changed.",
            inputs=[
                *[Combo(f"{role}_dtype", options=list(DTYPE_CHOICES), default="auto", tooltip=tip)
                  for role, tip in _ROLE_TIPS.items()],
                Combo("on_mismatch", options=list(ON_MISMATCH), default="cast",
                      tooltip="cast: convert an input whose dtype disagrees and record it in the node's "
                              "report. error: stop on that node with a message naming the input."),
                Combo("on_nonfinite", options=list(ON_NONFINITE), default="retry",
                      tooltip="retry: redo only the NaN/Inf batch items in a wider dtype (fp16 -> bf16 -> "
                              "fp32). error: stop on the node. keep: pass it on with a warning."),
                io.Model.Input("model", optional=True,
                               tooltip="Optional MODEL; comes out as a clone computing at unet_dtype."),
                io.Clip.Input("clip", optional=True, tooltip="Optional CLIP; comes out as a clone carrying the policy."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional VAE; comes out as a copy decoding at vae_dtype."),
                *extra_models.inputs(),
                io.Boolean.Input("enforce_downstream", default=True, optional=True,
                                 tooltip="On (default): every link into a core or third-party node downstream of "
                                         "this one gets a conform step: IMAGE/LATENT/MASK/CONDITIONING cast to what "
                                         "that node takes (the dtype of weights it holds itself, else ComfyUI's "
                                         "IMAGE/LATENT dtype; recorded; refused on that node in on_mismatch error "
                                         "mode), MODEL/CLIP/VAE/UPSCALE_MODEL/CONTROL_NET/CLIP_VISION as clones with "
                                         "this policy whose dtype errors are explained. The nodes keep their ids: "
                                         "/history, progress and errors are where they would be without the pack."),
            ],
            outputs=[
                PrecisionContextType.Output("context", tooltip="Connect to the context input of pack nodes."),
                io.Model.Output("model_out", display_name="model", tooltip="Clone of the input MODEL with the policy (None if not given)."),
                io.Clip.Output("clip_out", display_name="clip", tooltip="Clone of the input CLIP with the policy (None if not given)."),
                io.Vae.Output("vae_out", display_name="vae", tooltip="Copy of the input VAE with the policy (None if not given)."),
                *extra_models.outputs(),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, unet_dtype, vae_dtype, text_encoder_dtype, detector_dtype, sam_dtype, intermediate_dtype,
                on_mismatch, on_nonfinite, model=None, clip=None, vae=None, enforce_downstream=True,
                upscale_model=None, control_net=None, clip_vision=None) -> io.NodeOutput:
        more = {"upscale_model": upscale_model, "control_net": control_net, "clip_vision": clip_vision}
        with recording(cls, model, clip, vae, *more.values()) as run:
            record = run.record
            check_passthrough(record.node, cls.hidden.unique_id, cls.hidden.prompt,
                              {1: ("model", model), 2: ("clip", clip), 3: ("vae", vae),
                               **extra_models.passthrough(more, 4)}, record)
            ctx = PrecisionContext(unet=unet_dtype, vae=vae_dtype, text_encoder=text_encoder_dtype,
                                   detector=detector_dtype, sam=sam_dtype, intermediate=intermediate_dtype,
                                   on_mismatch=on_mismatch, on_nonfinite=on_nonfinite)
            resolved = dict(zip(ROLES, table(ctx, {"unet": model, "text_encoder": clip, "vae": vae})))
            for role, want in resolved.items():
                record.ran_at(role, want.name, want.device)
            if resolved["intermediate"].dtype == torch.bfloat16:
                record.warnings.append(f"intermediate bf16: {BF16_IMAGES}")
            new_model = new_clip = new_vae = None
            if model is not None:
                new_model, note = model_with_policy(model, ctx, resolved["unet"])
                record.notes.append(note)
            if clip is not None:
                new_clip, note = clip_with_policy(clip, ctx, resolved["text_encoder"])
                record.notes.append(note)
            if vae is not None:
                new_vae, note = vae_with_policy(vae, ctx, resolved["vae"])
                record.notes.append(note)
            extras = extra_models.with_policy(ctx, record, more)
            if enforce_downstream:
                record.notes.append(governed_summary(cls.hidden.prompt, cls.hidden.unique_id))
        return io.NodeOutput(ctx, *run.carry(new_model, new_clip, new_vae, *extras),
                             ui=ui_payload(record, f"{describe_table(list(resolved.values()))}\n"
                                                   f"{record.to_text(include_ran=False)}"))

NODES = [PrecisionPolicy]
