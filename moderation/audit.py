"""The audit log: structlog JSON events, one line each, never the example's text.

Events: ``run_start`` (tool version, policy id and hash, providers and models, input
file hashes), one ``decision`` per example (source, line, hash, decision, reasons with
categories, scores and verdicts) and ``run_end`` (counts, durations, requests, tokens,
the sha256 of each output file).

**Hash chain.** Every event carries ``seq`` (its 1-based line number) and ``prev``: the
sha256 of the previous line's exact bytes (without the newline), :data:`GENESIS` for
the first. Editing, deleting, inserting or reordering a line therefore breaks the link
of the line after it, and ``run_end``'s ``prev`` is the head of the chain of everything
before it. The chain is made by the renderer itself (:class:`HashChain`), which hashes
the bytes it returns, so what is hashed is exactly what is written.
:mod:`moderation.verify` checks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping
from typing import IO, Any, Final

import orjson
import structlog
from structlog.typing import Processor

from moderation.models import Example

__all__ = ["GENESIS", "AuditLog", "HashChain", "decision_event", "default_processors", "line_hash"]

GENESIS: Final = "sha256:" + "0" * 64
"""The ``prev`` of an audit log's first event."""


class _AuditFile:
    """A structlog "logger" that appends rendered bytes to an open file.

    Unlike :class:`structlog.BytesLogger` it does not flush after each event: the file
    is a temporary one, flushed and fsynced once when the run is committed.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._write = handle.write

    def msg(self, message: bytes) -> None:
        self._write(message + b"\n")

    info = msg


def line_hash(line: bytes) -> str:
    """The chain's hash of one audit line (its bytes without the newline)."""
    return "sha256:" + hashlib.sha256(line).hexdigest()


def default_processors() -> list[Processor]:
    """What runs before the chained renderer: a UTC timestamp."""
    return [structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")]


class HashChain:
    """The audit log's renderer: puts ``seq`` and ``prev`` first, renders the event to
    JSON bytes, and makes the hash of those bytes the ``prev`` of the next event."""

    def __init__(self) -> None:
        self.seq = 0
        """Events rendered so far (the ``seq`` of the last one)."""
        self.head = GENESIS
        """The hash of the last rendered line (:data:`GENESIS` before the first)."""

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> bytes:
        self.seq += 1
        event: dict[str, Any] = {"seq": self.seq, "prev": self.head, **event_dict}
        # The chain's own fields win over an event's fields of the same name.
        event["seq"], event["prev"] = self.seq, self.head
        line = orjson.dumps(event, default=str)
        self.head = line_hash(line)
        return line


# Reason details under these keys are a provider's words (an API error message, a
# model's refusal or rationale), which can quote the example: never in the audit log.
_FREE_TEXT_KEYS = frozenset({"message", "rationale", "refusal", "text", "content", "raw"})
_MAX_AUDIT_STRING = 256


def _content_free(value: Any) -> Any:
    """A reason's detail without free text: provider messages dropped, any other
    string longer than an identifier or a path could be replaced by its length."""
    if isinstance(value, dict):
        return {k: _content_free(v) for k, v in value.items() if k not in _FREE_TEXT_KEYS}
    if isinstance(value, list | tuple):
        return [_content_free(v) for v in value]
    if isinstance(value, str) and len(value) > _MAX_AUDIT_STRING:
        return f"<{len(value)}-char string>"
    return value


def decision_event(example: Example) -> dict[str, Any]:
    """The fields of one example's ``decision`` event (no text, ever)."""
    reasons = []
    for reason in example.reasons:
        entry = reason.model_dump(mode="json")
        entry["detail"] = _content_free(entry["detail"])
        reasons.append(entry)
    event: dict[str, Any] = {
        "source": example.source,
        "line": example.line,
        "hash": example.hash,
        "decision": example.decision,
        "reasons": reasons,
    }
    if example.verdict is not None:
        event["verdict"] = example.verdict.model_dump(mode="json", exclude={"rationale"})
    return event


class AuditLog:
    """Writes the audit events of one run to ``handle``, hash-chained.

    ``processors`` run before the chained renderer (default: :func:`default_processors`).
    """

    def __init__(self, handle: IO[bytes], *, processors: Iterable[Processor] | None = None) -> None:
        self._chain = HashChain()
        before = list(processors) if processors is not None else default_processors()
        self._logger = structlog.wrap_logger(
            _AuditFile(handle),
            processors=[*before, self._chain],
            # Not the global configuration's wrapper: --log-level must never filter the
            # audit trail.
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=True,
        )

    @property
    def events(self) -> int:
        """Events written so far."""
        return self._chain.seq

    @property
    def head(self) -> str:
        """The hash of the last event written: the head of the chain."""
        return self._chain.head

    def event(self, name: str, **fields: Any) -> None:
        """Write one event."""
        self._logger.info(name, **fields)

    def decision(self, example: Example, **extra: Any) -> None:
        """Write an example's ``decision`` event."""
        self._logger.info("decision", **decision_event(example), **extra)
