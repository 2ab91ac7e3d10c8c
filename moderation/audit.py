"""The audit log: structlog JSON events, one line each, never the example's text.

Events: ``run_start`` (tool version, policy id and hash, providers and models, input
file hashes), one ``decision`` per example (source, line, hash, decision, reasons with
categories, scores and verdicts) and ``run_end`` (counts, durations, requests, tokens).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import orjson
import structlog
from structlog.typing import Processor

from moderation.models import Example

__all__ = ["AuditLog", "decision_event", "default_processors"]


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


def _orjson_dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def default_processors() -> list[Processor]:
    """Timestamp, then render to JSON. Later processors (e.g. a hash chain) go between."""
    return [
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.JSONRenderer(serializer=_orjson_dumps),
    ]


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
    """Writes the audit events of one run to ``handle``."""

    def __init__(self, handle: IO[bytes], *, processors: Iterable[Processor] | None = None) -> None:
        self._logger = structlog.wrap_logger(
            _AuditFile(handle),
            processors=list(processors) if processors is not None else default_processors(),
            context_class=dict,
            cache_logger_on_first_use=True,
        )

    def event(self, name: str, **fields: Any) -> None:
        """Write one event."""
        self._logger.info(name, **fields)

    def decision(self, example: Example, **extra: Any) -> None:
        """Write an example's ``decision`` event."""
        self._logger.info("decision", **decision_event(example), **extra)
