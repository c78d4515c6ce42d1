"""Per-region prompts for the Detailer, one entry per line:

    a detailed face          the next region in order (an empty line: that region keeps the default prompt)
    [face] a detailed face   every region labelled "face"
    [#2] a red square        region 2 (regions are numbered over the whole batch in sort order)
    [skip]                   the next region in order is not detailed; "[hand] [skip]" skips every hand

A line with a key takes no place in the order. Most specific wins: [#n], then [label], then the line in order,
then the default (the node's positive / negative input).
"""
from __future__ import annotations

import dataclasses
import re

SKIP = "[skip]"
_KEYED = re.compile(r"^\[(#\d+|[\w .-]+)\]\s*(.*)$")


@dataclasses.dataclass(frozen=True)
class RegionPrompts:
    in_order: tuple[str, ...] = ()
    by_label: tuple[tuple[str, str], ...] = ()
    by_index: tuple[tuple[int, str], ...] = ()

    def text_for(self, index: int, label: str) -> str:
        """The prompt for region `index` ("" = the default; SKIP = not detailed)."""
        for i, text in self.by_index:
            if i == index:
                return text
        for lab, text in self.by_label:
            if lab == label:
                return text
        return self.in_order[index] if index < len(self.in_order) else ""

    def skips(self, index: int, label: str) -> bool:
        return self.text_for(index, label) == SKIP


def parse(text: str) -> RegionPrompts:
    in_order, by_label, by_index = [], [], []
    for line in (text or "").splitlines():
        line = line.strip()
        key, body = None, line
        if line.lower() != SKIP and (m := _KEYED.match(line)):
            key, body = m.group(1).strip(), m.group(2).strip()
        body = SKIP if body.lower() == SKIP else body
        if key is None:
            in_order.append(body)
        elif key.startswith("#"):
            by_index.append((int(key[1:]), body))
        else:
            by_label.append((key, body))
    return RegionPrompts(tuple(in_order), tuple(by_label), tuple(by_index))
