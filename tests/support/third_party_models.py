"""A "third-party" detector checkpoint: the committed tiny detector saved again the way older ultralytics versions
pickled their models (classes under their old module paths, `getattr(Detect, "forward")`, numpy scalars), which
the built-in allow-list refuses and a trust entry can admit."""
import contextlib
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch

BBOX = Path(__file__).resolve().parents[1] / "assets" / "models" / "ultralytics" / "bbox" / "tiny_shapes_bbox.pt"
LEGACY = {"ultralytics.nn.modules.conv.Conv": "ultralytics.nn.modules",  # before the modules were split
          "ultralytics.utils.IterableSimpleNamespace": "ultralytics.yolo.utils"}  # ultralytics 8.0.x
# Globals such a file names beyond the built-in allow-list (numpy.dtype too, unless something in the process, e.g.
# ComfyUI, has already allowed it process-wide).
EXTRA = sorted(["ultralytics.nn.modules.Conv", "ultralytics.yolo.utils.IterableSimpleNamespace", "builtins.getattr",
                "numpy._core.multiarray.scalar", "numpy.dtype"])


@contextlib.contextmanager
def pickled_as(paths: dict):
    """Classes pickled under other (older) module paths while saving (stand-in modules where those paths no
    longer import, since the pickler checks that it could import them back)."""
    changed, added = [], []
    for full, module in paths.items():
        mod, _, name = full.rpartition(".")
        cls = getattr(importlib.import_module(mod), name)
        changed.append((cls, cls.__module__))
        cls.__module__ = module
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            key = ".".join(parts[:i])
            if key not in sys.modules:
                sys.modules[key] = types.ModuleType(key)
                added.append(key)
        if not hasattr(sys.modules[module], name):
            setattr(sys.modules[module], name, cls)
    try:
        yield
    finally:
        for cls, module in changed:
            cls.__module__ = module
        for key in added:
            del sys.modules[key]


class ForwardRef:
    """Pickles as getattr(Detect, "forward"), as some YOLOv8 / v10 checkpoints carry it."""

    def __reduce__(self):
        from ultralytics.nn.modules.head import Detect
        return getattr, (Detect, "forward")


def save_legacy_style(path: Path) -> list[str]:
    """Writes the file; returns the globals it names beyond the allow-list (what a trust entry must list)."""
    from precision_safe.nodes.detect import safe_load
    from ultralytics.utils import IterableSimpleNamespace
    ckpt = safe_load.safe_torch_load(BBOX)
    ckpt["train_args"] = IterableSimpleNamespace(**(ckpt.get("train_args") or {"imgsz": 128}))
    ckpt["best_fitness"] = np.float64(0.87)
    ckpt["head_forward"] = ForwardRef()
    with pickled_as(LEGACY):
        torch.save(ckpt, path)
    found = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - set(safe_load.YOLO_ALLOWED_GLOBALS))
    assert set(found) <= set(EXTRA) and len(found) >= len(EXTRA) - 1, found
    return found
