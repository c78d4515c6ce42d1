"""Shared glue for pack nodes: the record of one run, its timing, and the ui payload shown on the node."""
from __future__ import annotations

import contextlib
import time

from ..precision.report import PrecisionRecord
from . import run_records


@contextlib.contextmanager
def recording(node: str, unique_id=None):
    """A PrecisionRecord for one node run, timed; `node` includes the graph id so messages point at it."""
    label = f"{node} #{unique_id}" if unique_id is not None else node
    record = PrecisionRecord(node=label)
    start = time.perf_counter()
    try:
        yield record
    finally:
        record.seconds = time.perf_counter() - start
        run_records.add(record)  # for the precision chunk of PNGs saved later in this run


def ui_payload(record: PrecisionRecord, roles_text: str | None = None) -> dict:
    """`text` is shown by the stock frontend; `precision_safe` carries the structured record (API + web UI).
    `roles_text` replaces the record's own per-role lines in the text."""
    text = record.to_text() if roles_text is None else f"{roles_text}\n{record.to_text(include_ran=False)}"
    return {"text": [text], "precision_safe": [record.to_dict()]}
