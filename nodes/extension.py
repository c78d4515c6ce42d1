"""Registration with ComfyUI's V3 node API: each feature folder lists its own nodes (`NODES`), gathered here."""
from comfy_api.latest import ComfyExtension, io

from .decode import node as decode
from .detailer import loaders as detailer_loaders
from .detailer import node as detailer
from .dtype_inspect import node as dtype_inspect
from .enforce import nodes as enforce
from .guard import node as guard
from .host.prompt_handlers import register
from .policy import node as policy
from .save import node as save

NODES = [*policy.NODES, *decode.NODES, *dtype_inspect.NODES, *detailer_loaders.NODES, *detailer.NODES, *guard.NODES,
         *save.NODES, *enforce.NODES]


class PrecisionSafeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ComfyExtension:
    register()  # the pack's on-prompt handlers (boolean checks, enforce downstream) on the running server, if any
    return PrecisionSafeExtension()
