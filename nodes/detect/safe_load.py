"""Loading ultralytics .pt files without running the code a pickle can carry, and model-path checks.

An ultralytics .pt is a pickle of the model object: a plain `torch.load` (which ultralytics itself uses) runs
whatever callable the file names. Here the file is read with `torch.load(weights_only=True)`, whose restricted
unpickler only rebuilds tensors, containers and the classes we allow-list below; anything else is refused
before a single object is built. Allowed classes are handed to the unpickler as blank stand-ins, so they are
only ever created empty and filled with the file's data: their constructors never run with the file's arguments.
Files the allow-list refuses can be trusted one by one, by sha256 (trust.py). The YOLO wrapper is then assembled
from the loaded model object, so the file never goes through ultralytics' own (unrestricted) loader.
"""
from __future__ import annotations

import functools
import os
import pickle
import posixpath
import re
import threading
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from . import trust

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
    """A model file that can't be used: a name escaping its folder, an unsupported layout, a wrong kind of file.
    `fix`, when given, is what to do about it (the loader node shows it; else: replace the file)."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


class ModelFileNotFound(ModelFileError, FileNotFoundError):
    """No such model file in the model folder(s). Never downloaded: ultralytics would try GitHub for bare names."""


# ---------------------------------------------------------------------------------------------- paths


def resolve_model_path(name: str | os.PathLike, folders: str | os.PathLike | Sequence[str | os.PathLike]) -> Path:
    """The path of `name` inside one of `folders`, or a clear error.

    Refused: empty or absolute names and names that climb out of the folder with `..`, judged on the name itself
    (as ComfyUI's folder_paths does), before looking whether the file exists. Symlinks a user placed inside the
    folder are followed wherever they point, as ComfyUI itself follows them.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    text = os.fspath(name)
    if not text or text.strip() != text:
        raise ModelFileError(f"invalid model file name {text!r}.")
    if os.path.isabs(text) or re.match(r"^[A-Za-z]:|^[\\/]", text):  # posix or windows absolute / drive
        raise ModelFileError(f"model file name {text!r} is an absolute path; give a name relative to the model folder.")
    normal = posixpath.normpath(text.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise ModelFileError(f"model file name {text!r} climbs out of the model folder with '..'; refused.")
    searched = []
    for folder in folders:
        candidate = Path(folder) / text
        if candidate.is_file():  # follows a symlink the user placed in the folder
            return candidate
        searched.append(str(Path(folder)))
    raise ModelFileNotFound(
        f"model file {text!r} not found in {', '.join(searched) or 'any model folder'}. Nothing was downloaded: "
        "put the file in that folder (or pick one from the list)."
    )


# ------------------------------------------------------------------------------------- safe torch.load

_LOAD_LOCK = threading.Lock()  # safe_globals() swaps a process-wide set: keep our loads from interleaving
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of torch's legacy magic number
REDOWNLOAD = "The file is damaged or not a checkpoint: re-download it (or copy it again)."


@functools.lru_cache(maxsize=None)
def _blank(cls: type, name: str) -> type:
    """A stand-in the unpickler gets for class `cls`: calling it, with whatever arguments the file supplies, gives
    an empty `cls` (its __init__ never runs), which the unpickler then fills with the file's data. So a file can't
    make an allowed class do work at load time (a YOLO model class given a URL as its config would download it)."""
    return type(cls.__name__, (), {"__new__": staticmethod(lambda _stand_in, *args, **kw: cls.__new__(cls)),
                                   "_precision_safe_class": cls, "__module__": name.rpartition(".")[0]})


def _entries(pairs) -> list:
    """(object, name) entries for torch.serialization.safe_globals; layer classes go in as blank stand-ins, and
    under a name no file uses as themselves (so the unpickler may fill their instances)."""
    out = []
    for obj, name in pairs:
        if trust.rebuilt_blank(obj):
            out += [(_blank(obj, name), name), (obj, f"precision_safe.filled.{name}")]
        else:
            out.append((obj, name))
    return out


@functools.lru_cache(maxsize=None)
def _resolve_globals(names: tuple[str, ...]) -> list:
    """The allow-listed globals as (object, name) entries, imported lazily (ultralytics is slow to import).

    A class missing from the installed version is simply not allowed (its checkpoints are refused by name).
    """
    return _entries((obj, name) for name in names if (obj := trust.resolve(name)) is not None)


YOLO_ACCEPTED = "detect/segment checkpoints made with ultralytics 8.4.x (YOLOv8 / YOLO11 / YOLO26 layers)"


def _refuse(path: Path, names: Iterable[str], accepted: str, trusted: Optional[trust.TrustConfig]) -> UnsafeModelFile:
    names = sorted(set(names))
    advice = trusted.advice(path, trust.sha256_file(path), names) if trusted is not None else ""
    return UnsafeModelFile(
        f"{path.name} was NOT loaded: it references {', '.join(names)}, outside the allow-list. A .pt/.pth file "
        f"is a pickle and can run code when loaded, so only {accepted} are accepted. Nothing in the file was run."
        + advice
    )


def _check_readable(path: Path) -> bool:
    """Whether `path` is a zip checkpoint; files that can't be one are refused with what is wrong with them."""
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path.name} is empty (0 bytes): the download or copy did not finish. {REDOWNLOAD}")
    with open(path, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path):
        return True
    if head.startswith(b"PK\x03\x04"):
        raise ModelFileError(f"{path.name} is truncated or damaged ({size} bytes, its zip directory is missing). "
                             f"{REDOWNLOAD}")
    if not head.startswith(b"\x80"):
        raise ModelFileError(f"{path.name} is not a checkpoint (it starts with {head[:8]!r}). {REDOWNLOAD}")
    return False


def _unknown_in_zip(path: Path, allowed: Sequence[str]) -> list[str]:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # a TorchScript archive, another zip, or damaged pickle data: never run, never named
        raise ModelFileError(f"{path.name} is not a torch.save checkpoint ({type(e).__name__} while reading its "
                             f"pickle); it was not loaded. {REDOWNLOAD}") from None
    return sorted(set(found) - set(allowed))


def _trusted_extras(path: Path, unknown: list[str], accepted: str, trusted: Optional[trust.TrustConfig]) -> list:
    """The extra unpickler entries a trusted file's config grants, if they cover `unknown`; else the refusal."""
    entry = trusted.entry(trust.sha256_file(path)) if trusted is not None else None
    if entry is None or not set(unknown) <= set(entry.allow):
        raise _refuse(path, unknown, accepted, trusted)
    return _entries(trust.unpickler_globals(entry.allow))


def _load(path: Path, entries: list):
    with _LOAD_LOCK, torch.serialization.safe_globals(entries):
        return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(path: Path, e: Exception) -> ModelFileError:
    """torch's error on a file that is no checkpoint, without its advice to load it unrestricted."""
    with open(path, "rb") as f:
        head = f.read(16)
    if isinstance(e, EOFError):
        what = "it ends too early: truncated"
    elif not head.startswith(_TORCH_LEGACY_MAGIC):
        what = "a plain Python pickle, not a torch.save checkpoint"
    else:
        what = f"{type(e).__name__} while unpickling"
    return ModelFileError(f"{path.name} could not be read as a torch checkpoint ({what}); it was not loaded. "
                          f"{REDOWNLOAD}")


def safe_torch_load(path: str | os.PathLike, allowed: Sequence[str] = YOLO_ALLOWED_GLOBALS,
                    accepted: str = YOLO_ACCEPTED, trusted: Optional[trust.TrustConfig] = None):
    """torch.load(weights_only=True) with `allowed` globals; anything else raises UnsafeModelFile, unless the
    file's sha256 is in `trusted` with those globals listed (see trust.py). Files that are empty, truncated or
    no checkpoint raise ModelFileError saying so.

    Zip checkpoints are scanned first (a static read of the pickle opcodes, nothing is built) so the error can
    name every offending global; the restricted unpickler then guards the real load, also for legacy files.
    """
    path = Path(path)
    extras = []
    if _check_readable(path):
        unknown = _unknown_in_zip(path, allowed)
        if unknown:
            extras = _trusted_extras(path, unknown, accepted, trusted)
    base = _resolve_globals(tuple(allowed))
    for attempt in range(2):
        try:
            return _load(path, base + extras)
        except pickle.UnpicklingError as e:
            found = re.findall(r"GLOBAL ([\w.]+)", str(e)) or re.findall(r"global ([\w.]+)", str(e))
            if not found:
                raise _unreadable(path, e) from None
            if attempt or extras:  # a legacy file names one global per attempt: consult the config once
                raise _refuse(path, found, accepted, trusted) from None
            extras = _trusted_extras(path, found, accepted, trusted)
        except Exception as e:  # torch's own errors on damaged data (EOFError, IndexError, UnicodeDecodeError...)
            raise _unreadable(path, e) from None


# ----------------------------------------------------------------------------------------- YOLO object


def load_yolo(path: str | os.PathLike, trusted: Optional[trust.TrustConfig] = None):
    """An `ultralytics.YOLO` built from a safely loaded detect / segment checkpoint (fp32, eval, CPU).

    `path` must already be a resolved, existing file (see resolve_model_path); it is never handed to
    ultralytics, which would load it unrestricted or, for a missing file, try to download it. `trusted`: the
    user's trust config (files trusted by sha256 with extra globals, see trust.py).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFound(f"model file {path} not found. Nothing was downloaded.")
    ckpt = safe_torch_load(path, trusted=trusted)
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
    train_args = ckpt.get("train_args") or {}
    if not isinstance(train_args, dict):  # older checkpoints keep an IterableSimpleNamespace
        train_args = dict(vars(train_args))
    model.args = {**DEFAULT_CFG_DICT, **train_args}
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
