"""Finding the regions to detail: candidates from a detector, SEGS or a MASK, selected and ordered, their masks
refined by SAM, each given its crop, its paste mask and (for the Detailer) the size it is sampled at."""
from __future__ import annotations

import dataclasses

from ..detect.sam import refine_boxes
from ..detect.yolo import detect
from ..host.facts import resolution
from ..precision.diagnose import explain_dtype_errors
from ..precision.errors import PrecisionError
from ..regions import regions as R
from ..regions import segs as S
from ..regions.options import SamOptions

SOURCES = "connect exactly one of: detector (find regions), segs (regions from another node, e.g. Impact Pack's " \
          "detectors and SEGS filters) or mask (regions drawn as a MASK)."



def _candidates(work, detector, segs, mask, det_opts, ctx, device, record, clock) -> list[R.Candidate]:
    """The candidates of every image, selected and in order."""
    given = [name for name, value in (("detector", detector), ("segs", segs), ("mask", mask)) if value is not None]
    if len(given) != 1:
        found = " and ".join(given) + " are" if given else "no region source is"
        raise PrecisionError(record.node, f"{found} connected.", SOURCES, given[1] if len(given) > 1 else "detector")
    hw, batch = tuple(work.shape[1:3]), work.shape[0]
    with clock("detect"):
        if detector is not None:
            det = resolution(ctx, "detector", device=device)
            det_dtype = det.dtype
            record.ran_at("detector", det.name, det.device)
            with explain_dtype_errors(f"{record.node} / detect", modules={"detector": detector.model.model},
                                      inputs={"image": work}):
                dets = detect(detector.model, work, dtype=det_dtype, device=device, conf=det_opts.threshold,
                              imgsz=detector.imgsz)
            cands = [R.Candidate(b, tuple(d.boxes[i].tolist()), float(d.scores[i]), d.class_names[i],
                                 mask=d.masks[i] if d.masks is not None else None)
                     for b, d in enumerate(dets) for i in range(len(d))]
        elif segs is not None:
            try:
                cands = S.to_candidates(segs, hw, batch, record.notes)
            except S.SegsError as e:
                raise PrecisionError(record.node, str(e) + ".", "connect a SEGS output (Impact Pack's detectors, "
                                     "SEGS filters, or this pack's Detect SEGS).", "segs") from None
        else:
            if mask.shape[-2:] != hw or mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] not in (1, batch)):
                raise PrecisionError(record.node, f"the MASK has shape {tuple(mask.shape)} but the image batch is "
                                     f"{batch}x{hw[0]}x{hw[1]}.", "give a mask of the image's size (one, or one per "
                                     "image), e.g. resize it with a mask scaling node.", "mask")
            cands = S.mask_candidates(mask, batch)
    out = []
    for b in range(batch):
        out += R.select([c for c in cands if c.image_index == b], hw, det_opts, detected=segs is None)
    return out


def _refine_with_sam(work, cands, sam, opts: SamOptions, ctx, device, record, clock) -> list[R.Candidate]:
    """Each candidate's mask replaced by SAM's (one image-encoder pass per image, all prompts decoded together)."""
    sam_want = resolution(ctx, "sam", device=device)
    sam_dtype = sam_want.dtype
    record.ran_at("sam", f"{sam_want.name} encoder, fp32 prompt/decoder", sam_want.device)
    hw = tuple(work.shape[1:3])
    out = []
    with clock("sam"):
        for b in sorted({c.image_index for c in cands}):
            mine = [c for c in cands if c.image_index == b]
            prompts = [R.sam_prompt(c, opts, hw) for c in mine]
            with explain_dtype_errors(f"{record.node} / sam", modules={"sam": sam.model}, inputs={"image": work}):
                masks = refine_boxes(sam.model, work[b], [p[0] for p in prompts], dtype=sam_dtype, device=device,
                                     points=[p[1] for p in prompts], multimask=opts.multimask,
                                     score_threshold=opts.score_threshold)
            for c, m in zip(mine, masks):
                if c.crop is None:
                    out.append(dataclasses.replace(c, mask=m, mask_at=(0, 0)))
                else:
                    x0, y0, x1, y1 = c.crop
                    out.append(dataclasses.replace(c, crop_mask=m[y0:y1, x0:x1]))
    return out


def find_regions(work, sam, det_opts, sam_opts, crop_opts, ctx, device, record, clock, detector=None, segs=None,
                 mask=None) -> list[R.Region]:
    """Regions of the batch in processing order, with their crops, masks and (with crop_opts) sampling sizes."""
    cands = _candidates(work, detector, segs, mask, det_opts, ctx, device, record, clock)
    if sam is not None and cands:
        cands = _refine_with_sam(work, cands, sam, sam_opts, ctx, device, record, clock)
    hw = tuple(work.shape[1:3])
    regions = []
    with clock("crop"):
        for c in cands:
            if c.crop is not None:  # a SEG: its crop region and mask as given
                crop, m, dilation = c.crop, c.crop_mask, 0
            else:
                crop = R.crop_box(c.box, hw, det_opts.crop_factor)
                x0, y0, x1, y1 = crop
                m = c.mask_in(crop) if c.mask is not None else R.box_mask(c.box, crop)
                dilation = det_opts.dilation
            m = R.dilate(m.float(), sam_opts.dilation if sam is not None else dilation)
            where = f"image {c.image_index}: {c.label} at {tuple(round(v) for v in c.box)}"
            if m.sum() == 0:
                record.notes.append(f"{where} has an empty mask: skipped")
                continue
            x0, y0, x1, y1 = crop
            box_hw = (c.box[3] - c.box[1], c.box[2] - c.box[0])
            target = R.sample_size((y1 - y0, x1 - x0), box_hw, crop_opts) if crop_opts is not None else None
            regions.append(R.Region(c.image_index, len(regions), c.label, c.score, c.box, crop, m, target,
                                    c.control))
    if not regions:
        record.notes.append("no regions found: image passed through unchanged")
    return regions


def report(regions, record, outcome) -> str:
    """The node's report: one line per region (`outcome(region)` says what became of it), then the record."""
    lines = [f"{len(regions)} region(s)"]
    for r in regions:
        lines.append(f"  #{r.index} image {r.image_index}: {r.label} {r.score:.2f} box "
                     f"{tuple(round(v) for v in r.box)} -> {outcome(r)}")
    return "\n".join(lines) + "\n" + record.to_text()
