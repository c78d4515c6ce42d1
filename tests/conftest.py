"""Shared test set-up.

The pack is imported under the unique package name `precision_safe` (its folder is `nodes/`, the same name as
ComfyUI's top-level `nodes` module, so it must never be imported as a top-level package). Unit tests use
`from precision_safe.nodes.precision import context` and need no ComfyUI.
"""
import importlib.util
import ipaddress
import os
import socket
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# ultralytics does DNS look-ups and writes settings under ~ at import: keep it offline and in the ignored host dir
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(ROOT, ".host", "yolo_config"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(ROOT, ".host", "mplconfig"))


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

_real_connect, _real_getaddrinfo = socket.socket.connect, socket.getaddrinfo


def _is_loopback(host) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other host name
        return False


def _check(address):
    host = address[0] if isinstance(address, tuple) else None  # AF_UNIX paths are local
    if not _is_loopback(host):
        raise AssertionError(f"test tried to reach the network: {address!r}")


def _connect(self, address, *args):
    _check(address)
    return _real_connect(self, address, *args)


def _getaddrinfo(host, *args, **kw):
    _check((host,))
    return _real_getaddrinfo(host, *args, **kw)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test fails on a connect or DNS look-up of anything but loopback: nothing may download a model."""
    monkeypatch.setattr(socket.socket, "connect", _connect)
    monkeypatch.setattr(socket, "getaddrinfo", _getaddrinfo)

# the harness (tests/support), with the ComfyUI client the scripts share (comfy_client.py)
sys.path[:0] = [os.path.join(ROOT, "tests", "support")]


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's real executor in-process, with this pack loaded from custom_nodes/ and the tiny models."""
    from comfy_inproc import ComfyHost
    return ComfyHost()


def pytest_sessionfinish(session, exitstatus):
    """The servers and the in-process host are done: the PSTest_* nodes leave the dev host's custom_nodes/, so a
    ComfyUI started from it later (`make serve`) shows only the pack."""
    from comfy_client import unlink_testing_nodes
    unlink_testing_nodes()
