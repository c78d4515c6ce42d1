"""Registration with ComfyUI's V3 node API."""
from comfy_api.latest import ComfyExtension, io

from .detailer_node import Detailer, DetailerDetectionOptions, DetailerSamOptions, DetectSegs
from .enforce_node import ConformStep, EnforcedNode, EnforcedOutputNode
from .guard_node import PrecisionGuard
from .host.enforce import register
from .inspect_node import DtypeInspect
from .loader_nodes import DetectorLoader, SamLoader
from .policy_node import PrecisionPolicy
from .safe_decode_node import SafeVAEDecode
from .save_node import SaveImageWithRecord

NODES = [PrecisionPolicy, SafeVAEDecode, DtypeInspect, DetectorLoader, SamLoader, Detailer, DetailerDetectionOptions,
         DetailerSamOptions, DetectSegs, PrecisionGuard, SaveImageWithRecord, EnforcedNode, EnforcedOutputNode,
         ConformStep]


class PrecisionSafeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ComfyExtension:
    register()  # PrecisionPolicy's enforce_downstream: an on-prompt handler of the running server, if there is one
    return PrecisionSafeExtension()
