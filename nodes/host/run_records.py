"""The precision records of the prompt that is running, for PrecisionSafeSaveImage's `precision` PNG chunk.

Records are made while nodes run, so a save node cannot read them from the prompt:

1. This registry, keyed by prompt id: `add()` files a record under the prompt and node that ComfyUI's executing
   context names (`comfy_execution.utils.get_executing_context`, a public contextvar set around every node run).
   Every pack node files its record through `node_report.recording()`.
2. Nodes reused from ComfyUI's cache do not run, so they make no record in this prompt (and core does not put their
   ui in this prompt's history either). For pack nodes upstream of the save node, the last record seen for the same
   node id and class is used, marked `cached`: it is the record of the run that made the reused output.
"""
from __future__ import annotations

import collections
import threading
from typing import Iterable, Optional

MAX_PROMPTS = 16  # prompts whose records are kept
MAX_REMEMBERED = 512  # (node id, class) pairs whose last records are kept for cached nodes

_lock = threading.Lock()
_runs: "collections.OrderedDict[str, collections.OrderedDict[str, list]]" = collections.OrderedDict()
_last: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()  # node id -> (class_type | None, records)

PACK_PREFIX = "PrecisionSafe"  # node ids of this pack's nodes


def executing() -> tuple[Optional[str], Optional[str]]:
    """(prompt id, node id) of the node ComfyUI is running now, or (None, None) outside the executor."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # a core without executing contexts
        return None, None
    ctx = get_executing_context()
    return (str(ctx.prompt_id), str(ctx.node_id)) if ctx is not None else (None, None)


def _remember(node_id: str, class_type: Optional[str], records: list) -> None:
    _last[node_id] = (class_type, list(records))
    _last.move_to_end(node_id)
    while len(_last) > MAX_REMEMBERED:
        _last.popitem(last=False)


def add(record, prompt_id: Optional[str] = None, node_id: Optional[str] = None,
        class_type: Optional[str] = None) -> None:
    """File a record (a PrecisionRecord or its dict) under the running prompt and node; outside a run it is dropped.
    An equal record already filed for that node is not filed again."""
    if prompt_id is None or node_id is None:
        running_prompt, running_node = executing()
        prompt_id = prompt_id if prompt_id is not None else running_prompt
        node_id = node_id if node_id is not None else running_node
    if prompt_id is None or node_id is None:
        return
    entry = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    node_id = str(node_id)
    with _lock:
        run = _runs.get(prompt_id)
        if run is None:
            run = _runs[prompt_id] = collections.OrderedDict()
            while len(_runs) > MAX_PROMPTS:
                _runs.popitem(last=False)
        filed = run.setdefault(node_id, [])
        if entry not in filed:  # filing the same record twice (node_report and the node itself) keeps one
            filed.append(entry)
        _remember(node_id, class_type, filed)


def registered(prompt_id: Optional[str]) -> "collections.OrderedDict[str, list]":
    """node id -> records filed for `prompt_id`, in the order the nodes finished."""
    with _lock:
        return collections.OrderedDict((k, list(v)) for k, v in _runs.get(prompt_id, {}).items())


def collect(prompt_id: Optional[str], prompt: Optional[dict] = None, upstream: Iterable[str] = (),
            exclude: Iterable[str] = ()) -> list[dict]:
    """Every pack node's records known for this prompt so far, in finishing order, then cached upstream ones:
    [{"node_id", "class_type", "upstream", "cached", "record"}] (one entry per record)."""
    prompt = prompt if isinstance(prompt, dict) else {}
    upstream, exclude = {str(u) for u in upstream}, {str(e) for e in exclude}
    class_of = lambda nid: (prompt.get(nid) or {}).get("class_type")  # noqa: E731
    found = registered(prompt_id)
    entries, cached = [], []
    with _lock:
        for node_id, records in found.items():
            _remember(node_id, class_of(node_id), records)
        for node_id in sorted(upstream - set(found), key=lambda n: list(prompt).index(n) if n in prompt else 0):
            cls = class_of(node_id)
            remembered = _last.get(node_id)
            if cls and cls.startswith(PACK_PREFIX) and remembered and remembered[0] in (None, cls):
                cached.append((node_id, remembered[1]))
    for node_id, records in list(found.items()):
        if node_id not in exclude:
            entries += [{"node_id": node_id, "class_type": class_of(node_id), "upstream": node_id in upstream,
                         "cached": False, "record": r} for r in records]
    for node_id, records in cached:
        entries += [{"node_id": node_id, "class_type": class_of(node_id), "upstream": True, "cached": True,
                     "record": r} for r in records]
    return entries
