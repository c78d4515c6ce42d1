"""A test run links the test-only nodes (PSTest_*) into the host's custom_nodes/ and removes the link when it ends,
so a ComfyUI started later from the dev host (`make serve`) does not offer them (issue 11)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import os
from comfy_client import COMFY_DIR, link_testing_nodes

def test_links_the_testing_nodes():
    link_testing_nodes()
    assert os.path.islink(os.path.join(COMFY_DIR, "custom_nodes", "precision_safe_testing"))
"""


def test_a_test_run_leaves_no_test_nodes_in_the_hosts_custom_nodes(tmp_path):
    custom_nodes = tmp_path / "ComfyUI" / "custom_nodes"
    custom_nodes.mkdir(parents=True)
    (custom_nodes / "someone_elses_pack").mkdir()
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "COMFYUI_DIR": str(tmp_path / "ComfyUI"), "PYTHONPATH": os.path.join(ROOT, "tests")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                          "test_probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert sorted(os.listdir(custom_nodes)) == ["someone_elses_pack"]
