"""segment-anything (SAM) loading and box-prompted mask refinement with an explicit precision policy.

Precision policy (see shared/notes/detector.md): only the image encoder runs at the requested dtype. The
prompt encoder and mask decoder always run in fp32, because segment-anything 1.0 cannot run them in half:
its prompt encoder's positional-encoding matrix stays fp32 and meets fp16 coordinates in a matmul. The image
embeddings are cast to fp32 at that boundary. The loaded model is never changed in place: casts and device
moves are made on cached copies, since one loaded SAM may be shared by several graph nodes.
"""
from __future__ import annotations

import json
import os
import re
from copy import deepcopy
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..precision.memo import PerSource
from .safe_load import ModelFileError, safe_torch_load

# Our committed tiny SAM (tests/assets/models/sams/tiny_sam_shapes.pth); also the sidecar json format.
TINY_SAM_CONFIG = {
    "img_size": 256,
    "patch_size": 16,
    "encoder_embed_dim": 64,
    "encoder_depth": 4,
    "encoder_num_heads": 4,
    "encoder_mlp_ratio": 4.0,
    "encoder_window_size": 8,
    "encoder_global_attn_indexes": [1, 3],
    "encoder_use_rel_pos": True,
    "encoder_qkv_bias": True,
    "prompt_embed_dim": 64,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 256,
    "decoder_num_heads": 4,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 64,
}
# (embed_dim, depth) of the official checkpoints; all use img_size 1024, patch 16, prompt dim 256.
STANDARD_VARIANTS = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
BOX_CHUNK = 32  # the decoder repeats the image embedding per box: bound that memory on many boxes


def build_sam_from_config(cfg: dict):
    """A Sam assembled from segment-anything's own classes (same wiring as its `_build_sam`)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = cfg["img_size"] // cfg["patch_size"]
    dim = cfg["prompt_embed_dim"]
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=cfg["img_size"],
            patch_size=cfg["patch_size"],
            embed_dim=cfg["encoder_embed_dim"],
            depth=cfg["encoder_depth"],
            num_heads=cfg["encoder_num_heads"],
            mlp_ratio=cfg["encoder_mlp_ratio"],
            out_chans=dim,
            qkv_bias=cfg["encoder_qkv_bias"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=cfg["encoder_use_rel_pos"],
            window_size=cfg["encoder_window_size"],
            global_attn_indexes=tuple(cfg["encoder_global_attn_indexes"]),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(cfg["img_size"], cfg["img_size"]),
            mask_in_chans=cfg["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=cfg["decoder_depth"],
                embedding_dim=dim,
                mlp_dim=cfg["decoder_mlp_dim"],
                num_heads=cfg["decoder_num_heads"],
            ),
            transformer_dim=dim,
            iou_head_depth=cfg["iou_head_depth"],
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def infer_sam_config(sd: dict, sidecar: dict | None = None) -> tuple[str, dict]:
    """Read a SAM config off state-dict shapes. Returns (variant, config); variant is vit_b/vit_l/vit_h or "custom".

    Shapes give everything except attention head counts, which have no parameter of their own: the encoder's
    comes from the relative-position tables, the decoder's (and the encoder's without rel-pos, and its window
    size) must come from the sidecar json for a non-standard model.
    """
    try:
        patch_w = sd["image_encoder.patch_embed.proj.weight"]
        grid = sd["image_encoder.pos_embed"].shape[1]
    except KeyError as e:
        raise ModelFileError(f"not a segment-anything SAM state dict (no {e.args[0]!r}); the file was not used.")
    embed, patch = patch_w.shape[0], patch_w.shape[-1]
    depth = _count(sd, r"image_encoder\.blocks\.(\d+)\.norm1\.weight")
    cfg: dict = {
        "img_size": grid * patch,
        "patch_size": patch,
        "encoder_embed_dim": embed,
        "encoder_depth": depth,
        "encoder_mlp_ratio": sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed,
        "encoder_qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in sd,
        "prompt_embed_dim": sd["image_encoder.neck.0.weight"].shape[0],
        "mask_in_chans": sd["prompt_encoder.mask_downscaling.3.weight"].shape[0],
        "decoder_depth": _count(sd, r"mask_decoder\.transformer\.layers\.(\d+)\.norm1\.weight"),
        "decoder_mlp_dim": sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        "num_multimask_outputs": sd["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        "iou_head_depth": _count(sd, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight"),
        "iou_head_hidden_dim": sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
    }
    rel = [sd.get(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    cfg["encoder_use_rel_pos"] = all(r is not None for r in rel)
    if cfg["encoder_use_rel_pos"]:
        cfg["encoder_num_heads"] = embed // rel[0].shape[1]  # table is [2*size-1, head_dim]
        sizes = [(r.shape[0] + 1) // 2 for r in rel]
        cfg["encoder_global_attn_indexes"] = [i for i, s in enumerate(sizes) if s == grid]
        windows = {s for s in sizes if s != grid}
        cfg["encoder_window_size"] = windows.pop() if len(windows) == 1 else 0

    variant = STANDARD_VARIANTS.get((embed, depth))
    if variant and cfg["img_size"] == 1024 and cfg["prompt_embed_dim"] == 256:
        return variant, cfg
    sidecar = sidecar or {}
    for key in SIDECAR_KEYS:
        if key in sidecar:
            if key in cfg and cfg[key] != sidecar[key]:
                raise ModelFileError(f"SAM sidecar says {key}={sidecar[key]!r} but the weights imply {cfg[key]!r}.")
            cfg[key] = sidecar[key]
    missing = [k for k in ("decoder_num_heads", "encoder_num_heads", "encoder_window_size") if k not in cfg]
    if missing:
        raise ModelFileError(
            f"non-standard SAM (embed_dim {embed}, depth {depth}, img_size {cfg['img_size']}): {', '.join(missing)} "
            "cannot be read from the weights. Put a json with these keys next to the .pth (same name, .json)."
        )
    cfg.setdefault("encoder_global_attn_indexes", [])
    return "custom", cfg


SIDECAR_KEYS = ("decoder_num_heads", "encoder_num_heads", "encoder_window_size", "encoder_global_attn_indexes")


def sidecar_path(path: str | Path) -> Path | None:
    """The sidecar json of checkpoint `path`: `<name>.json` beside it, else, for a symlinked checkpoint, beside the
    file it points to (where the json that came with it lives; one beside the link is the user's own and wins).
    None when there is none."""
    path = Path(path)
    for candidate in dict.fromkeys((path.with_suffix(".json"), Path(os.path.realpath(path)).with_suffix(".json"))):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar config of checkpoint `path` (see sidecar_path), or None; a clear error when it is not a JSON
    object."""
    found = sidecar_path(path)
    if found is None:
        return None
    fix = (f"make {found.name} one JSON object of the keys the weights cannot tell ({', '.join(SIDECAR_KEYS)}), "
           'e.g. {"decoder_num_heads": 8, "encoder_num_heads": 12, "encoder_window_size": 14}, or delete it (an '
           "official vit_b/l/h checkpoint needs none).")
    try:
        config = json.loads(found.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise ModelFileError(f"the SAM config {found} for {Path(path).name} is not valid JSON{where}; the model "
                             "was not loaded.", fix) from None
    if not isinstance(config, dict):
        raise ModelFileError(f"the SAM config {found} for {Path(path).name} holds a JSON "
                             f"{type(config).__name__}, not an object; the model was not loaded.", fix)
    return config


def load_sam(path: str | Path):
    """Load a SAM state dict safely (weights_only=True) and build the matching model (fp32, eval, CPU).

    Official checkpoints (vit_b/l/h) are recognised from key shapes and built with segment-anything's registry;
    other sizes need a sidecar `<name>.json` for the head counts (see infer_sam_config, sidecar_path).
    """
    from segment_anything import sam_model_registry

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"SAM model file not found: {path}. Nothing was downloaded.")
    # no globals allowed beyond torch's tensor defaults: pickled code raises UnsafeModelFile naming it
    sd = safe_torch_load(path, allowed=(), accepted="plain tensor state dicts")
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):  # some repacks nest the weights
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ModelFileError(f"{path.name} is not a SAM state dict (name -> tensor); it was not used.")
    variant, cfg = infer_sam_config(sd, read_sidecar(path))
    # Build on the meta device: skips the random init (seconds for vit_h); assign=True then adopts the tensors.
    with torch.device("meta"):
        sam = sam_model_registry[variant]() if variant != "custom" else build_sam_from_config(cfg)
    try:
        sam.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # missing / unexpected keys or a shape mismatch
        raise ModelFileError(f"{path.name} does not match the {variant} SAM layout: {e}") from None
    # pixel_mean/std are non-persistent buffers (not in the file): recreate them as real tensors.
    sam.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1), False)
    sam.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1), False)
    left = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:
        raise ModelFileError(f"SAM weights in {path.name} leave {left[:3]} unset.")
    sam.sam_variant = variant
    # fp32 as the reference copy (some repacks store fp16); refine_boxes makes its own cast copies
    return sam.float().eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------- inference


def preprocess_image(sam, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """[H,W,3] image in [0,1] of any float dtype -> ([1,3,S,S] fp32 normalised and padded, resized (h, w)).

    Done in fp32 whatever the model dtype: the antialiased resize has no fp16/bf16 CPU kernel, and SAM's
    pixel mean/std are fp32 on the 0-255 scale. The cast to the encoder dtype happens afterwards.
    """
    size = sam.image_encoder.img_size
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)  # as segment_anything's ResizeLongestSide
    x = image.to(device=sam.pixel_mean.device, dtype=torch.float32).permute(2, 0, 1)[None] * 255.0
    if (nh, nw) != (h, w):
        x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False, antialias=True)
    x = (x - sam.pixel_mean) / sam.pixel_std
    return F.pad(x, (0, size - nw, 0, size - nh)), (nh, nw)


def decode_masks(sam, embedding: torch.Tensor, boxes: torch.Tensor, points=None,
                 multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder output for N prompts (xyxy boxes, optionally with points, in the resized input frame) on one fp32
    image embedding. `points`: (coords [N,K,2], labels [N,K]); label -1 pads a prompt with fewer points.

    Returns low-res mask logits [N,M,S/4,S/4] and predicted IoU [N,M] (M = 1, or SAM's 3 candidates with
    `multimask`). Runs in fp32 (see module docstring).
    """
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def pick_masks(masks: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """[N,M,H,W] binary candidates and their scores [N,M] -> [N,H,W]: the union of every candidate scored at least
    `threshold`, or the best one where none is (Impact's rule for SAM's multimask output)."""
    keep = scores >= threshold
    best = scores.argmax(1)
    keep[torch.arange(len(best)), best] |= ~keep.any(1)
    return (masks * keep[..., None, None]).amax(1)


class _Runtime:
    """The SAM parts placed for one (dtype, device): image encoder at dtype, prompt encoder / decoder in fp32.

    Parts already where and as they need to be are shared with the loaded model (read-only use); the others
    are copies, so the loaded model is never cast or moved.
    """

    def __init__(self, sam, dtype: torch.dtype, device: torch.device):
        def placed(module: torch.nn.Module, want: torch.dtype) -> torch.nn.Module:
            tensors = [*module.parameters(), *module.buffers()]
            if all(t.device == device and (t.dtype == want or not t.is_floating_point()) for t in tensors):
                return module
            return deepcopy(module).to(device=device, dtype=want)

        self.image_encoder = placed(sam.image_encoder, dtype)
        self.prompt_encoder = placed(sam.prompt_encoder, torch.float32)
        self.mask_decoder = placed(sam.mask_decoder, torch.float32)
        self.pixel_mean = sam.pixel_mean.to(device=device, dtype=torch.float32)
        self.pixel_std = sam.pixel_std.to(device=device, dtype=torch.float32)
        self.mask_threshold = float(sam.mask_threshold)
        self.dtype = dtype


_RUNTIMES = PerSource()  # SAM model -> (dtype, device) -> its _Runtime


def _runtime(sam, dtype: torch.dtype, device: torch.device) -> _Runtime:
    return _RUNTIMES.made(sam, (dtype, str(device)), lambda: _Runtime(sam, dtype, device))[0]


def _padded_points(points, n: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-prompt point lists [(x, y, label), ...] as SAM's padded (coords [N,K,2], labels [N,K]) tensors."""
    if not points or not any(points):
        return None
    k = max(len(p) for p in points)
    coords = torch.zeros(n, k, 2, device=device)
    labels = torch.full((n, k), -1.0, device=device)  # -1: "not a point", SAM's own padding
    for i, prompt in enumerate(points):
        for j, (x, y, label) in enumerate(prompt):
            coords[i, j] = torch.tensor([x, y])
            labels[i, j] = float(label)
    return coords, labels


@torch.inference_mode()
def refine_boxes(sam, image: torch.Tensor, boxes, *, dtype: torch.dtype, device: torch.device, points=None,
                 multimask: bool = False, score_threshold: float = 0.0) -> torch.Tensor:
    """Masks for box prompts on one image: float32 [N,H,W] in {0,1} at the image's own resolution.

    image: [H,W,3] in [0,1], any float dtype. boxes: [N,4] xyxy in image pixels (tensor or array). points: None or
    one list per box of (x, y, label) in image pixels (label 1 foreground, 0 background). multimask: SAM's three
    candidates per prompt, merged by `pick_masks` at `score_threshold`.
    Only the image encoder runs at `dtype`; its embedding is cast to fp32 for the fp32 prompt encoder / decoder.
    """
    device = torch.device(device)
    h, w = int(image.shape[0]), int(image.shape[1])
    boxes = torch.as_tensor(np.asarray(boxes, np.float32) if not torch.is_tensor(boxes) else boxes)
    boxes = boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)  # prompt coordinates: fp32, like the PE
    if boxes.shape[0] == 0:
        return torch.zeros((0, h, w), dtype=torch.float32)
    rt = _runtime(sam, dtype, device)
    x, (nh, nw) = preprocess_image(rt, image.to(device))
    # Encoder input cast to the encoder's dtype (a half conv refuses an fp32 input); output back to fp32 for
    # the prompt encoder / decoder, which cannot run in half.
    embedding = rt.image_encoder(x.to(dtype)).float()
    scale = torch.tensor([nw / w, nh / h], device=device)
    boxes = boxes * scale.repeat(2)
    padded = _padded_points(points, boxes.shape[0], device)
    size = rt.image_encoder.img_size
    out = []
    for start in range(0, boxes.shape[0], BOX_CHUNK):
        chunk = slice(start, start + BOX_CHUNK)
        pts = None if padded is None else (padded[0][chunk] * scale, padded[1][chunk])
        logits, scores = decode_masks(rt, embedding, boxes[chunk], pts, multimask)
        # as Sam.postprocess_masks: up to the padded input size, drop the padding, then to the image size
        logits = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)[..., :nh, :nw]
        logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
        out.append(pick_masks((logits > rt.mask_threshold).float(), scores, score_threshold))
    return torch.cat(out).cpu()
