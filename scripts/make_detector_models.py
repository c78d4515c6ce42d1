#!/usr/bin/env python3
"""Regenerate the tiny detector fixtures under tests/assets/models/ (deterministic, offline, CPU).

    OMP_NUM_THREADS=2 .host/venv/bin/python scripts/make_detector_models.py [--only bbox,seg,sam] [--eval-only]

Makes, from synthetic square/circle scenes (tests/support/shapes.py):
  ultralytics/bbox/tiny_shapes_bbox.pt  tiny YOLOv8-style detector (2 classes, imgsz 128)
  ultralytics/segm/tiny_shapes_seg.pt   tiny YOLOv8-seg-style model
  sams/tiny_sam_shapes.pth (+ .json)    0.5 M-param segment-anything SAM (img_size 256), plain state_dict
then prints recall / mask IoU measured through nodes.detect on freshly generated scenes.
Needs ultralytics==8.4.190 (the pickled classes are version-specific) and segment-anything==1.0.
Takes ~15 min on 2 cores (bbox ~3.5, seg ~5, SAM ~6-10; longer when the box is shared). Reruns give
bit-identical files (seed=0, deterministic=True, workers=0, one training thread); --out DIR to compare.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".host" / "detector_work"  # ignored scratch space: datasets and ultralytics run folders
ASSETS = ROOT / "tests" / "assets" / "models"
BBOX_FILE = Path("ultralytics/bbox/tiny_shapes_bbox.pt")
SEG_FILE = Path("ultralytics/segm/tiny_shapes_seg.pt")
SAM_FILE = Path("sams/tiny_sam_shapes.pth")

IMGSZ = 128
# Seeds of the generated data: train/val for training, EVAL_SEED for the final report. The tests use others.
TRAIN_SEED, VAL_SEED, SAM_SEED, EVAL_SEED = 1, 2, 3, 4


def offline_env() -> None:
    """Everything ultralytics would fetch or write outside the repo, redirected (see shared/notes/detector.md).

    Must run before `import ultralytics`: it reads these at import time.
    """
    cfg = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".host" / "yolo_config")))
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no DNS look-ups / version checks at import
    os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".host" / "mplconfig"))
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    # train/val fetch Arial.ttf unless a font is already in place; any TTF will do, matplotlib ships one.
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    (cfg / "Ultralytics").mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (cfg / "Ultralytics" / name).exists():
            shutil.copyfile(ttf, cfg / "Ultralytics" / name)
    Path(os.environ["MPLCONFIGDIR"]).mkdir(parents=True, exist_ok=True)


offline_env()


def _import_pack():
    """The pack under its unique name `precision_safe` (as tests/conftest.py does): its `nodes/` folder must
    never be a top-level package, ComfyUI has its own `nodes` module. Without ComfyUI it imports nothing."""
    spec = importlib.util.spec_from_file_location(
        "precision_safe", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules["precision_safe"] = pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)


_import_pack()

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "support"))  # the synthetic scenes are test fixtures, not the product
import shapes  # noqa: E402

# YOLOv8 layout at width 0.125 (~0.4 M params detect): big enough for two shape classes, ~1-2 MB in fp16.
TINY_YAML = """\
nc: 2
scales:
  t: [0.33, 0.125, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]]
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]]
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 3, C2f, [256]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 3, C2f, [1024]]
  - [[15, 18, 21], 1, {head}]
"""
HEADS = {"detect": "Detect, [nc]", "segment": "Segment, [nc, 16, 32]"}


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------------------------------------- YOLO


def write_dataset(folder: Path, segment: bool, n_train: int = 192, n_val: int = 48) -> Path:
    """YOLO-format dataset of generated scenes (mixed sizes around IMGSZ, so letterbox padding is seen)."""
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    for split, seed, count in (("train", TRAIN_SEED, n_train), ("val", VAL_SEED, n_val)):
        rng = np.random.default_rng(seed)
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for i in range(count):
            h, w = (int(v) for v in rng.choice([96, 128, 160], size=2))
            scene = shapes.make_scene(rng, h, w)
            Image.fromarray((scene.image * 255).round().astype(np.uint8)).save(folder / "images" / split / f"{i:04d}.png")
            (folder / "labels" / split / f"{i:04d}.txt").write_text("\n".join(shapes.yolo_label_lines(scene, segment)))
    data = folder / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(shapes.CLASS_NAMES))
    data.write_text(f"path: {folder}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def train_yolo(task: str, out: Path, epochs: int) -> None:
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    # ultralytics sets CPU training threads to min(8, cores - 1): pin 1 so the float reductions, and so the
    # weights, are the same on any machine (it is 1 on the 2-core dev box the committed files were made on).
    torch_utils.NUM_THREADS = 1

    tag = "bbox" if task == "detect" else "seg"
    work = WORK / tag
    data = write_dataset(work / "data", segment=task == "segment")
    yaml = work / f"tiny-shapes-{tag}-t.yaml"  # trailing "-t" selects the `t` scale
    yaml.write_text(TINY_YAML.format(head=HEADS[task]))
    t0 = time.perf_counter()
    model = YOLO(str(yaml), task=task)
    model.train(
        data=str(data), epochs=epochs, imgsz=IMGSZ, batch=16, device="cpu", workers=0, seed=0,
        deterministic=True, plots=False, amp=False, project=str(work / "runs"), name="train", exist_ok=True,
        verbose=False, patience=0,
        # from scratch in ~1200 steps: a higher AdamW rate than ultralytics' "auto" (0.0017), less shrinking
        # augmentation and a longer mosaic-free finish, so the small shapes are learned in the time budget
        optimizer="AdamW", lr0=0.004, scale=0.3, close_mosaic=20,
    )
    print(f"[{tag}] trained {epochs} epochs in {time.perf_counter() - t0:.0f} s")
    save_clean_checkpoint(work / "runs" / "train" / "weights" / "best.pt", out)


def save_clean_checkpoint(best: Path, out: Path) -> None:
    """Re-save only what inference needs: fp16 model + its args, no optimizer/EMA/metrics/dates/local paths.

    Our own freshly trained file, so reading it with ultralytics' unrestricted loader is fine here.
    """
    from ultralytics import __version__
    from ultralytics.utils.patches import torch_load

    ckpt = torch_load(best, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).half().eval()
    for p in model.parameters():
        p.requires_grad = False
    drop = {"data", "project", "name", "save_dir", "model", "source", "cfg", "tracker"}
    args = {k: v for k, v in dict(getattr(model, "args", {}) or {}).items() if k not in drop}
    model.args = args
    for attr in ("pt_path", "criterion"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if isinstance(getattr(model, "yaml", None), dict) and "yaml_file" in model.yaml:
        model.yaml["yaml_file"] = Path(model.yaml["yaml_file"]).name
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": args, "version": __version__}, out)
    print(f"wrote {_show(out)} ({out.stat().st_size / 1e6:.2f} MB)")


# ----------------------------------------------------------------------------------------------- SAM


def sam_scene_batch(rng: np.random.Generator, img_size: int):
    """A scene whose long side is img_size (SAM's own input size) and short side 60-100 % of it."""
    short = int(rng.integers(int(img_size * 0.6), img_size + 1))
    h, w = (short, img_size) if rng.random() < 0.5 else (img_size, short)
    return shapes.make_scene(rng, h, w)


def jitter_boxes(rng: np.random.Generator, boxes: np.ndarray, h: int, w: int, amount: float = 0.1) -> np.ndarray:
    """Detector-like box prompts: each edge moved by up to `amount` of the box size, inward or outward."""
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, 1)
    out = boxes + rng.uniform(-amount, amount, size=boxes.shape) * size
    return np.clip(out, 0, [w, h, w, h]).astype(np.float32)


def train_sam(out: Path, steps: int) -> None:
    import torch.nn.functional as F

    from precision_safe.nodes.detect import sam as sam_mod

    # One thread: the same float reductions whatever the core count (reproducible weights), and no OpenMP
    # spin-waiting when the machine is shared (2 threads on 2 busy cores ran ~10x slower).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = sam_mod.TINY_SAM_CONFIG
    model = sam_mod.build_sam_from_config(cfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[sam] {n_params / 1e6:.2f} M params, config {cfg}")
    # lr 1e-3: 3e-3 learned "fill the box" only, 1e-2 diverged (800-step trials); prompt dim 64 rather than 32
    # gives the decoder 8 mask channels instead of 4, which was what made it use the image at all.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(SAM_SEED)
    size = cfg["img_size"]
    batch = 4
    t0 = time.perf_counter()
    for step in range(steps):
        scenes = [sam_scene_batch(rng, size) for _ in range(batch)]
        x = torch.cat([sam_mod.preprocess_image(model, torch.from_numpy(s.image))[0] for s in scenes])
        emb = model.image_encoder(x)
        loss = 0.0
        for i, s in enumerate(scenes):
            boxes = torch.from_numpy(jitter_boxes(rng, s.boxes, s.height, s.width))  # already in input frame
            logits, iou_pred = sam_mod.decode_masks(model, emb[i : i + 1], boxes)
            # ground truth in the padded img_size frame, at the decoder's low-res (img_size/4) resolution
            gt = torch.zeros(len(s.boxes), 1, size, size)
            gt[:, 0, : s.height, : s.width] = torch.from_numpy(s.masks.astype(np.float32))
            gt = F.interpolate(gt, logits.shape[-2:], mode="area")
            prob = logits.sigmoid()
            bce = F.binary_cross_entropy_with_logits(logits, gt)
            inter = (prob * gt).sum((-1, -2))
            dice = 1 - (2 * inter + 1) / (prob.sum((-1, -2)) + gt.sum((-1, -2)) + 1)
            hard = (prob > 0.5).float()
            true_iou = (hard * gt).sum((-1, -2)) / ((hard + gt).clamp(max=1).sum((-1, -2)) + 1e-6)
            loss = loss + bce + dice.mean() + F.mse_loss(iou_pred, true_iou.detach())
        loss = loss / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"[sam] step {step:5d} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    print(f"[sam] trained {steps} steps in {time.perf_counter() - t0:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    # plain tensors only: readable with torch.load(weights_only=True); the config goes in a sidecar json
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, out)
    out.with_suffix(".json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    print(f"wrote {_show(out)} ({out.stat().st_size / 1e6:.2f} MB) + {out.with_suffix('.json').name}")


# ------------------------------------------------------------------------------------------ evaluation


def evaluate(which: set[str], root: Path, n: int = 40) -> None:
    """Recall / IoU on fresh scenes, measured through the pack's own loading and inference code."""
    from precision_safe.nodes.detect import safe_load, sam as sam_mod, yolo

    scenes = shapes.make_scenes(EVAL_SEED, n, 192, 256)
    images = torch.stack([torch.from_numpy(s.image) for s in scenes])
    kw = dict(dtype=torch.float32, device=torch.device("cpu"), conf=0.25, imgsz=IMGSZ)
    total = sum(len(s.boxes) for s in scenes)
    for tag, path in (("bbox", root / BBOX_FILE), ("seg", root / SEG_FILE)):
        if tag not in which or not path.exists():
            continue
        model = safe_load.load_yolo(path)
        t0 = time.perf_counter()
        dets = yolo.detect(model, images, **kw)
        dt = (time.perf_counter() - t0) / n
        found = n_pred = 0
        ious = []
        for s, d in zip(scenes, dets):
            k, matched = shapes.match_recall(d.boxes.numpy(), d.class_ids.numpy(), s)
            found += k
            n_pred += len(d.boxes)
            if d.masks is not None:
                ious += [shapes.mask_iou(d.masks[j].numpy() > 0.5, s.masks[i]) for i, j in enumerate(matched) if j >= 0]
        msg = f"[{tag}] recall {found / total:.3f} precision {found / max(n_pred, 1):.3f} ({total} shapes, {dt * 1e3:.1f} ms/img)"
        if ious:
            msg += f", mask IoU {np.mean(ious):.3f}"
        print(msg)
    if "sam" in which and (root / SAM_FILE).exists():
        sam = sam_mod.load_sam(root / SAM_FILE)
        rng = np.random.default_rng(EVAL_SEED + 100)
        refined, as_box = [], []
        t0 = time.perf_counter()
        for s in scenes:
            boxes = jitter_boxes(rng, s.boxes, s.height, s.width)
            masks = sam_mod.refine_boxes(sam, torch.from_numpy(s.image), torch.from_numpy(boxes),
                                         dtype=torch.float32, device=torch.device("cpu"))
            for i in range(len(boxes)):
                refined.append(shapes.mask_iou(masks[i].numpy() > 0.5, s.masks[i]))
                as_box.append(shapes.mask_iou(shapes.box_mask(boxes[i], s.height, s.width), s.masks[i]))
        dt = (time.perf_counter() - t0) / n
        print(f"[sam] mask IoU {np.mean(refined):.3f} refined vs {np.mean(as_box):.3f} box-as-mask "
              f"({len(refined)} jittered boxes, {dt * 1e3:.1f} ms/img)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="bbox,seg,sam", help="comma list of bbox, seg, sam")
    ap.add_argument("--eval-only", action="store_true", help="skip training, just measure the existing files")
    ap.add_argument("--out", type=Path, default=ASSETS, help="models root (default tests/assets/models); "
                    "another folder lets a rerun be compared with the committed files")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--sam-steps", type=int, default=3000)
    a = ap.parse_args()
    which = set(a.only.split(","))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if not a.eval_only:
        if "bbox" in which:
            train_yolo("detect", a.out / BBOX_FILE, a.epochs)
        if "seg" in which:
            train_yolo("segment", a.out / SEG_FILE, a.epochs)
        if "sam" in which:
            train_sam(a.out / SAM_FILE, a.sam_steps)
    evaluate(which, a.out)


if __name__ == "__main__":
    main()
