"""Screen training datasets before anyone trains on them or uploads them.

Every example streams through a moderation classifier, then (for what the policy
escalates) an LLM judge against a written policy, and lands in exactly one of
clean.jsonl, flagged.jsonl or quarantine.jsonl, with an audit log and a summary.

Library use::

    import moderation

    summary = moderation.screen_sync("train.jsonl", out="screened", policy="offline")
    print(summary.counts.clean, summary.counts.flagged, summary.counts.quarantine)

    result = moderation.gate_sync("train.jsonl", policy="offline", max_flagged="1%")
    print(result.passed, result.failures)
"""

from moderation._version import __version__
from moderation.api import PolicyChoice, resolve_policy, screen, screen_sync, stream
from moderation.cache import ResultCache
from moderation.errors import (
    ConfigError,
    InputError,
    InvariantError,
    ModerationError,
    PolicyError,
    ProviderFatalError,
)
from moderation.estimate import RunEstimate, estimate_run
from moderation.gating import Finding, GateResult, Limit, gate, gate_sync
from moderation.models import (
    Example,
    ExampleResult,
    Reason,
    Segment,
    SegmentError,
    SegmentModeration,
    Verdict,
)
from moderation.policy import Policy, builtin_policies, load_policy
from moderation.providers import Grader, GradeRequest, Moderator, ProviderStats
from moderation.summary import Counts, RunSummary

__all__ = [
    "ConfigError",
    "Counts",
    "Example",
    "ExampleResult",
    "Finding",
    "GateResult",
    "GradeRequest",
    "Grader",
    "InputError",
    "InvariantError",
    "Limit",
    "ModerationError",
    "Moderator",
    "Policy",
    "PolicyChoice",
    "PolicyError",
    "ProviderFatalError",
    "ProviderStats",
    "Reason",
    "ResultCache",
    "RunEstimate",
    "RunSummary",
    "Segment",
    "SegmentError",
    "SegmentModeration",
    "Verdict",
    "__version__",
    "builtin_policies",
    "estimate_run",
    "gate",
    "gate_sync",
    "load_policy",
    "resolve_policy",
    "screen",
    "screen_sync",
    "stream",
]
