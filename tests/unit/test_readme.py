"""The README's node table is one Markdown table with a row naming every node the pack registers (a blank line
inside it ends the table: the rows after it render as stray text, issue 11)."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tables(text):
    """Lists of consecutive '|' lines."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_the_node_table_is_one_table_with_every_node():
    node_ids = set()
    for path in glob.glob(os.path.join(ROOT, "nodes", "**", "*.py"), recursive=True):
        with open(path) as f:
            node_ids |= set(re.findall(r'node_id="(PrecisionSafe\w+)"', f.read()))
    assert len(node_ids) >= 8
    with open(os.path.join(ROOT, "README.md")) as f:
        tables = _tables(f.read())
    node_table = next(t for t in tables if t[0].startswith("| node |"))
    assert re.match(r"^\|[-| ]+\|$", node_table[1])  # the header's separator row
    listed = {m for row in node_table[2:] for m in re.findall(r"`(PrecisionSafe\w+)`", row)}
    assert listed == node_ids, (sorted(node_ids - listed), sorted(listed - node_ids))
