"""Save Image (with precision record): core's saver plus a `precision` PNG chunk."""
