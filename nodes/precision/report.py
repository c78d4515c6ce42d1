"""What a node did, precision-wise: the record shown on the node and kept in the run's history."""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass
class PrecisionRecord:
    """Filled while one node runs; rendered to text for the node and to a dict for the API/web UI."""

    node: str
    context_source: str = ""
    ran: dict = dataclasses.field(default_factory=dict)  # role -> "bf16 · cuda"
    casts: list = dataclasses.field(default_factory=list)  # "latent: bf16 -> fp32"
    retries: list = dataclasses.field(default_factory=list)  # "items [1] fp16 -> bf16: finite"
    warnings: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    seconds: Optional[float] = None
    stages: dict = dataclasses.field(default_factory=dict)  # stage -> seconds, for nodes that time their steps

    def ran_at(self, role: str, dtype: str, device: str) -> None:
        self.ran[role] = f"{dtype} · {device}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_text(self, include_ran: bool = True) -> str:
        lines = [f"{self.node}" + (f" (context: {self.context_source})" if self.context_source else "")]
        for role, where in (self.ran.items() if include_ran else ()):
            lines.append(f"  {role}: {where}")
        lines += [f"  cast {c}" for c in self.casts]
        lines += [f"  retry {r}" for r in self.retries]
        lines += [f"  WARNING {w}" for w in self.warnings]
        lines += [f"  {n}" for n in self.notes]
        if self.seconds is not None:
            lines.append(f"  time {self.seconds * 1000:.1f} ms")
        if self.stages:
            lines.append("  stages " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.stages.items()))
        return "\n".join(lines)
