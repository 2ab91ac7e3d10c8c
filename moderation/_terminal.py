"""What a person sees on the terminal: progress while a run goes, a table at its end.

On a TTY (and not in CI) a rich progress bar; elsewhere one short line every few
seconds, so CI logs show the run is alive without thousands of lines. Neither ever
shows an example's text.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from moderation.estimate import RunEstimate
from moderation.reader import ReadStats
from moderation.summary import RunSummary, Tally

__all__ = ["ProgressReporter", "print_estimate", "print_summary", "stderr_console"]


def stderr_console() -> Console:
    """The console for progress and warnings (stdout stays for results)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _interactive(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("CI")


class ProgressReporter:
    """A progress callback for :func:`moderation.screen`; use as a context manager."""

    def __init__(
        self,
        inputs: Sequence[Path],
        *,
        enabled: bool = True,
        interval: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._interval = interval
        self._started = time.monotonic()
        self._last_line = self._started
        compressed = any(p.suffix == ".gz" for p in inputs)
        self._total = None if compressed else sum(p.stat().st_size for p in inputs)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled and _interactive(self._stream):
            self._progress = Progress(
                TextColumn("[bold]screening"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[counts]}"),
                MofNCompleteColumn() if self._total is None else TextColumn(""),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
                transient=True,
            )

    def __enter__(self) -> ProgressReporter:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("screen", total=self._total, counts="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, tally: Tally, stats: ReadStats) -> None:
        if not self._enabled:
            return
        counts = (
            f"clean {tally.clean:,}  flagged {tally.flagged:,}  quarantine {tally.quarantine:,}"
        )
        if self._progress is not None and self._task is not None:
            done = stats.bytes if self._total is not None else tally.decided
            self._progress.update(self._task, completed=done, counts=counts)
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            rate = tally.decided / max(now - self._started, 1e-9)
            print(
                f"moderation: {tally.decided:,} examples ({counts}), {rate:,.0f}/s",
                file=self._stream,
                flush=True,
            )


def print_summary(summary: RunSummary, console: Console, *, out: Path | None, top: int = 5) -> None:
    """The end-of-run table: counts, top reasons and categories, time."""
    counts = summary.counts
    table = Table(title=f"moderation · policy {summary.policy['id']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()

    def share(n: int) -> str:
        return f"{100 * n / counts.input:.1f}%" if counts.input else ""

    table.add_row("examples", f"{counts.input:,}", f"{summary.blank_lines:,} blank lines skipped")
    table.add_row("[green]clean", f"{counts.clean:,}", share(counts.clean))
    table.add_row("[red]flagged", f"{counts.flagged:,}", share(counts.flagged))
    table.add_row("[yellow]quarantine", f"{counts.quarantine:,}", share(counts.quarantine))
    for label, items in (("reason", summary.reasons), ("category", summary.categories)):
        for i, (key, n) in enumerate(list(items.items())[:top]):
            table.add_row(label if i == 0 else "", f"{n:,}", key)
    run = summary.run
    table.add_row(
        "time", f"{run['duration_s']:.1f}s", f"{run.get('examples_per_s') or 0:,.0f} examples/s"
    )
    for stage, info in summary.providers.items():
        if not info.get("requests"):
            continue
        tokens = info.get("input_tokens", 0) + info.get("output_tokens", 0)
        cost = info.get("cost_usd")
        spent = "price unknown" if cost is None else f"${cost:.4f} estimated"
        table.add_row(
            f"{stage} requests",
            f"{info['requests']:,}",
            f"{info['name']} {info['model']}, {tokens:,} tokens, {spent}",
        )
    cache = summary.cache or {}
    hits = {k: v["hits"] for k, v in cache.items() if isinstance(v, dict) and v.get("hits")}
    if hits:
        stages = ", ".join(f"{stage} {n:,}" for stage, n in hits.items())
        table.add_row("cache", f"{sum(hits.values()):,}", f"answers reused ({stages})")
    elif "error" in cache:
        table.add_row("cache", "-", "[yellow]unusable: ran without one")
    console.print(table)
    if out is not None:
        console.print(
            f"outputs in [bold]{out}[/]: clean.jsonl flagged.jsonl quarantine.jsonl"
            " audit.jsonl summary.json"
        )
    if out is not None and summary.audit.get("head"):
        # Kept elsewhere (a CI log), this line lets `audit verify` be checked against it.
        chain = summary.audit
        console.print(f"audit chain head {chain['head']} ({chain['events']:,} events)")


def _usd(value: float | None) -> str:
    return "price unknown" if value is None else f"${value:,.4f}"


def print_estimate(estimate: RunEstimate, console: Console) -> None:
    """The ``run --dry-run`` table: requests, tokens and cost, before any is spent."""
    table = Table(title=f"moderation dry run · policy {estimate.policy['id']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    table.add_row(
        "examples",
        f"{estimate.examples:,}",
        f"{estimate.valid:,} valid, {estimate.invalid:,} to quarantine without a call",
    )
    mod = estimate.moderation
    if mod.provider == "local":
        table.add_row("moderation", "0", f"local {mod.model}: no API requests")
    else:
        table.add_row(
            "moderation requests",
            f"{mod.requests:,}",
            f"{mod.provider} {mod.model}, ~{mod.input_tokens:,} tokens,"
            f" {'free' if mod.cost_usd == 0 else _usd(mod.cost_usd)}",
        )
    grader = estimate.grader
    if grader is None:
        table.add_row("grader", "", "none")
    else:
        table.add_row(
            "grader requests",
            f"≤ {grader.requests_max:,}",
            f"{grader.provider} {grader.model} (sees {grader.sees}),"
            f" ≤ {grader.input_tokens_max + grader.output_tokens_max:,} tokens",
        )
        table.add_row(
            "grader cost",
            f"≤ {_usd(grader.cost_usd_max)}",
            f"{_usd(grader.cost_usd_per_request)} a request",
        )
    console.print(table)
    if grader is not None and grader.sees == "escalations":
        console.print(
            "Grader figures are ceilings: only what moderation escalates is graded, and the"
            " ceiling counts every example with a turn that could be escalated."
        )
    console.print(
        "The result cache is not consulted: what an earlier run answered is counted as if"
        " asked again."
    )
