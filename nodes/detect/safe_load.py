"""Loading ultralytics .pt files without running the code a pickle can carry, and model-path checks.

An ultralytics .pt is a pickle of the model object: a plain `torch.load` (which ultralytics itself uses) runs
whatever callable the file names. Here the file is read with `torch.load(weights_only=True)`, whose restricted
unpickler only rebuilds tensors, containers and the classes we allow-list below; anything else is refused
before a single object is built. The YOLO wrapper is then assembled from the loaded model object, so the file
never goes through ultralytics' own (unrestricted) loader.
"""
from __future__ import annotations

import functools
import importlib
import os
import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import torch

# Every global that the detect and segment checkpoints of ultralytics 8.4.x pickle (found by scanning
# saved YOLOv8 / YOLO11 / YOLO26 detect and -seg models with torch.serialization.get_unsafe_globals_in_checkpoint)
# beyond what torch's weights_only unpickler already allows. All are torch / ultralytics nn.Module classes
# (plain data holders): none has a __reduce__ or __setstate__ that runs anything beyond setting attributes.
YOLO_ALLOWED_GLOBALS: tuple[str, ...] = (
    # torch layers
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.conv.ConvTranspose2d",  # seg mask prototypes
    "torch.nn.modules.linear.Identity",  # YOLO11 / YOLO26
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
    # ultralytics models and blocks (YOLOv8, YOLO11, YOLO26; detect and segment)
    "ultralytics.nn.tasks.DetectionModel",
    "ultralytics.nn.tasks.SegmentationModel",
    "ultralytics.nn.modules.conv.Concat",
    "ultralytics.nn.modules.conv.Conv",
    "ultralytics.nn.modules.conv.DWConv",
    "ultralytics.nn.modules.block.Attention",
    "ultralytics.nn.modules.block.Bottleneck",
    "ultralytics.nn.modules.block.C2PSA",
    "ultralytics.nn.modules.block.C2f",
    "ultralytics.nn.modules.block.C3k",
    "ultralytics.nn.modules.block.C3k2",
    "ultralytics.nn.modules.block.DFL",
    "ultralytics.nn.modules.block.PSABlock",
    "ultralytics.nn.modules.block.Proto",
    "ultralytics.nn.modules.block.Proto26",
    "ultralytics.nn.modules.block.SPPF",
    "ultralytics.nn.modules.head.Detect",
    "ultralytics.nn.modules.head.Segment",
    "ultralytics.nn.modules.head.Segment26",
    # training args as pickled in checkpoints saved during training (before ultralytics strips them to a dict)
    "ultralytics.utils.IterableSimpleNamespace",
)


class UnsafeModelFile(pickle.UnpicklingError):
    """The file references a Python global outside the allow-list; nothing in it was executed or loaded."""


class ModelFileError(ValueError):
    """A model file that can't be used: a name escaping its folder, an unsupported layout, a wrong kind of file."""


class ModelFileNotFound(ModelFileError, FileNotFoundError):
    """No such model file in the model folder(s). Never downloaded: ultralytics would try GitHub for bare names."""


# ---------------------------------------------------------------------------------------------- paths


def resolve_model_path(name: str | os.PathLike, folders: str | os.PathLike | Sequence[str | os.PathLike]) -> Path:
    """The real path of `name` inside one of `folders`, or a clear error.

    Refused: absolute names, names whose resolved path (after `..` and symlinks) leaves the folder. Symlinks that
    stay inside the folder are fine. Escapes are refused before looking whether the target exists.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    text = os.fspath(name)
    if not text or text.strip() != text:
        raise ModelFileError(f"invalid model file name {text!r}.")
    if os.path.isabs(text) or re.match(r"^[A-Za-z]:|^[\\/]", text):  # posix or windows absolute / drive
        raise ModelFileError(f"model file name {text!r} is an absolute path; give a name relative to the model folder.")
    searched = []
    for folder in folders:
        root = Path(folder).resolve()
        candidate = (root / text).resolve()  # follows symlinks and `..`
        if not candidate.is_relative_to(root):
            raise ModelFileError(
                f"model file name {text!r} points outside the model folder {root} (to {candidate}); refused."
            )
        if candidate.is_file():
            return candidate
        searched.append(str(root))
    raise ModelFileNotFound(
        f"model file {text!r} not found in {', '.join(searched) or 'any model folder'}. Nothing was downloaded: "
        "put the file in that folder (or pick one from the list)."
    )


# ------------------------------------------------------------------------------------- safe torch.load

_LOAD_LOCK = threading.Lock()  # safe_globals() swaps a process-wide set: keep our loads from interleaving


@functools.lru_cache(maxsize=None)
def _resolve_globals(names: tuple[str, ...]) -> list:
    """The allow-listed globals as (object, name) entries, imported lazily (ultralytics is slow to import).

    A class missing from the installed version is simply not allowed (its checkpoints are refused by name).
    """
    entries = []
    for name in names:
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr, None)
        if obj is not None:
            entries.append((obj, name))
    return entries


YOLO_ACCEPTED = "detect/segment checkpoints made with ultralytics 8.4.x (YOLOv8 / YOLO11 / YOLO26 layers)"


def _refuse(path: Path, names: Iterable[str], accepted: str) -> UnsafeModelFile:
    names = sorted(set(names))
    return UnsafeModelFile(
        f"{path.name} was NOT loaded: it references {', '.join(names)}, outside the allow-list. A .pt/.pth file "
        f"is a pickle and can run code when loaded, so only {accepted} are accepted. Nothing in the file was run."
    )


def safe_torch_load(
    path: str | os.PathLike, allowed: Sequence[str] = YOLO_ALLOWED_GLOBALS, accepted: str = YOLO_ACCEPTED
):
    """torch.load(weights_only=True) with `allowed` globals; anything else raises UnsafeModelFile.

    Zip checkpoints are scanned first (a static read of the pickle opcodes, nothing is built) so the error can
    name every offending global; the restricted unpickler then guards the real load, also for legacy files.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (ValueError, RuntimeError) as e:  # a TorchScript archive or some other zip
            raise ModelFileError(f"{path.name} is not a torch.save checkpoint ({e}); it was not loaded.") from None
        unknown = [g for g in found if g not in set(allowed)]
        if unknown:
            raise _refuse(path, unknown, accepted)
    with _LOAD_LOCK, torch.serialization.safe_globals(_resolve_globals(tuple(allowed))):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.findall(r"GLOBAL ([\w.]+)", str(e)) or re.findall(r"global ([\w.]+)", str(e))
            if found:
                raise _refuse(path, found, accepted) from None
            raise ModelFileError(f"{path.name} could not be read as a torch checkpoint: {e}") from None


# ----------------------------------------------------------------------------------------- YOLO object


def load_yolo(path: str | os.PathLike):
    """An `ultralytics.YOLO` built from a safely loaded detect / segment checkpoint (fp32, eval, CPU).

    `path` must already be a resolved, existing file (see resolve_model_path); it is never handed to
    ultralytics, which would load it unrestricted or, for a missing file, try to download it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFound(f"model file {path} not found. Nothing was downloaded.")
    ckpt = safe_torch_load(path)
    return yolo_from_checkpoint(ckpt, path)


def yolo_from_checkpoint(ckpt: dict, path: Path):
    """Mirror of ultralytics 8.4 `load_checkpoint` + `Model._load`, fed the already-loaded dict.

    `YOLO(existing_model)` only copies another Model's attributes, and `YOLO(path)` re-reads the file through
    `torch_safe_load` (unrestricted), so the wrapper is filled in here the way `Model.__init__`/`_load` do.
    """
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.engine.model import Model
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel, guess_model_task
    from ultralytics.utils import callbacks

    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, DetectionModel):  # SegmentationModel subclasses DetectionModel
        raise ModelFileError(f"{path.name} holds no ultralytics detection/segmentation model; it was not used.")
    model = model.float().eval()  # stored fp16; inference copies are cast per call (see yolo.py)
    model.args = {**DEFAULT_CFG_DICT, **(ckpt.get("train_args") or {})}
    model.pt_path = str(path)
    task = getattr(model, "task", None) or guess_model_task(model)
    if task not in ("detect", "segment") or (task == "segment") != isinstance(model, SegmentationModel):
        raise ModelFileError(f"{path.name} is a {task!r} model; only detect and segment models are supported.")
    model.task = task
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    for m in model.modules():  # same compatibility touch-ups as ultralytics' load_checkpoint
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    model.requires_grad_(False)

    yolo = YOLO.__new__(YOLO)
    torch.nn.Module.__init__(yolo)
    yolo.callbacks = callbacks.get_default_callbacks()
    yolo.predictor = yolo.trainer = yolo.metrics = yolo.cfg = None
    yolo.model = model
    yolo.ckpt = ckpt
    yolo.task = task
    yolo.ckpt_path = str(path)
    yolo.model_name = str(path)
    yolo.overrides = model.args = Model._reset_ckpt_args(model.args)
    yolo.overrides.update(model=str(path), task=task)
    del yolo.training  # as Model.__init__: attribute lookups go to the wrapped model
    return yolo
