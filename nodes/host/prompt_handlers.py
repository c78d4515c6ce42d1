"""The pack's on-prompt handlers on the running server, in the order they run on every POST /prompt: non-boolean
BOOLEAN values of pack nodes marked so ComfyUI's validation refuses them (inputs.py), then enforce downstream's
rewrite (enforcement.py), which hands a prompt that does not validate on unchanged."""
from __future__ import annotations

import sys
import threading

from .enforcement import prepare
from .inputs import mark_non_booleans

HANDLERS = (mark_non_booleans, prepare)
_registered = threading.Event()


def register() -> bool:
    """Install `HANDLERS` on the running server, once. False without a server (in-process executors call them
    themselves)."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or not hasattr(instance, "add_on_prompt_handler") or _registered.is_set():
        return False
    for handler in HANDLERS:
        instance.add_on_prompt_handler(handler)
    _registered.set()
    return True
