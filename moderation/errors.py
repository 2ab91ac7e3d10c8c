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

__all__ = [
    "ConfigError",
    "InputError",
    "InvariantError",
    "ModerationError",
    "PolicyError",
    "ProviderFatalError",
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
