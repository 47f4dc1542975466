"""Bad input: one exception type that names where the problem is, and a report of counted skips.

Policy (``on_bad_input``):
  * ``"error"`` (default): the first bad item raises :class:`BadInputError` whose message names the file,
    the manifest line, the field and what was expected.
  * ``"skip"``: the item is left out, and the skip is counted by reason in a :class:`BadInputReport`
    that is printed at the end of the job. Nothing is ever dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

OnBadInput = Literal["error", "skip"]
ON_BAD_INPUT_CHOICES = ("error", "skip")

# Reason codes (stable strings: they appear in JSON reports).
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
EMPTY_TEXT = "empty_text"
UNKNOWN_LANGUAGE = "unknown_language"
MISSING_AUDIO = "missing_audio"
CORRUPT_AUDIO = "corrupt_audio"
EMPTY_AUDIO = "empty_audio"
NONFINITE_AUDIO = "nonfinite_audio"
DURATION_MISMATCH = "duration_mismatch"
MISSING_SHARD = "missing_shard"  # a shard's manifest or tar is absent (the whole shard is left out)


class BadInputError(ValueError):
    """A manifest line or audio file that cannot be used.

    Attributes:
        reason: one of the reason codes above.
        path: the manifest (or audio) file.
        line: 1-based manifest line number, if known.
        field: the manifest field at fault, if any.
        detail: what was found and what was expected.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.reason = reason
        self.detail = detail
        self.path = path
        self.line = line
        self.field = field
        super().__init__(self.describe())

    def describe(self) -> str:
        where = str(self.path) if self.path is not None else "<unknown file>"
        if self.line is not None:
            where += f":{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.detail} [{self.reason}]"

    def with_location(self, path: str | None, line: int | None) -> BadInputError:
        """Copy with the manifest location filled in (audio errors are raised before it is known)."""
        return BadInputError(
            self.reason,
            self.detail,
            path=self.path if path is None else path,
            line=self.line if line is None else line,
            field=self.field,
        )

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (_rebuild, (self.reason, self.detail, self.path, self.line, self.field))


def _rebuild(reason, detail, path, line, field):
    return BadInputError(reason, detail, path=path, line=line, field=field)


@dataclass
class BadInputReport:
    """Counted skips by reason, with the first few messages of each kind kept verbatim."""

    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, err: BadInputError) -> None:
        self.counts[err.reason] += 1
        kept = self.examples.setdefault(err.reason, [])
        if len(kept) < self.max_examples:
            kept.append(err.describe())

    def merge(self, other: BadInputReport) -> None:
        self.counts.update(other.counts)
        for reason, msgs in other.examples.items():
            kept = self.examples.setdefault(reason, [])
            kept.extend(msgs[: max(0, self.max_examples - len(kept))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"skipped": self.total, "by_reason": dict(self.counts), "examples": self.examples}

    def summary(self) -> str:
        if not self.total:
            return "bad input: none"
        lines = [f"bad input: {self.total} skipped"]
        for reason, n in self.counts.most_common():
            lines.append(f"  {reason}: {n}")
            lines.extend(f"    e.g. {m}" for m in self.examples.get(reason, [])[:2])
        return "\n".join(lines)


def handle(err: BadInputError, policy: OnBadInput, report: BadInputReport | None) -> None:
    """Raise under ``error``; count under ``skip`` (a report is then required, so nothing is silent)."""
    if policy == "error":
        raise err
    if policy != "skip":
        raise ValueError(f"on_bad_input must be one of {ON_BAD_INPUT_CHOICES}, got {policy!r}")
    if report is None:
        raise ValueError("on_bad_input='skip' needs a BadInputReport to count the skip in")
    report.add(err)
