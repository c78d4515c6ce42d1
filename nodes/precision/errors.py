"""The pack's one error type: raised on the node that found the problem, with a message a user can act on."""
from __future__ import annotations


class PrecisionError(RuntimeError):
    """A precision problem explained: which node, which input, what was found, what was expected, the fix."""

    def __init__(self, node: str, problem: str, fix: str, input_name: str | None = None):
        self.node = node
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        where = f"{node}, input '{input_name}'" if input_name else node
        super().__init__(f"[{where}] {problem} Fix: {fix}")


def mismatch_message(node: str, input_name: str, found: str, expected: str, role: str) -> PrecisionError:
    """The error for an input whose dtype disagrees with the context in `error` mode."""
    return PrecisionError(
        node,
        f"got {found} but the precision context expects {expected} for role '{role}'.",
        f"set Precision Policy's '{role}' to {found.split(' ')[0]} to accept it, or set on_mismatch to 'cast' "
        f"to convert it to {expected} (the cast is recorded in the report).",
        input_name,
    )
