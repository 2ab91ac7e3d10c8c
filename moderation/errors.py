"""Exceptions raised by ``moderation``.

A rejected *example* is never an exception: it is data, routed to quarantine with a
reason. Exceptions are for what stops a run as a whole::

    ModerationError
    ├── ConfigError            bad policy, bad flag, missing API key (exit 2)
    │   └── PolicyError        a policy file that does not load; names file and field
    ├── InputError             a missing, unreadable or non-regular input (exit 2)
    ├── ProviderFatalError     the provider refuses us outright (bad key, no permission):
    │                          continuing would only quarantine every example (exit 2)
    └── InvariantError         a bug: counts do not add up; no summary is written
"""

from __future__ import annotations

import asyncio

__all__ = [
    "ConfigError",
    "InputError",
    "InvariantError",
    "ModerationError",
    "PolicyError",
    "ProviderFatalError",
    "first_cause",
]


class ModerationError(Exception):
    """Base class of every exception this package raises on purpose."""


class ConfigError(ModerationError):
    """The run is configured in a way that cannot work; nothing was written."""


class PolicyError(ConfigError):
    """A policy file is missing, unparsable or invalid."""


class InputError(ModerationError):
    """An input file is missing, unreadable, or not a regular file."""


class ProviderFatalError(ModerationError):
    """A provider rejected our credentials or permissions; retrying cannot help."""


class InvariantError(ModerationError):
    """An internal check failed (e.g. conservation of counts). Always a bug."""


def first_cause(grouped: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that stopped a task group: the first that is not a cancellation
    (``TaskGroup`` wraps it in a group, with the cancellations it caused)."""
    for exc in grouped.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_cause(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return grouped.exceptions[0]
