"""``moderation audit verify DIR``: is a finished run's record intact?

The check reads the run directory once, streaming, and reports every problem it finds
with the file and line it concerns:

- **the chain**: each line of audit.jsonl is JSON; its ``prev`` is the sha256 of the
  line before (:data:`~moderation.audit.GENESIS` for the first), so an edited line breaks
  the link after it; its ``seq`` counts 1, 2, 3, ..., so a deleted event leaves a gap and
  a moved one comes back out of order. ``run_start`` opens the log and ``run_end`` closes
  it: a log without it was cut off.
- **the counts**: the decision events add up to run_end's counts.
- **the files**: clean.jsonl, flagged.jsonl and quarantine.jsonl hash to what run_end
  recorded, and hold, line by line, the examples of the audit's decision events in the
  same order (a clean line hashes to its event's ``hash``; a flagged or quarantined
  record names the event's source, line and hash).
- **the summary**: summary.json agrees with run_start and run_end, records as many
  events as audit.jsonl holds, and the hash of its last line (the chain's head).

What this proves: the files are as the run wrote them, unless someone rewrote the
whole chain and the summary consistently. To rule that out, compare the chain head
(``summary.json``'s ``audit.head``, also printed at the end of the run) with a copy kept
elsewhere, e.g. the CI log of the run.
"""

from __future__ import annotations

import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from moderation.audit import GENESIS, line_hash
from moderation.errors import InputError
from moderation.reader import MAX_DEPTH, example_hash, hash_file, parse_line, path_text
from moderation.sinks import DATA_FILES, OUTPUT_FILES
from moderation.summary import summary_digest

__all__ = ["Problem", "Verification", "verify_run"]

_AUDIT = "audit.jsonl"
_SUMMARY = "summary.json"
_REPORT_ORDER = (_AUDIT, *DATA_FILES, _SUMMARY)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that does not check out, located by file and (when it has one) line."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return self.located()

    def located(self, directory: Path | None = None) -> str:
        """``FILE:LINE: message``, the file under ``directory`` when one is given."""
        file = str(directory / self.file) if directory is not None else self.file
        where = f"{file}:{self.line}" if self.line is not None else file
        return f"{where}: {self.message}"


@dataclass(slots=True)
class Verification:
    """The outcome of :func:`verify_run`."""

    directory: Path
    problems: list[Problem] = field(default_factory=list)
    events: int = 0
    """Lines in audit.jsonl."""
    head: str | None = None
    """The hash of audit.jsonl's last line: the chain's head."""
    counts: dict[str, int] | None = None
    """run_end's counts, when there is a run_end."""

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.problems

    def add(self, file: str, line: int | None, message: str) -> None:
        """Record a problem."""
        self.problems.append(Problem(file, line, message))

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data (``moderation audit verify --format json``)."""
        return {
            "directory": path_text(self.directory),
            "ok": self.ok,
            "events": self.events,
            "head": self.head,
            "counts": self.counts,
            "problems": [
                {"file": p.file, "line": p.line, "message": p.message} for p in self.problems
            ],
        }


def verify_run(directory: str | Path) -> Verification:
    """Check the run in ``directory`` (see the module's docstring).

    Raises :class:`~moderation.errors.InputError` when ``directory`` is missing or holds
    no run (neither audit.jsonl nor summary.json).
    """
    out = Path(directory)
    if not out.is_dir():
        raise InputError(f"{out}: no such directory")
    if not (out / _AUDIT).exists() and not (out / _SUMMARY).exists():
        raise InputError(
            f"{out}: not the output directory of a run (no audit.jsonl or summary.json)"
        )
    result = Verification(out)
    present = _check_present(out, result)
    audit = _AuditReader(out, result, present)
    if _AUDIT in present:
        audit.read()
    summary = _load_summary(out, result) if _SUMMARY in present else None
    _check_files(out, result, present, audit.run_end, summary)
    if summary is not None:
        _check_summary(result, summary, audit)
    # The chain first, then the files it vouches for; each file's problems in line order.
    result.problems.sort(
        key=lambda p: (_REPORT_ORDER.index(p.file), p.line if p.line is not None else 1 << 62)
    )
    return result


def _check_present(out: Path, result: Verification) -> set[str]:
    present = set()
    for name in OUTPUT_FILES:
        try:
            info = (out / name).lstat()
        except FileNotFoundError:
            result.add(name, None, "missing")
            continue
        if stat.S_ISLNK(info.st_mode):
            result.add(name, None, "is a symbolic link; a run writes regular files")
        elif not stat.S_ISREG(info.st_mode):
            result.add(name, None, "is not a regular file")
        else:
            present.add(name)
    return present


class _AuditReader:
    """One pass over audit.jsonl: the chain, the seq numbers, the events' kinds, and the
    data files read in step with the decision events."""

    def __init__(self, out: Path, result: Verification, present: set[str]) -> None:
        self.out = out
        self.result = result
        self.run_start: dict[str, Any] | None = None
        self.run_end: dict[str, Any] | None = None
        self.decisions: Counter[str] = Counter()
        self._present = present
        self._max_seq = 0
        # Seq numbers skipped so far: [first, last, line where the gap showed].
        self._gaps: list[list[int]] = []

    def _add(self, line: int | None, message: str) -> None:
        self.result.add(_AUDIT, line, message)

    def read(self) -> None:
        prev = GENESIS
        number = 0
        self.data = _DataFiles(self.out, self.result, self._present)
        with (self.out / _AUDIT).open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                complete = raw.endswith(b"\n")
                line = raw[:-1] if complete else raw
                if not complete:
                    self._add(number, "incomplete last line (no newline): the log was cut off")
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    event = None
                if not isinstance(event, dict):
                    self._add(number, "not a JSON object: the line was damaged or edited")
                else:
                    self._event(number, event, prev)
                prev = line_hash(line)
        self.data.finish()
        self.result.events = number
        self.result.head = prev if number else None
        for first, last, where in self._gaps:
            which = f"event seq {first} is" if first == last else f"events seq {first}-{last} are"
            self._add(where, f"{which} missing before this line: deleted")
        if number == 0:
            self._add(None, "empty: no run_start, no run_end")
        elif self.run_end is None:
            self._add(number, "the log ends without run_end: it was cut off (truncated)")
        if self.run_end is not None:
            self.result.counts = self.run_end.get("counts")
            self._check_counts()

    def _event(self, number: int, event: dict[str, Any], prev: str) -> None:
        seq = event.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            self._add(number, "no seq number: not a hash-chained audit log, or the line was edited")
        else:
            self._seq(number, seq)
        if event.get("prev") != prev:
            if number == 1:
                self._add(1, "prev is not the chain's start: events before it were deleted")
            else:
                self._add(
                    number,
                    f"prev does not match the hash of line {number - 1}: line {number - 1} was"
                    " changed, or lines around it were deleted or moved",
                )
        kind = event.get("event")
        if self.run_end is not None:
            self._add(number, f"{kind!s} event after run_end: appended after the run finished")
        if kind == "run_start":
            if number != 1 or self.run_start is not None:
                self._add(number, "run_start is not the first event")
            else:
                self.run_start = event
        elif number == 1:
            self._add(1, "the log does not begin with run_start: its start was deleted")
        if kind == "run_end" and self.run_end is None:
            self.run_end = event
        elif kind == "decision":
            self.decisions[str(event.get("decision"))] += 1
            self.data.decision(number, event)

    def _seq(self, number: int, seq: int) -> None:
        if seq == self._max_seq + 1:
            self._max_seq = seq
        elif seq > self._max_seq + 1:
            self._gaps.append([self._max_seq + 1, seq - 1, number])
            self._max_seq = seq
        elif self._fill(seq):
            self._add(
                number,
                f"seq {seq} comes after seq {self._max_seq}: events were reordered (moved or"
                " swapped)",
            )
        elif seq > 0:
            self._add(number, f"seq {seq} repeats an earlier event: a line was duplicated")
        else:
            self._add(number, f"seq {seq} is out of range: the line was edited")

    def _fill(self, seq: int) -> bool:
        """Take ``seq`` out of the gaps; False when it was in none (seen already)."""
        for index, (first, last, where) in enumerate(self._gaps):
            if first <= seq <= last:
                pieces = [[first, seq - 1, where], [seq + 1, last, where]]
                self._gaps[index : index + 1] = [p for p in pieces if p[0] <= p[1]]
                return True
        return False

    def _check_counts(self) -> None:
        counts = self.result.counts
        if not isinstance(counts, dict):
            self._add(None, "run_end has no counts")
            return
        for kind in ("clean", "flagged", "quarantine"):
            if counts.get(kind) != self.decisions[kind]:
                self._add(
                    None,
                    f"run_end counts {counts.get(kind)} {kind} but the log holds"
                    f" {self.decisions[kind]} {kind} decisions",
                )
        if counts.get("input") != sum(self.decisions.values()):
            self._add(
                None,
                f"run_end counts {counts.get('input')} input examples but the log holds"
                f" {sum(self.decisions.values())} decisions",
            )


class _DataFiles:
    """The three data files, read line by line in step with the decision events."""

    def __init__(self, out: Path, result: Verification, present: set[str]) -> None:
        self.result = result
        self.lines: dict[str, Iterator[bytes]] = {}
        self.handles: list[IO[bytes]] = []
        self.read: Counter[str] = Counter()
        self.mismatched: set[str] = set()
        self.short: set[str] = set()
        for name in DATA_FILES:
            if name in present:
                handle = (out / name).open("rb")
                self.handles.append(handle)
                self.lines[name] = iter(handle)

    def decision(self, number: int, event: dict[str, Any]) -> None:
        decision = event.get("decision")
        name = f"{decision}.jsonl"
        if name not in DATA_FILES:
            self.result.add(_AUDIT, number, f"unknown decision {decision!r}")
            return
        lines = self.lines.get(name)
        if lines is None:
            return
        raw = next(lines, None)
        if raw is None:
            if name not in self.short:
                self.short.add(name)
                self.result.add(
                    name, None, f"ends before the {decision} decision of audit.jsonl:{number}"
                )
            return
        self.read[name] += 1
        # After the first mismatch the file and the log are out of step: one report.
        if name not in self.mismatched and not _matches(name, raw, event):
            self.mismatched.add(name)
            self.result.add(
                name,
                self.read[name],
                f"is not the example of its decision event (audit.jsonl:{number},"
                f" {event.get('source')}:{event.get('line')}): this file or the log was changed",
            )

    def finish(self) -> None:
        for name, lines in self.lines.items():
            extra = sum(1 for _ in lines)
            if extra:
                self.result.add(
                    name, None, f"{extra} line(s) more than the audit log has decisions for"
                )
        for handle in self.handles:
            handle.close()


def _matches(name: str, raw: bytes, event: dict[str, Any]) -> bool:
    line = raw[:-1] if raw.endswith(b"\n") else raw
    if name == "clean.jsonl":
        return example_hash(line) == event.get("hash")
    # Not orjson alone: a record may carry an example orjson cannot read (an integer
    # past 64 bits, a lone surrogate).
    record, _ = parse_line(line, max_depth=MAX_DEPTH + 1)
    return record is not None and all(
        record.get(key) == event.get(key) for key in ("source", "line", "hash", "decision")
    )


def _load_summary(out: Path, result: Verification) -> dict[str, Any] | None:
    try:
        summary = orjson.loads((out / _SUMMARY).read_bytes())
    except orjson.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        result.add(_SUMMARY, None, "not a JSON object: the file was damaged or edited")
        return None
    return summary


def _check_files(
    out: Path,
    result: Verification,
    present: set[str],
    run_end: dict[str, Any] | None,
    summary: dict[str, Any] | None,
) -> None:
    recorded = run_end.get("outputs") if run_end is not None else None
    source = "run_end"
    if not isinstance(recorded, dict) and summary is not None:
        recorded, source = summary.get("outputs"), _SUMMARY
    if not isinstance(recorded, dict):
        result.add(_AUDIT, None, "no output file hashes recorded (run_end has no 'outputs')")
        return
    for name in DATA_FILES:
        if name in present and hash_file(out / name) != recorded.get(name):
            result.add(
                name, None, f"its sha256 is not the one {source} recorded: the file was changed"
            )


def _check_summary(result: Verification, summary: dict[str, Any], audit: _AuditReader) -> None:
    def differs(label: str, theirs: str) -> None:
        result.add(_SUMMARY, None, f"{label} disagree(s) with {theirs}")

    chain = summary.get("audit")
    if not isinstance(chain, dict):
        result.add(_SUMMARY, None, "no 'audit' record of the chain (events, head)")
    else:
        if chain.get("events") != result.events:
            result.add(
                _SUMMARY,
                None,
                f"records {chain.get('events')} audit events but audit.jsonl has"
                f" {result.events}: events were cut off or added",
            )
        elif result.head is not None and chain.get("head") != result.head:
            result.add(
                _SUMMARY,
                None,
                "audit.head is not the hash of audit.jsonl's last line: the last event (or"
                " summary.json) was changed",
            )
    end, start = audit.run_end, audit.run_start
    if end is not None and summary_digest(summary) != end.get("summary"):
        result.add(_SUMMARY, None, "its content is not what run_end recorded: the file was changed")
    if end is not None:
        if summary.get("counts") != end.get("counts"):
            differs("counts", "run_end's counts")
        if summary.get("outputs") != end.get("outputs"):
            differs("outputs", "run_end's output hashes")
    if start is not None:
        if summary.get("inputs") != start.get("inputs"):
            differs("inputs", "run_start's input hashes")
        policy = summary.get("policy")
        started = start.get("policy")
        if not isinstance(policy, dict) or not isinstance(started, dict):
            result.add(_SUMMARY, None, "no policy record to compare with run_start's")
        elif policy.get("hash") != started.get("hash"):
            differs("policy hash", "run_start's policy hash")
