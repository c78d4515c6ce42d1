"""Run an ultralytics detect / segment model at a chosen dtype on a chosen device, on ComfyUI-style images.

ultralytics' own predictor can't be used for this: it picks the dtype itself (`half=True` is silently ignored
on CPU, bf16 is not an option) and its AutoBackend casts and fuses the shared model object in place. So the
pre- and post-processing are done here with ultralytics' own NMS / box / mask helpers, around a cached cast
copy of the network; the loaded model is never modified.
"""
from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..precision.memo import PerSource

PAD_VALUE = 114 / 255  # ultralytics' letterbox grey


@dataclass
class Detections:
    """Detections on one image, in that image's pixel coordinates. All tensors on CPU."""

    boxes: torch.Tensor  # float32 [N, 4] xyxy
    scores: torch.Tensor  # float32 [N]
    class_ids: torch.Tensor  # int64 [N]
    class_names: list[str]
    masks: torch.Tensor | None  # float32 [N, H, W] in {0, 1} for segment models, else None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


_NETS = PerSource()  # network -> (dtype, device) -> its fused, cast copy


def inference_net(model, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The model's network fused and cast to (dtype, device): a cached copy, the original stays as loaded.

    Conv+BatchNorm are fused in fp32 before the cast, so half precision sees one rounding of the folded weights
    rather than a half BatchNorm. The whole network (weights and buffers) takes `dtype`, because a half conv
    refuses an fp32 input and vice versa ("Input type ... and weight type ... should be the same").
    """
    net = getattr(model, "model", model)  # accept a YOLO wrapper or its nn.Module

    def make():
        copy = deepcopy(net).float()
        copy = copy.fuse(verbose=False) if hasattr(copy, "fuse") else copy
        return copy.to(device=device, dtype=dtype).eval().requires_grad_(False)

    return _NETS.made(net, (dtype, str(device)), make)[0]


def letterbox(images: torch.Tensor, imgsz: int, stride: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B,H,W,C] in [0,1] (any float dtype) -> ([B,3,S,S] fp32 letterboxed, content size (h, w)).

    Same geometry as ultralytics' LetterBox (centred, rounding as `ops.scale_boxes` undoes it). Done in fp32:
    the antialiased resize has no fp16/bf16 CPU kernel, and fp32 keeps the 0-1 levels exact; the cast to the
    network dtype comes after.
    """
    size = -(-imgsz // stride) * stride  # the network needs a multiple of its largest stride
    b, h, w, c = images.shape
    x = images[..., :3].float().permute(0, 3, 1, 2)
    if c == 1:
        x = x.expand(b, 3, h, w)
    gain = min(size / h, size / w)
    nh, nw = max(round(h * gain), 1), max(round(w * gain), 1)
    if (nh, nw) != (h, w):  # antialias on downscale: like cv2's INTER_AREA that ultralytics uses for val images
        x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False, antialias=gain < 1)
    top, left = round((size - nh) / 2 - 0.1), round((size - nw) / 2 - 0.1)
    x = F.pad(x, (left, size - nw - left, top, size - nh - top), value=PAD_VALUE)
    return x, (nh, nw)


@torch.inference_mode()
def detect(
    model,
    images: torch.Tensor,
    *,
    dtype: torch.dtype,
    device: torch.device,
    conf: float,
    imgsz: int,
    iou: float = 0.7,
    max_det: int = 300,
) -> list[Detections]:
    """Detect (and for segment models, mask) objects in a [B,H,W,C] batch of images in [0,1].

    The network runs at `dtype` on `device`; pre-processing, NMS, box mapping and masks are fp32 (see the
    casts below). `imgsz` should be the size the model was trained at (tiny models find nothing at others).
    """
    from ultralytics.nn.modules.head import Segment
    from ultralytics.utils import nms, ops

    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected images [B,H,W,C] with C in 1/3/4, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0,1], got {images.dtype}")
    device = torch.device(device)
    net = inference_net(model, dtype, device)
    names = getattr(model, "names", None) or getattr(net, "names", {})
    head = net.model[-1]
    segment = isinstance(head, Segment)  # Segment26 included; its output carries mask prototypes
    stride = int(max(net.stride)) if hasattr(net, "stride") else 32

    b, h, w, _ = images.shape
    x, _ = letterbox(images.to(device), imgsz, stride)
    out = net(x.to(dtype))  # input cast to the network's dtype: mixed dtypes raise in conv
    preds, proto = (out[0][0], out[0][1]) if segment else (out[0] if isinstance(out, tuple) else out, None)
    # Network outputs back to fp32: torchvision's CPU nms has no Half/BFloat16 kernel ("nms_kernel" not
    # implemented for 'Half'), and scaling boxes up to image pixels in bf16 would add its own rounding
    # (bf16 values between 256 and 512 come in steps of 2).
    preds = preds.float()
    dets = nms.non_max_suppression(
        preds, conf, iou, max_det=max_det, nc=len(names) if segment else 0, end2end=getattr(head, "end2end", False)
    )
    results = []
    for i, det in enumerate(dets):
        boxes = ops.scale_boxes(x.shape[2:], det[:, :4].clone(), (h, w))
        masks = None
        if segment:
            if len(det):
                masks = ops.process_mask_native(proto[i].float(), det[:, 6:], boxes, (h, w)).float()
            else:
                masks = torch.zeros((0, h, w), dtype=torch.float32, device=det.device)
            masks = masks.cpu()
        cls = det[:, 5].long().cpu()
        results.append(
            Detections(
                boxes=boxes.float().cpu(),
                scores=det[:, 4].float().cpu(),
                class_ids=cls,
                class_names=[str(names[int(c)]) for c in cls],
                masks=masks,
            )
        )
    return results
