"""The one client of ComfyUI that the scripts and the tests share: where the host's ComfyUI tree is and the tiny
models it needs, ComfyUI in this process (`import_comfy`), and a headless server on loopback (`ComfyServer`: start
`main.py`, convert UI-format workflows to API prompts via /object_info, queue them, follow the websocket to the end,
fetch history and images).

It reads ComfyUI through what ComfyUI 0.3.75 and 0.33 share: the HTTP/websocket API, main.py's command line and,
in-process, the imports main.py itself does before `nodes`. Standard library + websocket-client only.
"""
from __future__ import annotations

import asyncio
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The ComfyUI tree: $COMFYUI_DIR (`make test HOST=...` sets it), else the pinned host's (`make host`).
COMFY_DIR = os.path.abspath(os.environ.get("COMFYUI_DIR") or os.path.join(ROOT, ".host", "ComfyUI"))
CHECKPOINT = "tiny_sd15.safetensors"
OVERFLOW_VAE = "tiny_overflow_vae.safetensors"
TAESD = "tiny_taesd.safetensors"  # decodes fast; ComfyUI estimates its memory like the SD VAE's
TESTING_NODES = os.path.join(ROOT, "tests", "support", "testing_nodes")


def ensure_models(comfy_dir=COMFY_DIR):
    """The tiny models (and the committed detector/SAM files) in the tree's models/ folders."""
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "fixtures", "make_tiny_models.py"), comfy_dir],
                   check=True)


def link_testing_nodes(comfy_dir=COMFY_DIR):
    """The test-only node pack (PSTest_* nodes) next to the real one in the tree's custom_nodes/ (for a test run)."""
    link = os.path.join(comfy_dir, "custom_nodes", "precision_safe_testing")
    if os.path.realpath(link) != TESTING_NODES:
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(TESTING_NODES, link)


def unlink_testing_nodes(comfy_dir=COMFY_DIR):
    """Take the test-only nodes out of the tree again (a link to them only: anything else there is not ours)."""
    link = os.path.join(comfy_dir, "custom_nodes", "precision_safe_testing")
    if os.path.islink(link) and os.path.realpath(link) == TESTING_NODES:
        os.unlink(link)


def import_comfy(comfy_dir=COMFY_DIR, cpu=True):
    """ComfyUI imported into this process as main.py imports it, on the CPU (or, `cpu=False`, on the device ComfyUI
    picks), with its custom nodes loaded; returns its `nodes` module (NODE_CLASS_MAPPINGS)."""
    sys.argv = [sys.argv[0]] + (["--cpu"] if cpu else [])  # before comfy.cli_args is imported: no CUDA probing
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parsed now, with --cpu)
    import utils.install_util  # noqa: F401  (as main.py: before `nodes` puts comfy/ with its utils.py on sys.path)
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    return nodes



def pack_module(nodes, name: str):
    """A module of the pack as ComfyUI loaded it (`name` under nodes/, e.g. "host.facts"): its classes are the ones
    the nodes use, not those of a separate import."""
    module = nodes.NODE_CLASS_MAPPINGS["PrecisionSafePolicy"].__module__  # <pack>.nodes.policy.node
    return sys.modules[f"{module[:module.rindex('.nodes.')]}.nodes.{name}"]

# An API prompt that must stop on node "5" (SafeVAEDecode): a bf16 LATENT (from the test-only PSTest_CastLatent)
# under a policy with on_mismatch=error.
ERROR_MODE_PROMPT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
    "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
    "3": {"class_type": "PSTest_CastLatent", "inputs": {"samples": ["2", 0], "dtype": "bf16"}},
    "4": {"class_type": "PrecisionSafePolicy", "inputs": {
        "unet_dtype": "auto", "vae_dtype": "auto", "text_encoder_dtype": "auto", "detector_dtype": "auto",
        "sam_dtype": "auto", "intermediate_dtype": "auto", "on_mismatch": "error", "on_nonfinite": "retry"}},
    "5": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2],
                                                           "context": ["4", 0]}},
    "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
}

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1; use as a context manager so it always stops."""

    def __init__(self, comfy_dir, output_dir=None, extra_args=(), log_path=None, front_end_root=None, cpu=True):
        self.comfy_dir = os.path.abspath(comfy_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="comfy_out_")
        self.front_end_root = front_end_root or tempfile.mkdtemp(prefix="comfy_nofrontend_")
        self.cpu = cpu
        self.extra_args = (["--cpu"] if cpu else []) + list(extra_args)
        self.log_path = log_path or os.path.join(self.output_dir, "server.log")
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=120):
        cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes", "--front-end-root", self.front_end_root,
               "--database-url", "sqlite:///:memory:", "--output-directory", self.output_dir, *self.extra_args]
        env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.cpu:  # the test hosts' CPUs are small: oversubscribed threads made small ops 10-20x slower
            env.setdefault("OMP_NUM_THREADS", "2")
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
    def run(self, prompt: dict, timeout=600, on_event=None, extra_data=None) -> "Run":
        """Queue an API-format prompt and follow the websocket until it ends; returns what happened.
        `on_event(message)` sees each of the prompt's websocket messages as it arrives (e.g. to interrupt it);
        `extra_data` goes with the prompt (the editor sends {"extra_pnginfo": {"workflow": ...}}, which savers write
        into PNGs)."""
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            payload = {"prompt": prompt, "client_id": client_id}
            if extra_data is not None:
                payload["extra_data"] = extra_data
            status, body = self.post("/prompt", payload)
            if status != 200:
                return Run(None, False, [], None, {}, rejected=body)
            prompt_id = body["prompt_id"]
            events, error, success = [], None, False
            deadline = time.time() + timeout
            while time.time() < deadline:
                msg = ws.recv()
                if not isinstance(msg, str):
                    continue  # binary preview frames
                m = json.loads(msg)
                m["received"] = time.perf_counter()  # per-node times are the gaps between `executing` messages
                data = m.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                events.append(m)
                if on_event is not None:
                    on_event(m)
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
        return Run(prompt_id, success, events, error, history.get("outputs", {}))

    def image_bytes(self, image_ref: dict) -> bytes:
        q = urllib.parse.urlencode({k: image_ref.get(k, "") for k in ("filename", "subfolder", "type")})
        return self.get(f"/view?{q}", raw=True)


class Run:
    def __init__(self, prompt_id, success, events, error, outputs, rejected=None):
        self.prompt_id, self.success, self.events = prompt_id, success, events
        self.error, self.outputs, self.rejected = error, outputs, rejected

    def images(self):
        """(node id, image ref) for every image the run saved or previewed."""
        return [(nid, im) for nid, out in self.outputs.items() for im in out.get("images", [])]

    def node_seconds(self) -> dict:
        """Seconds each node ran, from the arrival of its `executing` message to the next one (the last node's to
        the end of the prompt). Nodes reused from the cache send none and are absent."""
        marks = [(e["received"], e["data"].get("node")) for e in self.events if e["type"] == "executing"]
        ends = [e["received"] for e in self.events if e["type"] in ("execution_success", "execution_error")]
        times = {}
        for i, (t, node) in enumerate(marks):
            if node is None:
                continue
            nxt = marks[i + 1][0] if i + 1 < len(marks) else (ends[0] if ends else None)
            if nxt is not None:
                times[node] = nxt - t
        return times

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
