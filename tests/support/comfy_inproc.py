"""ComfyUI's real executor, in this process: boot once, then run API-format prompts and collect what happened."""
import asyncio
import collections
import dataclasses
import inspect
import uuid

from comfy_client import ensure_models, import_comfy, link_testing_nodes, pack_module


class _Server:
    """What PromptExecutor needs of the server: a sink for the messages the websocket would carry."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclasses.dataclass
class RunResult:
    success: bool
    outputs: dict  # node id -> ui dict
    messages: list
    error: dict | None

    def ui(self, node_id):
        return self.outputs.get(str(node_id), {})


class ComfyHost:
    def __init__(self):
        ensure_models()
        link_testing_nodes()
        self.nodes = import_comfy()
        import execution
        self.execution = execution
        self.server = _Server()
        # The classic cache (what main.py uses without cache flags). main.py's cache_args keys change between
        # versions (0.33 adds "ram_inactive"); every size is 0 with this cache, so any key reads 0.
        self.executor = execution.PromptExecutor(self.server, cache_args=collections.defaultdict(int))

    def node_class(self, node_id):
        return self.nodes.NODE_CLASS_MAPPINGS[node_id]

    def pack_module(self, name):
        """A module of the pack as ComfyUI loaded it (its classes differ from a separate test import)."""
        return pack_module(self.nodes, name.removeprefix("nodes."))

    def output(self, node_id, index=0):
        """A node's output value from the last run (read from the executor's output cache)."""
        entry = self.executor.caches.outputs.get(str(node_id))
        if inspect.isawaitable(entry):  # a coroutine on newer ComfyUI (0.33)
            entry = asyncio.run(entry)
        assert entry is not None, f"node {node_id} has no cached output"
        return entry.outputs[index][0]

    def prepare(self, prompt: dict) -> dict:
        """What the server's on-prompt handlers make of a prompt: the pack's, in their order (boolean checks, the
        enforce-downstream rewrite)."""
        data = {"prompt": prompt}
        for handler in self.pack_module("nodes.host.prompt_handlers").HANDLERS:
            data = handler(data)
        return data["prompt"]

    def run(self, prompt: dict, fresh: bool = False) -> RunResult:
        """Validate and execute an API-format prompt, first rewritten as the server's on-prompt handler would.
        Unchanged nodes (e.g. the checkpoint loader) are reused from the previous run, as in a real session; `fresh`
        empties the cache first."""
        if fresh:
            self.executor.reset()
        self.server.messages = []
        prompt = self.prepare(prompt)
        self.last_prompt = prompt
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            raise AssertionError(f"prompt failed validation: {valid[1]} {valid[3]}")
        self.executor.execute(prompt, prompt_id, {}, valid[2])
        # an execution error, or a node blocked with a message (ComfyUI sends that as an execution_error on the
        # blocked node and runs the rest of the prompt)
        error = next((d for e, d in self.executor.status_messages + self.server.messages
                      if e == "execution_error"), None)
        outputs = {k: v.get("output", v) if isinstance(v, dict) else v
                   for k, v in self.executor.history_result.get("outputs", {}).items()}
        return RunResult(self.executor.success and error is None, outputs, list(self.executor.status_messages), error)
