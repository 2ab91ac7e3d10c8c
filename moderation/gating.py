"""The CI gate: screen a dataset and say whether it passes, without writing outputs.

:func:`gate` runs the same pipeline as :func:`moderation.screen` (with the cache, so an
unchanged dataset costs no request and an edited one only the edited lines), counts
the decisions, and compares them with the limits: ``--max-flagged`` and
``--max-quarantined``, each a count (``10``) or a share of the examples (``2.5%``).
It never falls back to a weaker policy than the one named: a policy that needs a key
that is not set is a configuration error.

What it reports of each finding is its place (source, line, hash), its decision and
its reasons' codes, categories and scores: never the example's text.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, Field

from moderation._run import (
    PathLike,
    PolicyArg,
    PolicyChoice,
    ProgressCallback,
    input_paths,
    policy_info,
    prepare,
    providers_report,
    total_requests,
)
from moderation.cache import CacheArg, cache_report
from moderation.errors import ConfigError
from moderation.models import DecisionKind, Example
from moderation.providers import Grader, Moderator
from moderation.reader import DEFAULT_MAX_LINE_BYTES
from moderation.summary import Counts

__all__ = [
    "DEFAULT_KEEP",
    "DETAIL_KEYS",
    "Finding",
    "GateResult",
    "Limit",
    "LimitArg",
    "gate",
    "gate_sync",
]

DETAIL_KEYS = ("category", "score", "threshold", "path", "role", "rule", "confidence", "bar")
"""The only parts of a reason's detail a gate report repeats: numbers and locations
inside the record, never anything quoted from it."""
DEFAULT_KEEP = 200
_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True, slots=True)
class Limit:
    """How many examples a decision may have: a count, or a percentage of the input."""

    value: Fraction
    """Exact: ``2.3%`` of 3,000 is 69, not 68.99999."""
    percent: bool = False

    @classmethod
    def parse(cls, text: str | int | Limit) -> Limit:
        """``10`` (a count) or ``2%`` / ``2.5%`` (of the examples); raises ConfigError."""
        if isinstance(text, Limit):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        match = _LIMIT.match(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(f"limit {text!r}: give a count (10) or a percentage (2.5%)")
        number, percent = match.groups()
        if not percent and "." in number:
            raise ConfigError(f"limit {text!r}: a count is a whole number (or add %)")
        value = Fraction(number)
        if percent and value > 100:
            raise ConfigError(f"limit {text!r}: a percentage is at most 100%")
        return cls(value, bool(percent))

    def allows(self, count: int, total: int) -> bool:
        """True when ``count`` of ``total`` examples is within the limit."""
        if self.percent:
            return count * 100 <= self.value * total
        return count <= self.value

    def __str__(self) -> str:
        return f"{float(self.value):g}%" if self.percent else str(math.floor(self.value))


LimitArg = str | int | Limit


class Finding(BaseModel):
    """One example that did not pass: where it is and why, without its text."""

    source: str
    line: int
    hash: str
    decision: DecisionKind
    reasons: list[dict[str, Any]]
    """``{"stage", "code", ...}`` with only the detail keys of :data:`DETAIL_KEYS`."""

    @classmethod
    def of(cls, example: Example) -> Finding:
        """The finding for a decided example."""
        assert example.decision is not None
        reasons = []
        for reason in example.reasons:
            item: dict[str, Any] = {"stage": reason.stage, "code": reason.code}
            if isinstance(reason.detail, dict):
                for key in DETAIL_KEYS:
                    value = reason.detail.get(key)
                    if isinstance(value, str | int | float) and not isinstance(value, bool):
                        item[key] = value
            reasons.append(item)
        return cls(
            source=example.source,
            line=example.line,
            hash=example.hash,
            decision=example.decision,
            reasons=reasons,
        )


class GateResult(BaseModel):
    """What the gate decided and why; also the ``--format json`` report."""

    passed: bool
    counts: Counts
    limits: dict[str, str]
    """``flagged`` and ``quarantine``: the limits applied, as given."""
    failures: list[str]
    """One line per limit exceeded, e.g. ``flagged: 3 of 200 examples, limit 1%``."""
    exceeded: list[str] = Field(default_factory=list)
    """The decisions (``flagged``, ``quarantine``) whose limit was exceeded."""
    findings: list[Finding]
    """The first findings in input order (at most ``keep`` of them)."""
    findings_total: int
    reasons: dict[str, int]
    categories: dict[str, int]
    policy: dict[str, str]
    requests: int
    cache: dict[str, Any] | None = None
    blank_lines: int = 0
    duration_s: float = Field(default=0.0, ge=0.0)


async def gate(
    inputs: PathLike | Sequence[PathLike] | None = None,
    *,
    records: Iterable[Any] | None = None,
    policy: PolicyArg = None,
    max_flagged: LimitArg = 0,
    max_quarantined: LimitArg = 0,
    cache: CacheArg = None,
    concurrency: int = 8,
    batch_size: int = 64,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    moderator: Moderator | None = None,
    grader: Grader | None = None,
    keep: int = DEFAULT_KEEP,
    progress: ProgressCallback | None = None,
) -> GateResult:
    """Screen files (or ``records``) and check the decisions against the limits.

    ``policy`` ``None`` means ``default`` (there is no fallback to ``offline``); a
    policy that needs ``OPENAI_API_KEY`` without it raises :class:`ConfigError`. No
    output file is written; ``cache`` (a path or an open cache) keeps stage answers.
    """
    limits = {"flagged": Limit.parse(max_flagged), "quarantine": Limit.parse(max_quarantined)}
    if isinstance(policy, PolicyChoice) and policy.fallback:
        # The gate never passes a dataset on a weaker policy than the one asked for.
        raise ConfigError(f"the gate does not fall back to another policy: {policy.fallback}")
    paths = input_paths(inputs, records)
    run = prepare(
        policy,
        moderator=moderator,
        grader=grader,
        concurrency=concurrency,
        batch_size=batch_size,
        max_line_bytes=max_line_bytes,
        allow_fallback=False,
        cache=cache,
    )
    started = time.monotonic()
    findings: list[Finding] = []
    async with run:
        run.open_cache(paths or ())
        pipeline = run.pipeline()

        async def sink(batch: Sequence[Example]) -> None:
            for example in batch:
                if example.decision != "clean" and len(findings) < keep:
                    findings.append(Finding.of(example))
            if progress is not None:
                progress(pipeline.tally, run.stats)

        tally = await pipeline.run(run.examples(paths, records), sink)
        tally.check(run.stats.examples)
        providers = providers_report(run)
        cache_info = cache_report(run.cache, run.cache_problem)
    counts = Counts(**tally.counts(run.stats.examples))
    exceeded = [
        name
        for name, limit in limits.items()
        if not limit.allows(getattr(counts, name), counts.input)
    ]
    failures = [
        f"{name}: {getattr(counts, name):,} of {counts.input:,} examples, limit {limits[name]}"
        for name in exceeded
    ]
    if counts.input == 0:
        # Empty files, or only blank lines: a gate that checked nothing must not pass.
        failures.append("no examples to check: the inputs hold no non-blank line")
    breakdown = tally.breakdown()
    return GateResult(
        passed=not failures,
        counts=counts,
        limits={name: str(limit) for name, limit in limits.items()},
        failures=failures,
        exceeded=exceeded,
        findings=findings,
        findings_total=counts.flagged + counts.quarantine,
        reasons=breakdown["reasons"],
        categories=breakdown["categories"],
        policy=policy_info(run.choice.policy),
        requests=total_requests(providers),
        cache=cache_info,
        blank_lines=run.stats.blank_lines,
        duration_s=round(time.monotonic() - started, 3),
    )


def gate_sync(inputs: PathLike | Sequence[PathLike] | None = None, **kwargs: Any) -> GateResult:
    """:func:`gate` for scripts and notebooks (runs its own event loop)."""
    return asyncio.run(gate(inputs, **kwargs))
