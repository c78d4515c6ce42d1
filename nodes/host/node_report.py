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


def ui_payload(record: PrecisionRecord, text: str | None = None) -> dict:
    """`text` (default: the record as text) is shown by the stock frontend; `precision_safe` carries the structured
    record (API + web UI)."""
    return {"text": [record.to_text() if text is None else text], "precision_safe": [record.to_dict()]}
