"""Model folders for detectors and SAM, registered with ComfyUI's folder_paths under the names Impact Pack uses,
so models users already have in models/ultralytics/{bbox,segm} and models/sams are found."""
from __future__ import annotations

import os

import folder_paths

from ..detect.safe_load import ModelFileError
from ..detect.trust import CONFIG_FOLDER, CONFIG_NAME

FOLDERS = {
    "ultralytics_bbox": ("ultralytics", "bbox"),
    "ultralytics_segm": ("ultralytics", "segm"),
    "sams": ("sams",),
}


def register() -> None:
    for name, parts in FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, *parts)
        if name in folder_paths.folder_names_and_paths and path in folder_paths.folder_names_and_paths[name][0]:
            continue  # another pack (Impact) registered it already
        folder_paths.add_model_folder_path(name, path)
        folder_paths.folder_names_and_paths[name][1].update({".pt", ".pth", ".safetensors", ".json"})


def detector_names() -> list[str]:
    """'bbox/<file>' and 'segm/<file>' like Impact's UltralyticsDetectorProvider."""
    return [f"bbox/{n}" for n in folder_paths.get_filename_list("ultralytics_bbox")] + \
           [f"segm/{n}" for n in folder_paths.get_filename_list("ultralytics_segm")]


def detector_folders(name: str) -> tuple[str, list[str]]:
    """Split 'bbox/<file>' into the file name and the folders it may come from."""
    kind, _, file = name.partition("/")
    if kind not in ("bbox", "segm") or not file:
        raise ModelFileError(f"detector name must start with 'bbox/' or 'segm/', got {name!r}.")
    return file, folder_paths.get_folder_paths(f"ultralytics_{kind}")


def trust_config_path() -> str:
    """Where a user lists detector files trusted by sha256 (README, "Trusting a detector file"): in ComfyUI's user
    directory, outside any user's own folder, so ComfyUI's /userdata API cannot write it."""
    return os.path.join(folder_paths.get_user_directory(), CONFIG_FOLDER, CONFIG_NAME)


def sam_names() -> list[str]:
    return [n for n in folder_paths.get_filename_list("sams") if not n.endswith(".json")]


def sam_folders() -> list[str]:
    return folder_paths.get_folder_paths("sams")
