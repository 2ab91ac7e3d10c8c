"""The library API; the command line is a thin layer over it.

- :func:`screen` (async) and :func:`screen_sync` run the batch job: inputs in, the five
  output files written, a :class:`~moderation.summary.RunSummary` returned.
- :func:`stream` yields one :class:`~moderation.models.ExampleResult` per example, in
  input order, and writes nothing: for callers who route examples themselves.

Each takes ``cache``: a path (or an open :class:`~moderation.cache.ResultCache`) where
stage answers are kept, so the same call again (after an interruption, or on a dataset
with a few lines changed) only asks the providers what they have not answered yet.

Both accept files (paths) or in-memory ``records`` (dicts or JSON lines). Configuration
is checked here, once, before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation._version import __version__
from moderation.audit import AuditLog
from moderation.cache import CacheArg, ResultCache, cache_report, open_cache
from moderation.errors import ConfigError
from moderation.models import Example, ExampleResult
from moderation.pipeline import Pipeline, PipelineOptions
from moderation.policy import Policy, load_policy
from moderation.providers import Grader, Moderator, build_grader, build_moderator
from moderation.reader import (
    DEFAULT_MAX_LINE_BYTES,
    ReadStats,
    check_inputs,
    examples_from_records,
    hash_file,
    input_links,
    path_text,
    read_examples,
)
from moderation.sinks import OutputDir, example_result
from moderation.summary import Counts, RunSummary, Tally
from moderation.tokens import token_method

__all__ = ["PolicyChoice", "ProgressCallback", "resolve_policy", "screen", "screen_sync", "stream"]

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
class _Run:
    """Everything one run needs, built and checked before any output is written."""

    choice: PolicyChoice
    moderator: Moderator
    grader: Grader | None
    options: PipelineOptions
    max_line_bytes: int
    stats: ReadStats = field(default_factory=ReadStats)
    owns_providers: bool = True
    cache: ResultCache | None = None
    owns_cache: bool = False
    cache_problem: str | None = None

    def examples(
        self, paths: Sequence[Path] | None, records: Iterable[Any] | None
    ) -> Iterator[Example]:
        if records is not None:
            return examples_from_records(records, stats=self.stats)
        assert paths is not None
        return read_examples(paths, stats=self.stats, max_line_bytes=self.max_line_bytes)

    async def __aenter__(self) -> _Run:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the providers and cache this run opened (injected ones stay the caller's)."""
        if self.cache is not None and self.owns_cache:
            self.cache.close()
        if self.owns_providers:
            await self.moderator.aclose()
            if self.grader is not None:
                await self.grader.aclose()


PolicyArg = str | Path | Policy | PolicyChoice | None


def _prepare(
    policy: PolicyArg,
    *,
    moderator: Moderator | None,
    grader: Grader | None,
    concurrency: int,
    batch_size: int,
    max_line_bytes: int,
    allow_fallback: bool,
    cache: CacheArg = None,
) -> _Run:
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
    injected = moderator is not None
    run = _Run(
        choice=choice,
        moderator=moderator or build_moderator(choice.policy.moderation),
        grader=grader if injected else build_grader(choice.policy.grader),
        options=PipelineOptions(concurrency=concurrency, batch_size=batch_size),
        max_line_bytes=max_line_bytes,
        owns_providers=not injected,
    )
    # Opened last: a configuration error above must leave no file behind.
    if isinstance(cache, ResultCache):
        run.cache = cache
    elif cache is not None:
        run.cache, run.cache_problem = open_cache(Path(cache))
        run.owns_cache = True
    return run


async def screen(
    inputs: PathLike | Sequence[PathLike] | None = None,
    *,
    out: PathLike,
    records: Iterable[Any] | None = None,
    policy: PolicyArg = None,
    concurrency: int = 8,
    batch_size: int = 64,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    moderator: Moderator | None = None,
    grader: Grader | None = None,
    progress: ProgressCallback | None = None,
    allow_fallback: bool = True,
    cache: CacheArg = None,
) -> RunSummary:
    """Screen files (``inputs``) or in-memory ``records`` and write the outputs to ``out``.

    ``policy`` is a built-in pack's name, a path, a loaded :class:`Policy` (or the
    :class:`PolicyChoice` of :func:`resolve_policy`); ``None`` picks ``default`` with an
    API key and ``offline`` without (unless ``allow_fallback`` is false). ``moderator`` and
    ``grader`` inject providers (tests, custom backends) in place of the policy's.
    ``cache`` keeps stage answers (see the module); the outputs are the same with or
    without it, only the requests differ.
    """
    paths = _input_paths(inputs, records)
    run = _prepare(
        policy,
        moderator=moderator,
        grader=grader,
        concurrency=concurrency,
        batch_size=batch_size,
        max_line_bytes=max_line_bytes,
        allow_fallback=allow_fallback,
        cache=cache,
    )
    async with run:
        started = time.monotonic()
        started_at = datetime.now(UTC)
        input_hashes = {path_text(p): hash_file(p) for p in paths or ()}
        outputs = OutputDir(Path(out), inputs=list(paths or ()))
        try:
            audit = AuditLog(outputs.audit_handle)
            audit.event("run_start", **_run_start(run, input_hashes, paths or []))
            pipeline = Pipeline(
                run.choice.policy, run.moderator, run.grader, run.options, run.cache
            )

            async def sink(batch: Sequence[Example]) -> None:
                for example in batch:
                    outputs.write(example)
                    audit.decision(example)
                if progress is not None:
                    progress(pipeline.tally, run.stats)

            tally = await pipeline.run(run.examples(paths, records), sink)
            tally.check(run.stats.examples)
            summary = _summary(run, tally, input_hashes, started_at, time.monotonic() - started)
            summary.outputs = outputs.digests()
            audit.event("run_end", **_run_end(summary))
            summary.audit = {"events": audit.events, "head": audit.head}
            outputs.commit(summary.model_dump(mode="json"))
        except BaseException:
            outputs.abort()
            raise
    return summary


def screen_sync(inputs: PathLike | Sequence[PathLike] | None = None, **kwargs: Any) -> RunSummary:
    """:func:`screen` for scripts and notebooks (runs its own event loop).

    In a notebook whose loop is already running, ``await screen(...)`` instead.
    """
    return asyncio.run(screen(inputs, **kwargs))


async def stream(
    inputs: PathLike | Sequence[PathLike] | None = None,
    *,
    records: Iterable[Any] | None = None,
    policy: PolicyArg = None,
    concurrency: int = 8,
    batch_size: int = 64,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    moderator: Moderator | None = None,
    grader: Grader | None = None,
    allow_fallback: bool = True,
    cache: CacheArg = None,
) -> AsyncIterator[ExampleResult]:
    """Yield each example's result, in input order, writing no files (but the cache's).

    Results carry the parsed record (``example``) so a caller can route it.
    """
    paths = _input_paths(inputs, records)
    run = _prepare(
        policy,
        moderator=moderator,
        grader=grader,
        concurrency=concurrency,
        batch_size=batch_size,
        max_line_bytes=max_line_bytes,
        allow_fallback=allow_fallback,
        cache=cache,
    )
    queue: asyncio.Queue[list[ExampleResult] | None] = asyncio.Queue(maxsize=max(2, concurrency))
    pipeline = Pipeline(run.choice.policy, run.moderator, run.grader, run.options, run.cache)

    async def sink(batch: Sequence[Example]) -> None:
        await queue.put([example_result(e) for e in batch])

    async def produce() -> None:
        # The end marker is sent when the run ends or fails, never when the consumer
        # cancelled it: then nobody reads the (possibly full) queue any more.
        try:
            await pipeline.run(run.examples(paths, records), sink)
            pipeline.tally.check(run.stats.examples)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await queue.put(None)
            raise
        await queue.put(None)

    async with run:
        producer = asyncio.create_task(produce())
        try:
            while (results := await queue.get()) is not None:
                for result in results:
                    yield result
            await producer
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)


def _input_paths(
    inputs: PathLike | Sequence[PathLike] | None, records: Iterable[Any] | None
) -> list[Path] | None:
    if (inputs is None) == (records is None):
        raise ConfigError("give either input files or records, not both or neither")
    if inputs is None:
        return None
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    return check_inputs(Path(p) for p in inputs)


def _providers(run: _Run) -> dict[str, dict[str, Any]]:
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


def _policy_info(policy: Policy) -> dict[str, str]:
    return {
        "id": policy.id,
        "version": policy.version,
        "hash": policy.hash,
        "source": policy.source,
    }


def _run_start(run: _Run, input_hashes: dict[str, str], paths: list[Path]) -> dict[str, Any]:
    return {
        "tool": {"name": "moderation", "version": __version__},
        "policy": _policy_info(run.choice.policy),
        "fallback": run.choice.fallback,
        "providers": {
            "moderation": {"name": run.moderator.name, "model": run.moderator.model},
            "grader": None
            if run.grader is None
            else {"name": run.grader.name, "model": run.grader.model},
        },
        "inputs": input_hashes,
        "cache": cache_report(run.cache, run.cache_problem),
        # Symbolic links are followed on purpose; the record says where they led.
        "links": input_links(paths),
    }


def _summary(
    run: _Run,
    tally: Tally,
    input_hashes: dict[str, str],
    started_at: datetime,
    duration: float,
) -> RunSummary:
    providers = _providers(run)
    return RunSummary(
        counts=Counts(**tally.counts(run.stats.examples)),
        blank_lines=run.stats.blank_lines,
        **tally.breakdown(),
        tokens={"total": tally.tokens, "method": token_method()},
        graded=tally.graded,
        policy=_policy_info(run.choice.policy),
        fallback=run.choice.fallback,
        providers=providers,
        requests=sum(int(p.get("requests", 0)) for p in providers.values()),
        cost_usd=_total_cost(providers),
        inputs=input_hashes,
        cache=cache_report(run.cache, run.cache_problem),
        tool={"name": "moderation", "version": __version__},
        run={
            "started_at": started_at.isoformat(timespec="seconds"),
            "duration_s": round(duration, 3),
            "examples_per_s": round(run.stats.examples / duration, 1) if duration > 0 else None,
        },
    )


def _total_cost(providers: dict[str, dict[str, Any]]) -> float | None:
    """USD over all providers; ``None`` when one of them has no known price."""
    costs = [p.get("cost_usd", 0.0) for p in providers.values()]
    if any(cost is None for cost in costs):
        return None
    return round(sum(float(cost) for cost in costs), 6)


def _run_end(summary: RunSummary) -> dict[str, Any]:
    return {
        "counts": summary.counts.model_dump(),
        "blank_lines": summary.blank_lines,
        "reasons": summary.reasons,
        "categories": summary.categories,
        "providers": summary.providers,
        "requests": summary.requests,
        "tokens": summary.tokens,
        "cost_usd": summary.cost_usd,
        "cache": summary.cache,
        "duration_s": summary.run["duration_s"],
        "outputs": summary.outputs,
        "summary": summary.digest(),
    }
