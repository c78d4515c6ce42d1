"""Drive a real ComfyUI headless: start `main.py` on loopback, convert UI-format workflows to API prompts via
/object_info, queue them, follow the websocket to the end, and fetch history and images.

Used by `make demo` (scripts/run_workflows.py), the server tests and the benchmarks. Standard library +
websocket-client only.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

import websocket  # websocket-client

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1; use as a context manager so it always stops."""

    def __init__(self, comfy_dir, output_dir=None, extra_args=(), log_path=None, front_end_root=None,
                 device_args=("--cpu",)):
        """`device_args`: ComfyUI's device flags, `--cpu` by default; () lets it use CUDA as it normally would."""
        self.comfy_dir = os.path.abspath(comfy_dir)
        self.device_args = list(device_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="comfy_out_")
        self.front_end_root = front_end_root or tempfile.mkdtemp(prefix="comfy_nofrontend_")
        self.extra_args = list(extra_args)
        self.log_path = log_path or os.path.join(self.output_dir, "server.log")
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=120):
        cmd = [sys.executable, "main.py", *self.device_args, "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes", "--front-end-root", self.front_end_root,
               "--database-url", "sqlite:///:memory:", "--output-directory", self.output_dir, *self.extra_args]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
               "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; log: {self.log_path}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    # -- HTTP --------------------------------------------------------------------------------------------------
    def get(self, path, raw=False):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            data = r.read()
        return data if raw else json.loads(data)

    def post(self, path, payload):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def object_info(self):
        if not hasattr(self, "_object_info"):
            self._object_info = self.get("/object_info")
        return self._object_info

    # -- running prompts ---------------------------------------------------------------------------------------
    def run(self, prompt: dict, timeout=600) -> "Run":
        """Queue an API-format prompt and follow the websocket until it ends; returns what happened."""
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
            if status != 200:
                return Run(None, False, [], None, {}, rejected=body)
            prompt_id = body["prompt_id"]
            events, arrivals, error, success = [], [], None, False
            deadline = time.time() + timeout
            while time.time() < deadline:
                msg = ws.recv()
                if not isinstance(msg, str):
                    continue  # binary preview frames
                m = json.loads(msg)
                data = m.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                events.append(m)
                arrivals.append(time.perf_counter())
                if m["type"] == "execution_error":
                    error = data
                elif m["type"] == "execution_success":
                    success = True
                elif m["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                elif m["type"] == "execution_interrupted":
                    break
            else:
                raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
        finally:
            ws.close()
        history = self.get(f"/history/{prompt_id}").get(prompt_id, {})
        return Run(prompt_id, success, events, error, history.get("outputs", {}), arrivals=arrivals)

    def image_bytes(self, image_ref: dict) -> bytes:
        q = urllib.parse.urlencode({k: image_ref.get(k, "") for k in ("filename", "subfolder", "type")})
        return self.get(f"/view?{q}", raw=True)


class Run:
    def __init__(self, prompt_id, success, events, error, outputs, rejected=None, arrivals=()):
        self.prompt_id, self.success, self.events = prompt_id, success, events
        self.error, self.outputs, self.rejected = error, outputs, rejected
        self.arrivals = list(arrivals)  # time.perf_counter() at which each event arrived

    def node_seconds(self, node_id) -> float:
        """A node's run time: from its `executing` message to the next `executing` message."""
        executing = [(t, e["data"].get("node")) for t, e in zip(self.arrivals, self.events) if e["type"] == "executing"]
        for (t, node), (t_next, _) in zip(executing, executing[1:]):
            if node == str(node_id):
                return t_next - t
        raise KeyError(f"node {node_id} did not run in prompt {self.prompt_id} (cached?)")

    def images(self):
        """(node id, image ref) for every image the run saved or previewed."""
        return [(nid, im) for nid, out in self.outputs.items() for im in out.get("images", [])]

    def precision_records(self):
        return {nid: out["precision_safe"][0] for nid, out in self.outputs.items() if out.get("precision_safe")}


# -- UI workflow -> API prompt ---------------------------------------------------------------------------------
def _input_specs(info):
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            yield name, info["input"][section][name]


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name, spec) -> bool:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (what the editor saves) into an API prompt, as the frontend does on Queue.

    Widget values are matched to input names in the node definition's order; an INT seed carries an extra
    'control after generate' value in the UI format, which is skipped. Muted/bypassed and frontend-only nodes
    are dropped.
    """
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in FRONTEND_ONLY:
            continue
        if node["type"] not in object_info:
            raise KeyError(f"workflow node {node['id']} has type {node['type']!r}, which this ComfyUI does not know")
        info = object_info[node["type"]]
        inputs = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        i = 0
        for name, spec in _input_specs(info):
            if not _is_widget(spec) or i >= len(values):
                continue
            if name not in inputs:
                inputs[name] = values[i]
            i += 1 + int(_has_control_widget(name, spec))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
