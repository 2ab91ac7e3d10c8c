"""Policies: one YAML file that says how examples are judged.

A policy is validated once, here, at the edge; the rest of the package receives a
:class:`Policy` and reads plain values from it. Built-in packs live in
``moderation/policies/NAME.yaml`` and are addressed by name; anything else is a path.
"""

from __future__ import annotations

import fnmatch
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moderation.errors import PolicyError

__all__ = [
    "GraderSpec",
    "ModerationSpec",
    "Policy",
    "RuleSpec",
    "builtin_policies",
    "load_policy",
    "names_a_file",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(BaseModel):
    """One rule the grader judges against."""

    model_config = _STRICT

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str
    not_allowed: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    examples: tuple[dict[str, str], ...] = ()


class ModerationSpec(BaseModel):
    """The moderation gate: provider, thresholds and what each role's score means."""

    model_config = _STRICT

    provider: Literal["local", "openai"]
    model: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Category glob pattern -> score at or above which the category counts. The most
    specific pattern wins (an exact name, then the longest pattern)."""
    use_provider_flagged: bool = False
    """Also count the categories the provider itself flags."""
    flag_roles: tuple[str, ...] = ("system", "developer", "assistant", "text")
    escalate_roles: tuple[str, ...] = ("user", "tool", "function", "rejected")
    zero_tolerance: tuple[str, ...] = ()
    """Category patterns that flag in any role and are never escalated."""
    images: Literal["moderate", "skip", "quarantine"] = "moderate"
    """What to do with image segments: score them, ignore them, or quarantine the
    example (for providers that cannot see images)."""
    max_inputs_per_request: int = Field(default=32, ge=1, le=2048)
    max_tokens_per_request: int = Field(default=16_000, ge=100)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1, le=1024)

    @field_validator("thresholds")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for pattern, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {pattern!r} must be between 0 and 1")
        return value

    def threshold_for(self, category: str) -> float | None:
        """The threshold that applies to ``category``, or ``None`` when none does."""
        if category in self.thresholds:
            return self.thresholds[category]
        best: tuple[int, float] | None = None
        for pattern, threshold in self.thresholds.items():
            if fnmatch.fnmatchcase(category, pattern) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), threshold)
        return None if best is None else best[1]

    def is_zero_tolerance(self, category: str) -> bool:
        """True when ``category`` matches one of the zero-tolerance patterns."""
        return any(fnmatch.fnmatchcase(category, p) for p in self.zero_tolerance)


class GraderSpec(BaseModel):
    """The LLM judge: which examples it sees, its rules and its confidence bar."""

    model_config = _STRICT

    provider: Literal["none", "openai"] = "none"
    model: str | None = None
    sees: Literal["escalations", "all"] = "escalations"
    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    """A ``violation`` at or above this confidence flags; below it quarantines."""
    rules: tuple[RuleSpec, ...] = ()
    max_output_tokens: int = Field(default=300, ge=16)
    output_limit_param: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    """How the output limit is sent: OpenAI's reasoning models need
    ``max_completion_tokens``; some compatible servers (Ollama, LM Studio) read only
    ``max_tokens``."""
    concurrency: int = Field(default=8, ge=1, le=1024)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=0.0, ge=0.0, le=2.0)
    """Sampling temperature; ``null`` sends none (reasoning models accept only theirs)."""
    prices: dict[str, float] = Field(default_factory=dict)
    """USD per million tokens: ``input`` and ``output``; unset uses the built-in table."""

    @field_validator("prices")
    @classmethod
    def _input_and_output(cls, value: dict[str, float]) -> dict[str, float]:
        if value and set(value) != {"input", "output"}:
            raise ValueError("give both 'input' and 'output' (USD per million tokens)")
        if any(price < 0 for price in value.values()):
            raise ValueError("prices must not be negative")
        return value


class Policy(BaseModel):
    """A validated policy. ``hash`` identifies its content (not its formatting)."""

    model_config = _STRICT

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str
    description: str = ""
    requires_network: bool = False
    moderation: ModerationSpec
    grader: GraderSpec = Field(default_factory=GraderSpec)
    source: str = Field(default="", exclude=True)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @property
    def hash(self) -> str:
        """sha256 of the policy's canonical JSON: same content, same hash."""
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return "sha256:" + hashlib.sha256(canonical).hexdigest()

    @property
    def needs_openai(self) -> bool:
        """True when a stage of this policy calls the OpenAI API (and needs a key)."""
        return self.moderation.provider == "openai" or self.grader.provider == "openai"


def builtin_policies() -> list[str]:
    """Names of the policy packs shipped inside the package."""
    folder = resources.files("moderation") / "policies"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_policy(name_or_path: str | Path) -> Policy:
    """Load a built-in pack by name, or a policy file by path.

    Raises :class:`PolicyError` naming the file and the field for anything wrong.
    """
    text, source = _read_policy_text(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy is a YAML mapping, got {type(data).__name__}")
    try:
        policy = Policy.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PolicyError(f"{source}: {problems}") from None
    if policy.grader.provider != "none" and not policy.grader.rules:
        raise PolicyError(f"{source}: grader.rules: a grader needs at least one rule")
    if policy.grader.sees == "all" and policy.grader.provider == "none":
        raise PolicyError(f"{source}: grader.sees: 'all' needs a grader provider")
    return policy


def names_a_file(name_or_path: str | Path) -> bool:
    """True when ``name_or_path`` is a policy file's path, not a built-in pack's name:
    it ends in ``.yaml``/``.yml`` or has a directory separator."""
    as_text = str(name_or_path)
    return Path(as_text).suffix in {".yaml", ".yml"} or "/" in as_text or "\\" in as_text


def _read_policy_text(name_or_path: str | Path) -> tuple[str, str]:
    candidate = Path(name_or_path)
    as_text = str(name_or_path)
    if not names_a_file(name_or_path):
        resource = resources.files("moderation") / "policies" / f"{as_text}.yaml"
        if resource.is_file():
            return resource.read_text(encoding="utf-8"), f"builtin:{as_text}"
        raise PolicyError(
            f"no built-in policy named {as_text!r} (built-in: {', '.join(builtin_policies())});"
            " give a path to use a policy file"
        )
    try:
        return candidate.read_text(encoding="utf-8"), str(candidate)
    except FileNotFoundError:
        raise PolicyError(f"{candidate}: policy file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{candidate}: cannot read policy: {exc}") from None
