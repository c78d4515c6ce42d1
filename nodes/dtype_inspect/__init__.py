"""Dtype Inspect: dtype, device, shape and NaN/Inf statistics of any value, checked against the context."""
