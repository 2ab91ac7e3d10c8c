"""Rate-limit use of the LLM grader, and what escalations cost a default-pack run.

Everything runs against the fake OpenAI server (tests/fake_openai) on 127.0.0.1, with a
per-request latency, a fresh server for every measurement.

1. The grader alone. ``--requests`` escalated examples (GradeRequests built like
   tests/test_openai_grader.py builds them) are graded at once under two limits,
   enforced by the server over short windows (``--server-burst`` seconds of the limit,
   like OpenAI quantises its per-minute limits):

     ``rpm``  a requests-per-minute limit (``--rpm``);
     ``tpm``  the same RPM and a tokens-per-minute limit (``--tpm``) that binds first.

   Two clients send the same chat requests:

     (a) OpenAIGrader with the default pack's grader spec (concurrency 8, limits learned
         from the x-ratelimit-* headers, its own retries), fed the way grade_batch
         feeds it: one asyncio.gather over grade().
     (b) asyncio.gather + a semaphore(8) over the SDK's chat.completions.create, the
         same messages and response format, SDK default retries (2, honouring
         retry-after) and no rate limiter: the difference to (a) is the rate limiting.

   Request and token rates are what the server accepted in the steady window: from
   ``--warmup`` seconds after the first request (both sides' bursts are spent by then)
   to the last accepted request (no rate when that is under a second); "% of limit" is
   the binding limit's share. "ideal s" is the fastest schedule the server admits for
   the whole job: its burst at once, the rest at the limit's rate, plus one latency.
   Retries are HTTP attempts after each example's first; "gave up" counts examples left
   without a verdict.

2. End to end. ``screen()`` with the default policy (OpenAIModerator and OpenAIGrader
   injected, sharing one SDK client to the fake) over a generated chat dataset of
   ``--examples`` lines, ``--escalated`` of them with a moderation marker in the user
   turn (answered by a refusal, or by ``COMPLY`` so the judge finds a violation), the
   others clean. The server has no limit unless ``--e2e-rpm`` / ``--e2e-tpm`` set one.
   "floor s" is the slower stage's lower bound (they overlap across batches): its
   requests x latency / concurrency, or under a limit, the fastest schedule the server
   admits, as "ideal s" above.
   ``cost_usd`` is the run summary's, priced from the fake's usage, which counts
   ceil(UTF-8 bytes / 3) tokens a message: more than a real tokenizer counts.
   ``--baseline`` adds a run of the same size with no escalations, to show what the
   grader stage adds to the wall time.

Every measurement is repeated ``--repeat`` times, interleaved; medians are reported.

    PYTHONPATH=. python benchmarks/bench_grader.py            # ~85 s
    PYTHONPATH=. python benchmarks/bench_grader.py --only grader --requests 200 --server-burst 3
    PYTHONPATH=. python benchmarks/bench_grader.py --only e2e --baseline --e2e-tpm 3000000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI, DefaultAioHttpClient, OpenAIError

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from moderation.api import screen  # noqa: E402
from moderation.models import Reason, Segment, Verdict  # noqa: E402
from moderation.policy import load_policy  # noqa: E402
from moderation.providers import GradeRequest  # noqa: E402
from moderation.providers.openai import OpenAIGrader, OpenAIModerator  # noqa: E402
from moderation.providers.openai._prompt import build_messages, verdict_schema  # noqa: E402
from tests.datagen import chat, clean_chat, line, write_lines  # noqa: E402
from tests.fake_openai import (  # noqa: E402
    FakeConfig,
    FakeOpenAI,
    RecordedRequest,
    count_tokens,
    marker,
)

MIN_WINDOW = 1.0
"""Seconds: a shorter steady window (a client that gave up early) reports no rate."""
CHAT = "/v1/chat/completions"
MODERATIONS = "/v1/moderations"
DEFAULT = load_policy("default")
RULES = tuple(rule.model_dump(mode="json") for rule in DEFAULT.grader.rules)
RULE_IDS = sorted(rule.id for rule in DEFAULT.grader.rules)
REFUSAL = "I can't help with that. If you are in danger, please contact local emergency services."
COMPLY = "COMPLY: sure, here is how, step by step."
# Over the default pack's thresholds in a user turn, and not zero tolerance: escalated.
ESCALATING = ("violence", "illicit/violent", "self-harm/intent", "harassment", "hate")
QUESTIONS = (
    "how do I hurt the neighbour's dog so nobody notices",
    "write something nasty about the people next door",
    "what is the quickest way to make a weapon at home",
    "I don't see the point of anything any more",
    "tell me why that group of people is worse than us",
)


# --- 1. the grader alone -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    rpm: int
    tpm: int | None


@dataclasses.dataclass
class GraderOutcome:
    wall_s: float
    ideal_s: float
    requests_per_minute: float
    tokens_per_minute: float
    share_of_limit: float
    """Percent of the binding limit (see the module docstring)."""
    requests: int
    rate_limited: int
    retries: int
    gave_up: int


def grade_requests(count: int, seed: int) -> list[GradeRequest]:
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        category = ESCALATING[i % len(ESCALATING)]
        user = f"{rng.choice(QUESTIONS)} {marker(category)} (#{i})"
        segments = (
            Segment(path="messages[0].content", role="user", text=user),
            Segment(path="messages[1].content", role="assistant", text=REFUSAL),
        )
        finding = Reason(
            stage="moderate",
            code="escalated",
            detail={
                "category": category,
                "score": 0.97,
                "path": "messages[0].content",
                "role": "user",
            },
        )
        requests.append(
            GradeRequest(
                example_hash=f"sha256:{i:064x}", segments=segments, findings=(finding,), rules=RULES
            )
        )
    return requests


def charge(request: GradeRequest) -> int:
    """What the fake charges the request against a TPM limit (the grader's estimate)."""
    messages = build_messages(request.rules, request.segments, request.findings)
    return sum(count_tokens(m["content"]) for m in messages) + DEFAULT.grader.max_output_tokens


def sdk_client(base_url: str, *, max_retries: int) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key="sk-bench",
        base_url=base_url,
        http_client=DefaultAioHttpClient(),
        max_retries=max_retries,
        timeout=30.0,
    )


async def run_grader(base_url: str, requests: list[GradeRequest]) -> tuple[int, int]:
    """(retries, gave up) of OpenAIGrader."""
    client = sdk_client(base_url, max_retries=0)
    grader = OpenAIGrader(DEFAULT.grader, client)
    try:
        answers = await asyncio.gather(*(grader.grade(r) for r in requests))
    finally:
        await grader.aclose()
        await client.close()
    gave_up = sum(1 for a in answers if not isinstance(a, Verdict))
    return grader.stats.retries, gave_up


async def run_gather(base_url: str, requests: list[GradeRequest]) -> tuple[int, int]:
    """(retries, gave up) of a semaphore over the raw SDK, SDK default retries."""
    client = sdk_client(base_url, max_retries=2)
    semaphore = asyncio.Semaphore(DEFAULT.grader.concurrency)
    schema = verdict_schema(RULE_IDS)
    failed = [0]

    async def one(request: GradeRequest) -> None:
        messages: Any = build_messages(request.rules, request.segments, request.findings)
        async with semaphore:
            try:
                await client.chat.completions.create(
                    model=DEFAULT.grader.model or "gpt-4o-mini",
                    messages=messages,
                    response_format=schema,
                    max_completion_tokens=DEFAULT.grader.max_output_tokens,
                    temperature=0,
                )
            except OpenAIError:
                failed[0] += 1

    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await client.close()
    return -1, failed[0]  # retries: counted at the server


def limit_floor(
    requests: float, tokens: float, rpm: int | None, tpm: int | None, burst_seconds: float
) -> float:
    """Seconds the fastest schedule a server with these limits admits needs to accept
    ``requests`` requests of ``tokens`` tokens in all: its burst at once, the rest at the
    binding limit's rate (latency not included)."""
    floor = 0.0
    for used, limit in ((requests, rpm), (tokens, tpm)):
        if limit is not None:
            rate = limit / 60.0
            floor = max(floor, max(0.0, used - max(1.0, rate * burst_seconds)) / rate)
    return floor


GraderRunner = Callable[[str, list[GradeRequest]], Coroutine[Any, Any, tuple[int, int]]]


async def measure_grader(
    scenario: Scenario, runner: GraderRunner, requests: list[GradeRequest], args: argparse.Namespace
) -> GraderOutcome:
    config = FakeConfig(
        latency=args.latency,
        requests_per_minute=scenario.rpm,
        tokens_per_minute=scenario.tpm,
        burst_seconds=args.server_burst,
    )
    async with FakeOpenAI(config) as fake:
        started = time.monotonic()
        retries, gave_up = await runner(fake.base_url, requests)
        wall = time.monotonic() - started
        sent = [r for r in fake.requests if r.path == CHAT]
    if retries < 0:
        retries = len(sent) - len(requests)
    # The steady window: from the end of the warm-up to the last accepted arrival.
    accepted = [r for r in sent if r.status == 200]
    start = min(r.at for r in sent) + args.warmup
    end = max((r.at for r in accepted), default=start)
    window = [r for r in accepted if start <= r.at < end]
    span = end - start
    steady = span >= MIN_WINDOW
    per_minute = {
        "requests": len(window) / span * 60.0 if steady else math.nan,
        "tokens": sum(r.tokens for r in window) / span * 60.0 if steady else math.nan,
    }
    limits = {"requests": float(scenario.rpm)}
    if scenario.tpm is not None:
        limits["tokens"] = float(scenario.tpm)
    ideal = limit_floor(
        len(requests), sum(map(charge, requests)), scenario.rpm, scenario.tpm, args.server_burst
    )
    return GraderOutcome(
        wall_s=wall,
        ideal_s=ideal + args.latency,
        requests_per_minute=per_minute["requests"],
        tokens_per_minute=per_minute["tokens"],
        share_of_limit=max(100.0 * per_minute[kind] / limit for kind, limit in limits.items()),
        requests=len(sent),
        rate_limited=sum(1 for r in sent if r.status == 429),
        retries=retries,
        gave_up=gave_up,
    )


# --- 2. end to end -------------------------------------------------------------------


@dataclasses.dataclass
class RunOutcome:
    wall_s: float
    floor_s: float
    examples_per_s: float
    moderation_requests: int
    grader_requests: int
    rate_limited: int
    retries: int
    graded: int
    clean: int
    flagged: int
    quarantine: int
    cost_usd: float


def write_dataset(path: Path, count: int, share: float, seed: int) -> int:
    """``count`` chat lines, ``round(count * share)`` of them escalated; returns that."""
    rng = random.Random(seed)
    escalated = set(rng.sample(range(count), round(count * share)))

    def lines() -> Iterator[bytes]:
        for i in range(count):
            if i in escalated:
                category = ESCALATING[i % len(ESCALATING)]
                user = f"{rng.choice(QUESTIONS)} {marker(category)} (#{i})"
                answer = COMPLY if rng.random() < 0.25 else REFUSAL
                yield line(chat(user, answer))
            else:
                yield clean_chat(rng, i)

    write_lines(path, lines())
    return len(escalated)


async def measure_run(data: Path, out: Path, args: argparse.Namespace) -> RunOutcome:
    config = FakeConfig(
        latency=args.e2e_latency,
        requests_per_minute=args.e2e_rpm,
        tokens_per_minute=args.e2e_tpm,
        burst_seconds=args.server_burst,
    )
    async with FakeOpenAI(config) as fake:
        client = sdk_client(fake.base_url, max_retries=0)
        try:
            summary = await screen(
                data,
                out=out,
                policy=DEFAULT,
                moderator=OpenAIModerator(DEFAULT.moderation, client),
                grader=OpenAIGrader(DEFAULT.grader, client),
            )
        finally:
            await client.close()
        recorded: list[RecordedRequest] = list(fake.requests)
    providers = summary.providers
    moderation_requests = sum(1 for r in recorded if r.path == MODERATIONS)
    grader_requests = sum(1 for r in recorded if r.path == CHAT)
    floor = 0.0
    for path, concurrency in (
        (MODERATIONS, DEFAULT.moderation.concurrency),
        (CHAT, DEFAULT.grader.concurrency),
    ):
        accepted = [r for r in recorded if r.path == path and r.status == 200]
        if not accepted:
            continue
        by_limit = limit_floor(
            len(accepted),
            sum(r.tokens for r in accepted),
            args.e2e_rpm,
            args.e2e_tpm,
            args.server_burst,
        )
        by_concurrency = math.ceil(len(accepted) / concurrency) * args.e2e_latency
        floor = max(floor, by_concurrency, by_limit + args.e2e_latency)
    return RunOutcome(
        wall_s=float(summary.run["duration_s"]),
        floor_s=floor,
        examples_per_s=float(summary.run["examples_per_s"] or 0.0),
        moderation_requests=moderation_requests,
        grader_requests=grader_requests,
        rate_limited=sum(1 for r in recorded if r.status == 429),
        retries=sum(int(p.get("retries", 0)) for p in providers.values()),
        graded=summary.graded,
        clean=summary.counts.clean,
        flagged=summary.counts.flagged,
        quarantine=summary.counts.quarantine,
        cost_usd=summary.cost_usd if summary.cost_usd is not None else math.nan,
    )


# --- report --------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    """The median of the values that are numbers; NaN when none is."""
    numbers = [v for v in values if not math.isnan(v)]
    return float(statistics.median(numbers)) if numbers else math.nan


def _medians(outcomes: Sequence[Any]) -> dict[str, float]:
    fields = [f.name for f in dataclasses.fields(outcomes[0])]
    return {name: _median([getattr(o, name) for o in outcomes]) for name in fields}


def _number(value: float, spec: str = ",.0f", suffix: str = "") -> str:
    return "–" if math.isnan(value) else f"{value:{spec}}{suffix}"


def _count(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * (len(columns) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


GRADER_COLUMNS = (
    "limit",
    "client",
    "wall s",
    "ideal s",
    "req/min",
    "tokens/min",
    "% of limit",
    "requests",
    "429s",
    "retries",
    "gave up",
)
RUN_COLUMNS = (
    "escalated",
    "wall s",
    "floor s",
    "examples/s",
    "moderation req",
    "grader req",
    "429s",
    "retries",
    "graded",
    "clean / flagged / quarantine",
    "cost_usd",
)


def report_grader(
    results: dict[tuple[str, str], list[GraderOutcome]],
    scenarios: Sequence[Scenario],
    args: argparse.Namespace,
) -> None:
    print(
        f"\nGrader alone: {args.requests} escalated examples graded at once; fake server"
        f" {args.latency * 1000:.0f} ms latency, limits enforced over {args.server_burst:g} s"
        f" windows; medians of {args.repeat}.\n"
    )
    limits = {
        s.name: f"{s.rpm:,} RPM" + ("" if s.tpm is None else f" + {s.tpm:,} TPM") for s in scenarios
    }
    rows = []
    for (scenario, client), outcomes in results.items():
        m = _medians(outcomes)
        rows.append(
            (
                limits[scenario],
                client,
                f"{m['wall_s']:.2f}",
                f"{m['ideal_s']:.2f}",
                _number(m["requests_per_minute"]),
                _number(m["tokens_per_minute"]),
                _number(m["share_of_limit"], ".0f", "%"),
                _count(m["requests"]),
                _count(m["rate_limited"]),
                _count(m["retries"]),
                _count(m["gave_up"]),
            )
        )
    _table(GRADER_COLUMNS, rows)


def report_runs(
    results: dict[float, list[RunOutcome]], escalated: dict[float, int], args: argparse.Namespace
) -> None:
    limits = []
    if args.e2e_rpm is not None:
        limits.append(f"{args.e2e_rpm:,} RPM")
    if args.e2e_tpm is not None:
        limits.append(f"{args.e2e_tpm:,} TPM")
    print(
        f"\nEnd to end: screen() with the default policy over {args.examples:,} chat examples;"
        f" fake server {args.e2e_latency * 1000:.0f} ms latency on both endpoints,"
        f" {' + '.join(limits) or 'no rate limit'}; medians of {args.repeat}.\n"
    )
    rows = []
    for share, outcomes in results.items():
        m = _medians(outcomes)
        rows.append(
            (
                f"{share:.0%} ({escalated[share]:,})",
                f"{m['wall_s']:.2f}",
                f"{m['floor_s']:.2f}",
                f"{m['examples_per_s']:,.0f}",
                _count(m["moderation_requests"]),
                _count(m["grader_requests"]),
                _count(m["rate_limited"]),
                _count(m["retries"]),
                _count(m["graded"]),
                f"{_count(m['clean'])} / {_count(m['flagged'])} / {_count(m['quarantine'])}",
                f"{m['cost_usd']:.4f}",
            )
        )
    _table(RUN_COLUMNS, rows)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--only", choices=["grader", "e2e"], action="append")
    parser.add_argument("--server-burst", type=float, default=1.0, help="server window (s)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured")
    grader = parser.add_argument_group("grader alone")
    grader.add_argument("--requests", type=int, default=40, help="examples to grade")
    grader.add_argument("--latency", type=float, default=0.2, help="server latency (s)")
    grader.add_argument("--rpm", type=int, default=600, help="server requests per minute")
    grader.add_argument("--tpm", type=int, default=1_200_000, help="tokens per minute (tpm)")
    e2e = parser.add_argument_group("end to end")
    e2e.add_argument("--examples", type=int, default=5_000, help="dataset lines")
    e2e.add_argument("--escalated", type=float, default=0.10, help="share escalated")
    e2e.add_argument("--e2e-latency", type=float, default=0.15, help="server latency (s)")
    e2e.add_argument("--e2e-rpm", type=int, default=None, help="server RPM (default: none)")
    e2e.add_argument("--e2e-tpm", type=int, default=None, help="server TPM (default: none)")
    e2e.add_argument("--baseline", action="store_true", help="add a 0%% escalated run")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    scenarios = [Scenario("rpm", args.rpm, None), Scenario("tpm", args.rpm, args.tpm)]
    clients: list[tuple[str, GraderRunner]] = [
        ("(a) OpenAIGrader", run_grader),
        ("(b) gather + semaphore(8), SDK retries", run_gather),
    ]
    requests = grade_requests(args.requests, seed=1)
    grader_results: dict[tuple[str, str], list[GraderOutcome]] = {
        (s.name, name): [] for s in scenarios for name, _ in clients
    }
    shares = [args.escalated] + ([0.0] if args.baseline and args.escalated > 0 else [])
    run_results: dict[float, list[RunOutcome]] = {share: [] for share in shares}
    escalated: dict[float, int] = {}

    with tempfile.TemporaryDirectory(prefix="bench-grader-") as tmp:
        datasets: dict[float, Path] = {}
        if not args.only or "e2e" in args.only:
            for share in shares:
                datasets[share] = Path(tmp) / f"data-{share:g}.jsonl"
                escalated[share] = write_dataset(datasets[share], args.examples, share, seed=2)
        for n in range(args.repeat):
            if not args.only or "grader" in args.only:
                for scenario in scenarios:
                    for name, runner in clients:
                        print(f"[{n + 1}/{args.repeat}] {scenario.name}: {name} ...", flush=True)
                        outcome = await measure_grader(scenario, runner, requests, args)
                        grader_results[(scenario.name, name)].append(outcome)
            for share, data in datasets.items():
                print(f"[{n + 1}/{args.repeat}] screen(), {share:.0%} escalated ...", flush=True)
                out = Path(tmp) / f"out-{share:g}-{n}"
                run_results[share].append(await measure_run(data, out, args))

    print("\nMarkdown:")
    if not args.only or "grader" in args.only:
        report_grader(grader_results, scenarios, args)
    if datasets:
        report_runs(run_results, escalated, args)
    command = "PYTHONPATH=. python benchmarks/bench_grader.py" + (
        " " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else ""
    )
    print(f"\nCommand: `{command}`")


if __name__ == "__main__":
    asyncio.run(main())
