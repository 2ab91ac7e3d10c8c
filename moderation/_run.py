"""What every entry point does before it runs: choose the policy, build (or take) the
providers, open the cache, check the inputs. Shared by :mod:`moderation.api` and
:mod:`moderation.gating`; configuration is checked here once, before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation._paths import check_not_an_input
from moderation.cache import CacheArg, ResultCache, open_cache
from moderation.errors import ConfigError
from moderation.models import Example
from moderation.pipeline import Pipeline, PipelineOptions
from moderation.policy import Policy, load_policy
from moderation.providers import Grader, Moderator, build_grader, build_moderator
from moderation.reader import ReadStats, check_inputs, examples_from_records, read_examples
from moderation.summary import Tally

__all__ = [
    "FALLBACK_NOTE",
    "PathLike",
    "PolicyArg",
    "PolicyChoice",
    "ProgressCallback",
    "Run",
    "input_paths",
    "policy_info",
    "prepare",
    "providers_report",
    "resolve_policy",
    "total_cost",
    "total_requests",
]

ProgressCallback = Callable[[Tally, ReadStats], None]
PathLike = str | os.PathLike[str]

FALLBACK_NOTE = (
    "OPENAI_API_KEY is not set: screened with the 'offline' policy (local detectors only),"
    " not the 'default' policy's OpenAI moderation and LLM grader"
)


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """The policy a run uses, and why (``fallback`` is set when it is not the one the
    user would get with an API key)."""

    policy: Policy
    fallback: str | None = None


def resolve_policy(
    name_or_path: str | Path | Policy | None,
    *,
    allow_fallback: bool = True,
    require_key: bool = True,
) -> PolicyChoice:
    """Pick the run's policy. With none named: ``default`` when ``OPENAI_API_KEY`` is set,
    else ``offline`` (only when ``allow_fallback``; the CI gate never falls back).

    Raises :class:`ConfigError` when the policy needs a key that is not set (unless
    ``require_key`` is false: an estimate calls nothing).
    """
    has_key = bool(os.environ.get("OPENAI_API_KEY"))
    if isinstance(name_or_path, Policy):
        choice = PolicyChoice(name_or_path)
    elif name_or_path is not None:
        choice = PolicyChoice(load_policy(name_or_path))
    elif has_key or not allow_fallback:
        choice = PolicyChoice(load_policy("default"))
    else:
        choice = PolicyChoice(load_policy("offline"), fallback=FALLBACK_NOTE)
    if require_key and choice.policy.needs_openai and not has_key:
        raise ConfigError(
            f"policy {choice.policy.id!r} calls the OpenAI API but OPENAI_API_KEY is not set"
            " (set it, point OPENAI_BASE_URL at a compatible server, or use --policy offline)"
        )
    return choice


@dataclass(slots=True)
class Run:
    """Everything one run needs, built and checked before any output is written."""

    choice: PolicyChoice
    moderator: Moderator
    grader: Grader | None
    options: PipelineOptions
    max_line_bytes: int
    stats: ReadStats = field(default_factory=ReadStats)
    owns_moderator: bool = True
    owns_grader: bool = True
    cache_arg: CacheArg = None
    """The cache asked for; opened by :meth:`open_cache`, once the outputs are checked."""
    cache: ResultCache | None = None
    owns_cache: bool = False
    cache_problem: str | None = None

    def examples(
        self,
        paths: Sequence[Path] | None,
        records: Iterable[Any] | None,
        expected: dict[str, str] | None = None,
    ) -> Iterator[Example]:
        """The examples of the files (checked against the ``expected`` hashes recorded
        before reading, see :func:`~moderation.reader.read_examples`) or records."""
        if records is not None:
            return examples_from_records(records, stats=self.stats)
        assert paths is not None
        return read_examples(
            paths, stats=self.stats, max_line_bytes=self.max_line_bytes, expected=expected
        )

    def open_cache(self, inputs: Sequence[Path] = ()) -> None:
        """Open the cache asked for (after every check that could refuse the run, so a
        refused run leaves no cache file behind); never over one of ``inputs``."""
        if isinstance(self.cache_arg, ResultCache):
            self.cache = self.cache_arg
        elif self.cache_arg is not None:
            path = Path(self.cache_arg)
            check_not_an_input(path, inputs)
            self.cache, self.cache_problem = open_cache(path)
            self.owns_cache = True

    def pipeline(self) -> Pipeline:
        """The pipeline of this run's policy, providers, options and cache."""
        return Pipeline(self.choice.policy, self.moderator, self.grader, self.options, self.cache)

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the providers and cache this run opened (injected ones stay the caller's)."""
        if self.cache is not None and self.owns_cache:
            self.cache.close()
        if self.owns_moderator:
            await self.moderator.aclose()
        if self.grader is not None and self.owns_grader:
            await self.grader.aclose()


PolicyArg = str | Path | Policy | PolicyChoice | None


def prepare(
    policy: PolicyArg,
    *,
    moderator: Moderator | None,
    grader: Grader | None,
    concurrency: int,
    batch_size: int,
    max_line_bytes: int,
    allow_fallback: bool,
    cache: CacheArg = None,
) -> Run:
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if batch_size < 1:
        raise ConfigError("batch size must be at least 1")
    if max_line_bytes < 1024:
        raise ConfigError("max line bytes must be at least 1024")
    if moderator is not None and policy is None:
        raise ConfigError("an injected moderator needs the policy it serves")
    if isinstance(policy, PolicyChoice):
        choice = policy
    elif isinstance(policy, Policy) and moderator is not None:
        choice = PolicyChoice(policy)
    else:
        choice = resolve_policy(policy, allow_fallback=allow_fallback)
    # An injected provider stays the caller's. With an injected moderator and no
    # grader, none is built: the caller chose the providers (escalations quarantine).
    build_both = moderator is None and grader is None
    run = Run(
        choice=choice,
        moderator=moderator or build_moderator(choice.policy.moderation),
        grader=build_grader(choice.policy.grader) if build_both else grader,
        options=PipelineOptions(concurrency=concurrency, batch_size=batch_size),
        max_line_bytes=max_line_bytes,
        owns_moderator=moderator is None,
        owns_grader=build_both,
        cache_arg=cache,
    )
    return run


def input_paths(
    inputs: PathLike | Sequence[PathLike] | None, records: Iterable[Any] | None
) -> list[Path] | None:
    if (inputs is None) == (records is None):
        raise ConfigError("give either input files or records, not both or neither")
    if inputs is None:
        return None
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    return check_inputs(Path(p) for p in inputs)


def providers_report(run: Run) -> dict[str, dict[str, Any]]:
    providers: dict[str, dict[str, Any]] = {
        "moderation": {
            "name": run.moderator.name,
            "model": run.moderator.model,
            **run.moderator.stats.model_dump(),
        }
    }
    if run.grader is not None:
        providers["grader"] = {
            "name": run.grader.name,
            "model": run.grader.model,
            **run.grader.stats.model_dump(),
        }
    return providers


def policy_info(policy: Policy) -> dict[str, str]:
    return {
        "id": policy.id,
        "version": policy.version,
        "hash": policy.hash,
        "source": policy.source,
    }


def total_requests(providers: dict[str, dict[str, Any]]) -> int:
    """API requests over all providers."""
    return sum(int(p.get("requests", 0)) for p in providers.values())


def total_cost(providers: dict[str, dict[str, Any]]) -> float | None:
    """USD over all providers; ``None`` when one of them has no known price."""
    costs = [p.get("cost_usd", 0.0) for p in providers.values()]
    if any(cost is None for cost in costs):
        return None
    return round(sum(float(cost) for cost in costs), 6)
