"""Enforce downstream: the nodes the prompt rewrite inserts and how they conform values."""
