"""Shared test set-up.

The pack is imported under the unique package name `precision_safe` (its folder is `nodes/`, the same name as
ComfyUI's top-level `nodes` module, so it must never be imported as a top-level package). Unit tests use
`from precision_safe.nodes.precision import context` and need no ComfyUI.
"""
import importlib.util
import os
import socket
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("YOLO_OFFLINE", "1")


def _import_pack():
    if "precision_safe" in sys.modules:
        return sys.modules["precision_safe"]
    spec = importlib.util.spec_from_file_location(
        "precision_safe", os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["precision_safe"] = mod
    spec.loader.exec_module(mod)
    return mod


_import_pack()

_real_connect = socket.socket.connect


def _loopback_only(self, address, *args):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
        raise AssertionError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address, *args)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test fails on a connect to anything but loopback: nothing may download a model."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's real executor in-process, with this pack loaded from custom_nodes/ and the tiny models."""
    from comfy_inproc import ComfyHost
    return ComfyHost()
