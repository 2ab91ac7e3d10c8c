"""Typed records that flow between the stages.

Data flows one way: ``reader`` yields :class:`Example`; ``validate`` fills in its
format, problems and :class:`Segment` list; ``moderate`` adds one
:class:`SegmentModeration` per segment; ``grade`` adds a :class:`Verdict`; ``route``
turns all of it into a :class:`Decision`. The sinks write :class:`ExampleResult`.

Models that cross a process or wire boundary (results, verdicts, reasons) are pydantic
models; the per-example working record (:class:`Example`) is a slotted dataclass,
because it is created for every input line and mutated by each stage in turn.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DecisionKind",
    "Example",
    "ExampleResult",
    "Reason",
    "ReasonStage",
    "Segment",
    "SegmentError",
    "SegmentModeration",
    "SegmentReport",
    "Verdict",
]

DecisionKind = Literal["clean", "flagged", "quarantine"]
ReasonStage = Literal["validate", "moderate", "grade", "error"]


class Reason(BaseModel):
    """Why an example got its decision (or a warning that did not change it).

    ``code`` is stable and machine-readable; ``detail`` is JSON data for people and tools
    (never the example's text).
    """

    model_config = ConfigDict(frozen=True)

    stage: ReasonStage
    code: str
    detail: Any = None

    @property
    def key(self) -> str:
        """``stage.code``, as counted in the summary."""
        return f"{self.stage}.{self.code}"


class Segment(BaseModel):
    """One piece of an example that a moderator scores: a text or an image.

    ``role`` is the speaker the model learns from: ``system``, ``developer``, ``user``,
    ``assistant``, ``tool`` and ``function`` come from chat messages; ``text`` is a
    plain corpus record; ``rejected`` is the non-preferred output of a preference pair
    (the model is trained *away* from it). ``path`` locates the piece inside the record,
    e.g. ``messages[3].content[0].text``.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    role: str
    kind: Literal["text", "image"] = "text"
    text: str = ""
    image_url: str | None = None


class SegmentModeration(BaseModel):
    """A moderator's scores for one segment."""

    model_config = ConfigDict(frozen=True)

    scores: dict[str, float]
    flagged: tuple[str, ...] = ()
    """Categories the provider itself marked as flagged (its own thresholds)."""
    provider: str
    model: str


class SegmentError(BaseModel):
    """A moderator could not score a segment (after its retries)."""

    model_config = ConfigDict(frozen=True)

    code: str
    """Short stable code, e.g. ``timeout``, ``server_error``, ``bad_request``."""
    message: str = ""
    provider: str
    model: str


class Verdict(BaseModel):
    """The grader's answer, exactly the schema of DESIGN.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Literal["allow", "violation", "uncertain"]
    rule: str | None
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str


@dataclasses.dataclass(slots=True, eq=False)
class Example:
    """One input line on its way through the stages.

    ``raw`` is the line's bytes without its ``\\n`` terminator (a ``\\r`` stays, so
    clean output is byte-identical). ``record`` is the parsed JSON object, or ``None``
    when the line could not be parsed (``problems`` then says why).
    """

    source: str
    line: int
    raw: bytes
    hash: str
    index: int = 0
    """0-based position among the run's examples (blank lines excluded)."""
    record: dict[str, Any] | None = None
    size: int = 0
    """Byte length of the line, also when ``raw`` was not kept (oversized lines)."""
    format: str | None = None
    problems: list[Reason] = dataclasses.field(default_factory=list)
    """Errors: any one quarantines the example before an API call is spent."""
    warnings: list[Reason] = dataclasses.field(default_factory=list)
    segments: list[Segment] = dataclasses.field(default_factory=list)
    tokens: int = 0
    moderated: list[Segment] = dataclasses.field(default_factory=list)
    """The segments that were sent to the moderator (images may be left out by policy)."""
    moderation: list[SegmentModeration | SegmentError] = dataclasses.field(default_factory=list)
    """One result per ``moderated`` segment, aligned."""
    findings: list[Reason] = dataclasses.field(default_factory=list)
    """What moderation decided: flags, zero-tolerance hits, errors."""
    escalations: list[Reason] = dataclasses.field(default_factory=list)
    """Categories over threshold in a role that the grader must judge."""
    verdict: Verdict | None = None
    grade_error: Reason | None = None
    decision: DecisionKind | None = None
    reasons: list[Reason] = dataclasses.field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when validation found no error (warnings do not count)."""
        return self.record is not None and not self.problems


class SegmentReport(BaseModel):
    """What an output record says about one moderated segment (no text)."""

    path: str
    role: str
    kind: Literal["text", "image"]
    scores: dict[str, float] | None = None
    flagged: tuple[str, ...] = ()
    error: str | None = None


class ExampleResult(BaseModel):
    """One example's outcome: a line of flagged.jsonl / quarantine.jsonl, and what the
    library's result stream yields."""

    source: str
    line: int
    hash: str
    decision: DecisionKind
    reasons: list[Reason]
    format: str | None = None
    tokens: int = 0
    warnings: list[Reason] = Field(default_factory=list)
    moderation: list[SegmentReport] = Field(default_factory=list)
    verdict: Verdict | None = None
    example: Any = None
    """The parsed record, or the raw line (decoded with replacement) when unparseable."""
