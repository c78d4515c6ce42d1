"""Loaders for ultralytics detectors (bbox/segm) and segment-anything models: safe loading, no downloads."""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..detect.safe_load import ModelFileError, UnsafeModelFile, load_yolo, resolve_model_path
from ..detect.sam import load_sam
from ..detect.trust import TrustConfig, TrustConfigError
from ..host.inputs import Combo
from ..host.records import node_label
from ..host.types import CATEGORY, DetectorType, SamType
from ..precision.errors import PrecisionError
from . import model_folders

model_folders.register()


@dataclasses.dataclass(frozen=True)
class LoadedDetector:
    name: str
    kind: str  # "bbox" or "segm"
    model: object  # ultralytics.YOLO, never modified (inference uses cached cast copies)
    imgsz: int  # the size it was trained at: ultralytics models find little at other sizes


@dataclasses.dataclass(frozen=True)
class LoadedSam:
    name: str
    model: object  # segment_anything Sam, fp32 as loaded


def _on_node(node: str, load):
    """`load()`, with a model file's problem raised on the node (naming the model_name input)."""
    try:
        return load()
    except UnsafeModelFile as e:
        raise PrecisionError(node, str(e), "use another file, or see above whether and how this exact file can be "
                             "trusted.", "model_name") from None
    except ModelFileError as e:
        raise PrecisionError(node, str(e), e.fix or "replace the file and queue again.", "model_name") from None
    except TrustConfigError as e:
        raise PrecisionError(node, str(e), "fix the trust config as the message says.", "model_name") from None


class DetectorLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeDetectorLoader",
            display_name="Detector Loader (ultralytics)",
            category=f"{CATEGORY}/detailer",
            description="Loads an ultralytics YOLO detection (bbox/) or segmentation (segm/) model from "
                        "models/ultralytics/, the folders Impact Pack uses. The .pt pickle is loaded through an "
                        "allow-list of ultralytics classes: a file that would run other code is refused, naming the "
                        "classes; a file you trust can be listed by its sha256 in the trust config (README). "
                        "Nothing is ever downloaded.",
            inputs=[Combo("model_name", options=model_folders.detector_names(),
                          tooltip="bbox/<file> gives boxes; segm/<file> gives boxes and masks.")],
            outputs=[DetectorType.Output("detector", tooltip="Connect to the Detailer or Detect SEGS.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        def load():
            file, folders = model_folders.detector_folders(model_name)
            trusted = TrustConfig.read(model_folders.trust_config_path())
            return load_yolo(resolve_model_path(file, folders), trusted)

        yolo = _on_node(node_label(cls), load)
        imgsz = yolo.overrides.get("imgsz") or 640
        imgsz = int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
        return io.NodeOutput(LoadedDetector(model_name, model_name.split("/")[0], yolo, imgsz))


class SamLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeSAMLoader",
            display_name="SAM Loader (segment-anything)",
            category=f"{CATEGORY}/detailer",
            description="Loads a segment-anything checkpoint (vit_b/l/h, or a small one with a .json config "
                        "beside it) from models/sams as plain tensors (weights_only). The Detailer uses it to "
                        "turn each detected box into a mask.",
            inputs=[Combo("model_name", options=model_folders.sam_names(),
                          tooltip="A SAM checkpoint in models/sams.")],
            outputs=[SamType.Output("sam", tooltip="Connect to the Detailer's or Detect SEGS' sam input.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        sam = _on_node(node_label(cls),
                       lambda: load_sam(resolve_model_path(model_name, model_folders.sam_folders())))
        return io.NodeOutput(LoadedSam(model_name, sam))

NODES = [DetectorLoader, SamLoader]
