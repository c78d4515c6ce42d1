"""`make serve` starts the dev host's ComfyUI with its web editor and the pack, for a person to click around."""
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from comfy_client import ROOT, free_port


def test_make_serve_starts_comfyui_with_the_editor_and_the_pack_and_no_error():
    port = free_port()
    proc = subprocess.Popen(["make", "-s", "serve", f"PORT={port}"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        if page is None:
            pytest.fail(f"make serve did not answer on port {port}: {proc.poll()}")
        assert "<html" in page.lower() and "comfy" in page.lower()  # the web editor, not an API-only server
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info/PrecisionSafePolicy", timeout=30) as r:
            assert "PrecisionSafePolicy" in json.loads(r.read())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # make and the ComfyUI it started
        output = proc.communicate(timeout=30)[0]
    # a first start looks right: nothing ComfyUI asks for is missing (the templates / docs packages' boxed ERROR,
    # torchaudio's tracebacks), no node file fails to import
    for sign in ("ERROR", "Traceback", "No module named", "Cannot import"):
        assert sign not in output, f"make serve printed {sign!r}:\n{output}"
