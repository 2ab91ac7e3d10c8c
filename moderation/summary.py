"""Counting what a run decided, and checking that the counts add up.

:class:`Tally` sees every decided example once. :meth:`Tally.check` enforces
conservation (every example read was decided exactly once) before any summary is
written: a mismatch is a bug, and it stops the run loudly instead of being hidden.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, Field

from moderation.errors import InvariantError
from moderation.models import Example

__all__ = ["Counts", "RunSummary", "Tally", "summary_digest"]


@dataclass(slots=True)
class Tally:
    """Running counts of decisions, reasons, categories, formats and tokens."""

    clean: int = 0
    flagged: int = 0
    quarantine: int = 0
    tokens: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    graded: int = 0

    @property
    def decided(self) -> int:
        """Examples decided so far."""
        return self.clean + self.flagged + self.quarantine

    def add(self, example: Example) -> None:
        """Count one decided example."""
        if example.decision == "clean":
            self.clean += 1
        elif example.decision == "flagged":
            self.flagged += 1
        elif example.decision == "quarantine":
            self.quarantine += 1
        else:
            raise InvariantError(f"{example.source}:{example.line}: no decision")
        self.tokens += example.tokens
        self.formats[example.format or "unrecognized"] += 1
        if example.verdict is not None or (
            example.grade_error is not None and example.grade_error.code != "not_configured"
        ):
            self.graded += 1
        # Each reason key and category counts once per example.
        self.reasons.update({r.key for r in example.reasons})
        self.warnings.update({w.code for w in example.warnings})
        categories = set()
        for reason in (*example.findings, *example.escalations):
            if isinstance(reason.detail, dict) and "category" in reason.detail:
                categories.add(str(reason.detail["category"]))
        self.categories.update(categories)

    def check(self, examples_read: int) -> None:
        """Raise :class:`InvariantError` unless every example read was decided once."""
        if self.decided != examples_read:
            raise InvariantError(
                f"conservation violated: read {examples_read} examples but decided"
                f" {self.decided} (clean {self.clean}, flagged {self.flagged},"
                f" quarantine {self.quarantine}); no summary was written"
            )

    def counts(self, examples_read: int) -> dict[str, int]:
        """The summary's ``counts`` block."""
        return {
            "input": examples_read,
            "clean": self.clean,
            "flagged": self.flagged,
            "quarantine": self.quarantine,
        }

    def breakdown(self) -> dict[str, Any]:
        """Counts by reason, category, format and warning, most common first."""
        return {
            "reasons": _ordered(self.reasons),
            "categories": _ordered(self.categories),
            "formats": _ordered(self.formats),
            "warnings": _ordered(self.warnings),
        }


def _ordered(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


class Counts(BaseModel):
    """How many examples went where; ``input`` counts non-blank lines."""

    input: int
    clean: int
    flagged: int
    quarantine: int


class RunSummary(BaseModel):
    """``summary.json``: what a run did, in numbers. Never any example text."""

    counts: Counts
    blank_lines: int
    reasons: dict[str, int]
    categories: dict[str, int]
    formats: dict[str, int]
    warnings: dict[str, int]
    tokens: dict[str, Any]
    """``total`` tokens of the input examples and the ``method`` that counted them."""
    graded: int
    policy: dict[str, str]
    fallback: str | None = None
    """Set when ``run`` fell back to a policy other than the one a key would allow."""
    providers: dict[str, dict[str, Any]]
    requests: int
    cost_usd: float | None
    """Estimated USD for the run; ``None`` when a model's price is unknown."""
    inputs: dict[str, str]
    cache: dict[str, Any] | None = None
    """Where stage answers were cached and, per stage, how many came from there
    (``hits``), were asked for (``misses``) and were stored: why a rerun makes fewer
    requests. ``None`` when the run used no cache."""
    tool: dict[str, str]
    run: dict[str, Any]
    """Wall-clock facts (start, end, duration, throughput): with ``audit.head``, the only
    part that differs between two runs of the same input."""
    outputs: dict[str, str] = Field(default_factory=dict)
    """sha256 of clean.jsonl, flagged.jsonl and quarantine.jsonl (as run_end has them)."""
    audit: dict[str, Any] = Field(default_factory=dict)
    """``events``: lines in audit.jsonl; ``head``: the sha256 of its last line (run_end),
    into which every earlier line is chained. ``moderation audit verify`` checks both."""

    def digest(self) -> str:
        """:func:`summary_digest` of this summary (run_end records it)."""
        return summary_digest(self.model_dump(mode="json"))


def summary_digest(summary: dict[str, Any]) -> str:
    """sha256 of a summary's content, ``audit`` left out (it is known only after run_end
    is written): canonical JSON, keys sorted, so formatting does not count."""
    content = {k: v for k, v in summary.items() if k != "audit"}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()
