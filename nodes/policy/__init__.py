"""Precision Policy: the node that makes a precision context and attaches it to model clones."""
