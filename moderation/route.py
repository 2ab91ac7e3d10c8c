"""Stage 5, **route**: one decision per example from what the stages found.

The order of the rules is the policy of DESIGN.md, failing closed at every step:

1. a format problem: quarantine (no API call was spent on it);
2. a flag or zero-tolerance hit from moderation: flagged;
3. a moderation error (after retries) or an image the provider could not see:
   quarantine;
4. a grader verdict: ``violation`` at or above the confidence bar flags, ``allow`` at
   or above it is clean, anything else (``uncertain``, low confidence, no valid
   answer, no grader) quarantines;
5. nothing found: clean.
"""

from __future__ import annotations

from moderation.models import DecisionKind, Example, Reason
from moderation.policy import GraderSpec

__all__ = ["FLAG_CODES", "route"]

FLAG_CODES = frozenset({"flagged", "zero_tolerance"})
"""Moderation findings that flag; every other finding (errors, an image the provider
could not see) quarantines."""


def route(example: Example, grader: GraderSpec) -> DecisionKind:
    """Decide ``example`` and record its reasons; returns the decision."""
    decision, reasons = _decide(example, grader)
    example.decision = decision
    example.reasons = reasons
    return decision


def _decide(example: Example, grader: GraderSpec) -> tuple[DecisionKind, list[Reason]]:
    if not example.valid:
        return "quarantine", list(example.problems)
    flags = [r for r in example.findings if r.stage == "moderate" and r.code in FLAG_CODES]
    if flags:
        return "flagged", flags
    if example.findings:
        return "quarantine", list(example.findings)
    if example.grade_error is not None:
        return "quarantine", [*example.escalations, example.grade_error]
    verdict = example.verdict
    if verdict is None:
        if example.escalations:
            # Escalated but never graded: a bug upstream; never let it through.
            missing = Reason(stage="grade", code="missing_verdict")
            return "quarantine", [*example.escalations, missing]
        return "clean", []
    detail = {
        "verdict": verdict.verdict,
        "rule": verdict.rule,
        "confidence": verdict.confidence,
        "bar": grader.confidence,
    }
    if verdict.verdict == "uncertain":
        return "quarantine", [
            *example.escalations,
            Reason(stage="grade", code="uncertain", detail=detail),
        ]
    if verdict.confidence < grader.confidence:
        low = Reason(stage="grade", code="low_confidence", detail=detail)
        return "quarantine", [*example.escalations, low]
    if verdict.verdict == "violation":
        return "flagged", [
            *example.escalations,
            Reason(stage="grade", code="violation", detail=detail),
        ]
    return "clean", [*example.escalations, Reason(stage="grade", code="allow", detail=detail)]
