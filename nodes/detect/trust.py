"""Trusting a detector file on purpose: by its sha256, with the extra globals listed for that exact file.

Many popular third-party face / hand detectors were saved by older ultralytics versions and pickle classes the
built-in allow-list does not name (old module paths, loss helpers, numpy scalars, `getattr(Detect, "forward")`).
A user who trusts such a file lists it in a JSON config (README, "Trusting a detector file"):

    {"trusted": [{"sha256": "<64 hex digits>", "file": "face_yolov8m.pt",
                  "allow": ["ultralytics.nn.modules.Conv", "builtins.getattr"]}]}

The file is then still read by torch's restricted unpickler, only with those globals added, and only if each one
is something this module accepts (see `trustable`): layer classes (rebuilt empty, never constructed with arguments
from the file), ultralytics' training-argument / loss helpers, numpy scalars and dtypes, set / frozenset, and a
getattr that can only fetch a class's `forward`. Anything that could run code (os.system, eval, builtins, dill's
type loader, ...) stays refused whatever the config says. Another file with the same name but other bytes is not
trusted. Nothing is ever downloaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pickle
import re
from pathlib import Path
from typing import Optional

CONFIG_FOLDER, CONFIG_NAME = "precision_safe", "trusted_models.json"

# Old module paths of classes ultralytics has since moved; YOLOv10's model class became DetectionModel.
_MOVED_MODULES = {
    "ultralytics.yolo.utils": "ultralytics.utils",
    "ultralytics.yolo.utils.tal": "ultralytics.utils.tal",
    "ultralytics.yolo.utils.loss": "ultralytics.utils.loss",
    "ultralytics.yolo.utils.metrics": "ultralytics.utils.metrics",
}
_RENAMED = {"ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel"}
# Classes that are data holders: created empty by the unpickler and filled with the file's values.
_LAYER_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules", "ultralytics.nn.tasks")
_HELPER_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal")
_HELPERS = ("ultralytics.utils.IterableSimpleNamespace",)
_NUMPY = re.compile(r"^numpy\.(_?core\.multiarray\.(scalar|_reconstruct)|ndarray|dtype|dtypes\.\w+DType)$")


class TrustConfigError(ValueError):
    """The trust config can't be used as written; the message names the file and what to fix."""


def forward_getattr(obj, name, *default):
    """`getattr` as trusted YOLO checkpoints use it (a head's `forward`); any other attribute is refused."""
    if name != "forward":
        raise pickle.UnpicklingError(f"getattr(..., {name!r}) refused: a trusted file may only fetch 'forward'")
    return getattr(getattr(obj, "_precision_safe_class", obj), name, *default)


_STAND_INS = {"builtins.getattr": forward_getattr, "builtins.set": set, "builtins.frozenset": frozenset}


def _import(name: str):
    module, _, attr = name.rpartition(".")
    for candidate in (module, _MOVED_MODULES.get(module)):
        if candidate is None:
            continue
        try:
            return getattr(importlib.import_module(candidate), attr, None)
        except ImportError:
            continue
    return None


def resolve(name: str):
    """The object a pickled global name stands for in the installed torch / ultralytics / numpy, or None."""
    return _import(_RENAMED.get(name, name))


def _is_data_class(obj) -> bool:
    """A class the unpickler may rebuild empty and fill with data: torch / ultralytics layers and models,
    ultralytics' training-argument namespace and loss helpers (judged on where the class really lives)."""
    import torch

    if not isinstance(obj, type):
        return False
    if issubclass(obj, torch.nn.Module) and obj.__module__.startswith(_LAYER_MODULES):
        return True
    return f"{obj.__module__}.{obj.__qualname__}" in _HELPERS or obj.__module__.startswith(_HELPER_MODULES)


def rebuilt_blank(obj) -> bool:
    """Classes the unpickler gets as blank stand-ins (see safe_load): every torch / ultralytics class."""
    return isinstance(obj, type) and obj.__module__.startswith(("torch.nn.", "ultralytics."))


def trustable(name: str) -> tuple[Optional[object], str]:
    """(the object to give torch's unpickler for `name`, "") or (None, why it can never be allowed)."""
    if name in _STAND_INS:
        return _STAND_INS[name], ""
    if _NUMPY.match(name):
        obj = resolve(name)
        return (obj, "") if obj is not None else (None, "not in the installed numpy")
    if name.startswith(("torch.nn.", "ultralytics.")):
        obj = resolve(name)
        if obj is None:
            return None, "not found in the installed torch / ultralytics"
        if _is_data_class(obj):
            return obj, ""
        return None, "not a layer class or data holder (it could do more than hold data)"
    return None, "it can run code when unpickled"


def unpickler_globals(names) -> list[tuple[object, str]]:
    """(object, name) pairs for torch's unpickler for trustable `names`. numpy.dtype brings numpy's dtype classes:
    the unpickler fills a dtype only if its class (e.g. Float64DType) is allowed too, though the file never names
    it."""
    pairs = [(trustable(n)[0], n) for n in names]
    if "numpy.dtype" in names:
        import numpy.dtypes
        pairs += [(cls, f"numpy.dtypes.{n}") for n, cls in vars(numpy.dtypes).items()
                  if isinstance(cls, type) and n.endswith("DType")]
    return pairs


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class TrustEntry:
    sha256: str
    file: str
    allow: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TrustConfig:
    path: Path
    entries: tuple[TrustEntry, ...] = ()

    @classmethod
    def read(cls, path: str | Path) -> "TrustConfig":
        """The config at `path` (none there: nothing trusted). Read on every load, so edits need no restart."""
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TrustConfigError(f"the trust config {path} could not be read ({e}); fix the JSON or remove the "
                                   "file.") from None
        items = data.get("trusted") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise TrustConfigError(f"the trust config {path} must be {{\"trusted\": [...]}}; see the README.")
        entries = []
        for i, item in enumerate(items):
            digest = str(item.get("sha256", "")).lower() if isinstance(item, dict) else ""
            allow = item.get("allow", []) if isinstance(item, dict) else None
            if not re.fullmatch(r"[0-9a-f]{64}", digest) or not isinstance(allow, list):
                raise TrustConfigError(f"entry {i} of the trust config {path} needs \"sha256\" (64 hex digits) and "
                                       "\"allow\" (a list of names); see the README.")
            never = [f"{n} ({why})" for n in allow for obj, why in [trustable(str(n))] if obj is None]
            if never:
                raise TrustConfigError(f"entry {i} of the trust config {path} allows {', '.join(never)}: never "
                                       "allowed, even for a trusted file. Remove it from \"allow\".")
            entries.append(TrustEntry(digest, str(item.get("file", "")), tuple(str(n) for n in allow)))
        return cls(path, tuple(entries))

    def entry(self, digest: str) -> Optional[TrustEntry]:
        return next((e for e in self.entries if e.sha256 == digest), None)

    def advice(self, file: Path, digest: str, names: list[str]) -> str:
        """What to do about a refused file: how to trust exactly it, or why it can't be."""
        never = [f"{n} ({why})" for n in names for obj, why in [trustable(n)] if obj is None]
        if never:
            return (f" It also references {', '.join(never)}: never allowed, even for a trusted file, so this file "
                    "cannot be loaded safely; use a version of the model saved by a recent ultralytics (8.1 or newer).")
        entry = self.entry(digest)
        if entry is not None:
            return (f" Its sha256 is trusted in {self.path}, but that entry's \"allow\" lacks "
                    f"{', '.join(n for n in names if n not in entry.allow)}: add them if you trust them.")
        snippet = json.dumps({"sha256": digest, "file": file.name, "allow": sorted(names)})
        return (f" If you trust this exact file, add it to the \"trusted\" list in {self.path} (see the README, "
                f"\"Trusting a detector file\"): {snippet}. It is then still read by torch's restricted unpickler, "
                "with only these globals added.")
