"""Logging for the command line: one level for our events and the HTTP stack's, on
stderr, with credentials and request bodies removed before anything is written.

:func:`configure_logging` sets up

- structlog (our own events) with a level filter and :class:`RedactSecrets` right before
  the renderer;
- a stderr handler on the root logger, carrying :class:`RedactingFilter`, so every
  standard-library record that reaches it (the ``openai`` SDK, ``httpx2``, ``aiohttp``,
  anything else) is redacted; the same filter sits on the HTTP stack's loggers, so
  handlers that others attach (``OPENAI_LOG`` installs one) see redacted records too.

``--log-level debug`` also turns on the OpenAI SDK's own debug log (the one
``OPENAI_LOG=debug`` turns on), so what the SDK does is visible, without its headers
or the example text it sends.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final, TextIO

import structlog

from moderation._redact import (
    HTTP_LOGGERS,
    RedactingFilter,
    RedactSecrets,
    install_http_log_filters,
)

__all__ = ["DEFAULT_LOG_LEVEL", "LOG_LEVELS", "configure_logging"]

LOG_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
"""The values ``--log-level`` accepts."""
DEFAULT_LOG_LEVEL: Final = "warning"

_OPENAI_LOG_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO}


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (not when the handler
    was made), so a replaced stderr (tests, notebooks) is honoured."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self._stream or sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_handler: _StderrHandler | None = None


def _stderr_logger_factory(stream: TextIO | None) -> Any:
    def factory(*_: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(stream or sys.stderr)

    return factory


def configure_logging(level: str = DEFAULT_LOG_LEVEL, *, stream: TextIO | None = None) -> None:
    """Send our events and the HTTP stack's log records at ``level`` or above to
    ``stream`` (default: the current ``sys.stderr``), redacted. Idempotent."""
    global _handler
    numeric = LOG_LEVELS[level]
    out = stream or sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            RedactSecrets(),
            structlog.dev.ConsoleRenderer(colors=_colors(out)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger_factory(stream),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = _StderrHandler(stream)
    _handler.addFilter(RedactingFilter())
    _handler.setFormatter(
        logging.Formatter(
            "%(asctime)s [%(levelname)-7s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
        )
    )
    root.addHandler(_handler)
    root.setLevel(numeric)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    install_http_log_filters()
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    # The SDK's own switch may ask for more detail than --log-level; it gets it, redacted.
    sdk = _OPENAI_LOG_LEVELS.get(os.environ.get("OPENAI_LOG", ""))
    if sdk is not None:
        logging.getLogger("openai").setLevel(min(numeric, sdk))


def _colors(stream: TextIO) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not os.environ.get("NO_COLOR")
