"""Server tests: one real ComfyUI (main.py) on loopback for the session, driven over HTTP + websocket."""
import os
import sys

import pytest

from host_paths import COMFY_DIR, ROOT, ensure_models, link_testing_nodes

sys.path.insert(0, os.path.join(ROOT, "scripts"))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from comfy_client import ComfyServer
    ensure_models()
    link_testing_nodes()
    with ComfyServer(COMFY_DIR, output_dir=str(tmp_path_factory.mktemp("comfy_out"))) as s:
        yield s
