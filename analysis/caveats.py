"""What an analysis doubts and what it could not do: warnings and skipped fits, in the
order they were found. fits.json and the report list both; the command prints the
warnings."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Caveats:
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)   # {"what", "label", "reason"}

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def skip(self, what: str, label: str | None, reason: str) -> None:
        self.skipped.append({"what": what, "label": label, "reason": reason})
