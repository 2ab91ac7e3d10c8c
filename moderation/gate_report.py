"""How the gate's result is shown: plain text, JSON, or GitHub Actions workflow commands
plus a Markdown report for the job's summary page.

Every format says where each finding is (file, line), its decision, and its reasons'
codes, categories and scores: never a word of the example itself.

GitHub workflow commands are ``::error file=F,line=N,title=T::message``; values are
escaped as GitHub's toolkit does (``%`` ``\\r`` ``\\n`` everywhere, and ``:`` ``,`` in
properties), so a file name or a reason cannot end a command early or forge another.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

from moderation.gating import Finding, GateResult

__all__ = [
    "GITHUB_ANNOTATIONS",
    "TEXT_FINDINGS",
    "describe_reason",
    "emit",
    "escape_data",
    "escape_property",
    "github_commands",
    "github_error",
    "render_json",
    "render_text",
    "step_summary",
]

GITHUB_ANNOTATIONS = 50
"""Findings annotated by default (GitHub shows at most 10 errors and 10 warnings a
step inline; all of them are listed on the run's annotations page)."""
TEXT_FINDINGS = 20
_SUMMARY_FINDINGS = 100


def escape_data(value: str) -> str:
    """Escape a workflow command's message."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a workflow command's property value (``file``, ``title``, ...)."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def describe_reason(reason: dict[str, Any]) -> str:
    """``moderate.flagged violence 0.97 >= 0.6 at messages[2].content (assistant)``."""
    parts = [f"{reason['stage']}.{reason['code']}"]
    if "category" in reason:
        parts.append(str(reason["category"]))
    if "score" in reason:
        score = f"{reason['score']:.3g}"
        if "threshold" in reason:
            score += f" >= {reason['threshold']:g}"
        parts.append(score)
    if "rule" in reason:
        parts.append(f"rule {reason['rule']}")
    if "confidence" in reason:
        confidence = f"confidence {reason['confidence']:.2f}"
        if "bar" in reason:
            confidence += f" (bar {reason['bar']:g})"
        parts.append(confidence)
    if "path" in reason:
        parts.append(f"at {reason['path']}")
    if "role" in reason:
        parts.append(f"({reason['role']})")
    return " ".join(parts)


def _describe(finding: Finding) -> str:
    return "; ".join(describe_reason(r) for r in finding.reasons) or "no reason recorded"


def _verdict(result: GateResult) -> str:
    return "passed" if result.passed else "FAILED"


def _cache_line(result: GateResult) -> str:
    cache = result.cache
    if cache is None:
        return "no cache"
    if "error" in cache:
        return f"cache unusable: {cache['error']}"
    stages = [
        f"{stage} {info['hits']:,} from cache, {info['misses']:,} asked"
        for stage, info in cache.items()
        if isinstance(info, dict)
    ]
    return "; ".join(stages) or "cache: nothing to look up"


def render_text(result: GateResult, *, show: int = TEXT_FINDINGS) -> str:
    """The report for a terminal or a CI log."""
    counts = result.counts
    lines = [
        f"moderation gate: {_verdict(result)} (policy {result.policy['id']},"
        f" {counts.input:,} examples, {result.blank_lines:,} blank lines skipped)",
        f"  clean       {counts.clean:>8,}",
    ]
    for name in ("flagged", "quarantine"):
        found = getattr(counts, name)
        limit = result.limits[name]
        over = name in result.exceeded
        lines.append(f"  {name:<11} {found:>8,}  limit {limit:<6} {'EXCEEDED' if over else 'ok'}")
    lines.append(f"  requests {result.requests:,}; {_cache_line(result)}")
    shown = result.findings[:show]
    if shown:
        lines.append(f"findings (first {len(shown)} of {result.findings_total:,}):")
        for finding in shown:
            lines.append(
                f"  {finding.source}:{finding.line}: {finding.decision}: {_describe(finding)}"
            )
    if result.failures:
        lines.append(f"gate failed: {'; '.join(result.failures)}")
    return "\n".join(lines) + "\n"


def render_json(result: GateResult) -> str:
    """The full result as JSON (:class:`~moderation.gating.GateResult`)."""
    return result.model_dump_json(indent=2) + "\n"


def _command(kind: str, message: str, **properties: str | int) -> str:
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items())
    return f"::{kind}{' ' + props if props else ''}::{escape_data(message)}"


def github_commands(result: GateResult, *, show: int = GITHUB_ANNOTATIONS) -> list[str]:
    """Workflow commands: one annotation per finding (the first ``show``), a notice of
    how many more there are, and the verdict.

    A finding is an ``error`` when its decision's limit was exceeded, else a
    ``warning`` (within the limits the gate tolerates it, but it is worth a look).
    """
    commands = []
    for finding in result.findings[:show]:
        commands.append(
            _command(
                "error" if finding.decision in result.exceeded else "warning",
                _describe(finding),
                file=finding.source,
                line=finding.line,
                title=f"moderation: {finding.decision}",
            )
        )
    more = result.findings_total - min(show, len(result.findings))
    if more > 0:
        commands.append(
            _command(
                "notice",
                f"{more:,} more findings are not annotated; run `moderation gate"
                f" --format json --show {result.findings_total}` to list them all.",
                title="moderation gate",
            )
        )
    counts = result.counts
    tally = (
        f"{counts.input:,} examples: {counts.clean:,} clean, {counts.flagged:,} flagged,"
        f" {counts.quarantine:,} quarantined"
    )
    if result.passed:
        commands.append(_command("notice", f"passed; {tally}", title="moderation gate"))
    else:
        failed = "; ".join(result.failures)
        commands.append(_command("error", f"failed: {failed} ({tally})", title="moderation gate"))
    return commands


def _cell(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def _rows(findings: Iterable[Finding]) -> list[str]:
    return [
        f"| `{_cell(f.source)}` | {f.line} | {f.decision} | {_cell(_describe(f))} |"
        for f in findings
    ]


def step_summary(result: GateResult) -> str:
    """The Markdown report for ``$GITHUB_STEP_SUMMARY``."""
    counts = result.counts

    def share(n: int) -> str:
        return f"{100 * n / counts.input:.1f}%" if counts.input else "-"

    lines = [
        f"## moderation gate: {'passed' if result.passed else '**failed**'}",
        "",
        f"Policy `{_cell(result.policy['id'])}` ({_cell(result.policy['hash'][:19])}),"
        f" {counts.input:,} examples, {result.requests:,} API requests;"
        f" {_cell(_cache_line(result))}.",
        "",
        "| decision | examples | share | limit |",
        "| --- | ---: | ---: | --- |",
        f"| clean | {counts.clean:,} | {share(counts.clean)} | |",
    ]
    for name in ("flagged", "quarantine"):
        found = getattr(counts, name)
        mark = "**exceeded**" if name in result.exceeded else "ok"
        lines.append(f"| {name} | {found:,} | {share(found)} | {result.limits[name]} {mark} |")
    if result.reasons:
        top = ", ".join(f"`{_cell(k)}` {v:,}" for k, v in list(result.reasons.items())[:8])
        lines += ["", f"Reasons: {top}"]
    shown = result.findings[:_SUMMARY_FINDINGS]
    if shown:
        lines += [
            "",
            f"### Findings (first {len(shown)} of {result.findings_total:,})",
            "",
            "| file | line | decision | reasons |",
            "| --- | ---: | --- | --- |",
            *_rows(shown),
        ]
    return "\n".join(lines) + "\n"


Format = Literal["text", "json", "github"]


def emit(
    result: GateResult,
    fmt: Format,
    *,
    show: int | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Print the result in ``fmt``; with ``github``, also append the Markdown report to
    the file ``$GITHUB_STEP_SUMMARY`` names, when it is set."""
    out = stream or sys.stdout
    if fmt == "json":
        out.write(render_json(result))
    elif fmt == "text":
        out.write(render_text(result, show=TEXT_FINDINGS if show is None else show))
    else:
        commands = github_commands(result, show=GITHUB_ANNOTATIONS if show is None else show)
        out.write("".join(c + "\n" for c in commands))
        target = (os.environ if environ is None else environ).get("GITHUB_STEP_SUMMARY")
        if target:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(step_summary(result))
    out.flush()


def github_error(message: str) -> str:
    """A configuration or input error as a workflow command (shown on the run's page)."""
    return _command("error", message, title="moderation gate")
