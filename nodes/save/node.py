"""Save Image (with precision record): core SaveImage's files and metadata, plus a `precision` PNG text chunk."""
from __future__ import annotations

import json
import os

import folder_paths
import numpy as np
import torch
from comfy.cli_args import args
from comfy_api.latest import io
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..host.links import source_of
from ..host.records import recording
from ..host.types import CATEGORY
from ..precision.context import dtype_name
from ..precision.enforce import CONFORM, PACK_PREFIX, unwrap
from ..precision.errors import PrecisionError
from ..precision.finite import nonfinite_items

CHUNK = "precision"
FORMAT = "precision_safe.record/1"


def _upstream(prompt: dict, node_id: str) -> set:
    """Ids of the nodes `node_id` depends on, from the API prompt's links ([source id, output index])."""
    seen, todo = set(), [node_id]
    while todo:
        node = prompt.get(todo.pop())
        for value in (node or {}).get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                source = str(value[0])
                if source not in seen:
                    seen.add(source)
                    todo.append(source)
    return seen


def _is_pack_node(class_type) -> bool:
    """A pack node the user placed (a conform step files its record under the node it conformed for)."""
    return str(class_type or "").startswith(PACK_PREFIX) and class_type != CONFORM


def precision_chunk(run, prompt: dict) -> dict:
    """The JSON written to the PNG: the records that reached this node with its images, upstream first (`cached`:
    made by an earlier run whose output ComfyUI reused, under that run's node ids), then this node's own;
    `unrecorded_upstream`: the pack nodes upstream in the prompt whose records did not reach it (a core node in
    between made a new value from theirs)."""
    prompt = prompt if isinstance(prompt, dict) else {}
    entries = [{"node_id": e["node_id"], "class_type": e["class_type"], "upstream": True,
                "cached": e["prompt_id"] != run.prompt_id, "record": e["record"]} for e in run.upstream]
    entries.append({"node_id": str(run.node_id), "class_type": run.class_type, "upstream": False, "cached": False,
                    "record": run.record.to_dict()})
    seen = {e["node_id"] for e in entries}
    unrecorded = [n for n in _upstream(prompt, str(run.node_id))
                  if n not in seen and _is_pack_node((prompt.get(n) or {}).get("class_type"))]
    return {"format": FORMAT, "prompt_id": run.prompt_id, "saved_by": str(run.node_id), "records": entries,
            "unrecorded_upstream": sorted(unrecorded)}


class SaveImageWithRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeSaveImage",
            display_name="Save Image (with precision record)",
            category=CATEGORY,
            description="Saves images to the output folder like core Save Image (same file names and counter, the "
                        "usual prompt/workflow metadata) and adds a 'precision' PNG text chunk: the JSON precision "
                        "records that came with the images (dtypes used, casts, retries, warnings of the pack nodes "
                        "they passed through; upstream pack nodes whose records a core node dropped are listed), so "
                        "a saved image tells how it was made. bf16 IMAGEs (which core Save Image "
                        "cannot convert) are cast to fp32 and recorded. IMAGEs holding NaN/Inf (they would save "
                        "black) are refused, naming the node that produced them, unless save_nonfinite is on.",
            inputs=[
                io.Image.Input("images", tooltip="The images to save (any float dtype)."),
                io.String.Input("filename_prefix", default="ComfyUI",
                                tooltip="The prefix for the file to save; may include formatting such as "
                                        "%date:yyyy-MM-dd% or %Empty Latent Image.width%, as in core Save Image."),
                io.Boolean.Input("save_nonfinite", default=False, optional=True,
                                 tooltip="Save images holding NaN/Inf anyway (NaN pixels come out black); the record "
                                         "says so. Off: the run stops on this node, naming the node upstream."),
            ],
            outputs=[],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, filename_prefix="ComfyUI", save_nonfinite=False) -> io.NodeOutput:
        with recording(cls, images) as run:
            record = run.record
            if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
                raise PrecisionError(record.node, f"expected an IMAGE batch [B, H, W, C], got "
                                     f"{getattr(images, 'shape', type(images).__name__)}.",
                                     "connect an IMAGE output.", "images")
            if images.dtype != torch.float32:
                record.casts.append(f"images: {dtype_name(images.dtype)} -> fp32")
            bad = nonfinite_items(images)
            if bad:
                source = source_of(cls.hidden.prompt, cls.hidden.unique_id, "images")
                origin = source.label() if source else "the node upstream"
                if not save_nonfinite:
                    raise PrecisionError(
                        record.node, f"items {bad} of the IMAGE from {origin} hold NaN/Inf: they would be saved as "
                                     "black images.",
                        f"fix {origin} (an overflowing VAE decode: use Safe VAE Decode, which redoes such items at a "
                        "wider dtype), or set save_nonfinite to true to save them anyway (NaN pixels black).",
                        "images")
                record.warnings.append(f"items {bad} hold NaN/Inf (from {origin}): saved anyway (save_nonfinite), "
                                       "NaN pixels are black")
            full_output_folder, filename, counter, subfolder, filename_prefix = folder_paths.get_save_image_path(
                filename_prefix, folder_paths.get_output_directory(), images.shape[2], images.shape[1])
            record.notes.append(f"{images.shape[0]} image(s) {images.shape[2]}x{images.shape[1]} saved")
        chunk = precision_chunk(run, cls.hidden.prompt)
        results = []
        for batch_number, image in enumerate(images):
            pixels = np.nan_to_num(255.0 * image.detach().float().cpu().numpy(), nan=0.0, posinf=255.0, neginf=0.0)
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            metadata = None
            if not args.disable_metadata:  # as core: --disable-metadata writes no text chunks at all
                metadata = PngInfo()
                if cls.hidden.prompt is not None:
                    metadata.add_text("prompt", json.dumps(unwrap(cls.hidden.prompt)))  # as the user made it
                for key, value in (cls.hidden.extra_pnginfo or {}).items():
                    metadata.add_text(key, json.dumps(value))
                metadata.add_text(CHUNK, json.dumps(chunk))
            file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            img.save(os.path.join(full_output_folder, file), pnginfo=metadata, compress_level=4)
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(ui={"images": results, "precision_safe": [record.to_dict()]})

NODES = [SaveImageWithRecord]
