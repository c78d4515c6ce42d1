"""Server tests: one real ComfyUI (main.py) on loopback for the session, driven over HTTP + websocket."""
import pytest

from comfy_client import COMFY_DIR, ComfyServer, ensure_models, link_testing_nodes


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    ensure_models()
    link_testing_nodes()
    with ComfyServer(COMFY_DIR, output_dir=str(tmp_path_factory.mktemp("comfy_out"))) as s:
        yield s
