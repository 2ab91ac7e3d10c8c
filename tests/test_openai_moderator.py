"""OpenAIModerator end to end: the real SDK over real HTTP against the fake server."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fake_openai import CATEGORIES, FakeOpenAI, Route, marker, unsafe_categories
from hypothesis import given
from hypothesis import strategies as st
from openai import AsyncOpenAI

from moderation.errors import ConfigError, ProviderFatalError
from moderation.models import Segment, SegmentError, SegmentModeration
from moderation.policy import ModerationSpec, load_policy
from moderation.providers import Moderator
from moderation.providers.openai import OpenAIModerator, RetryPolicy, build_client, chunk_text

FAST = RetryPolicy(max_attempts=4, base_delay=0.005, max_delay=0.02)
SNAPSHOT = "omni-moderation-2024-09-26"


def moderator(client: AsyncOpenAI, **spec: Any) -> OpenAIModerator:
    options = {"timeout": spec.pop("timeout", 5.0), "retry_policy": spec.pop("policy", FAST)}
    return OpenAIModerator(ModerationSpec(provider="openai", **spec), client, **options)


def text(i: int, body: str = "") -> Segment:
    return Segment(path=f"messages[{i}].content", role="user", text=body or f"message number {i}")


def input_sizes(fake: FakeOpenAI) -> list[int]:
    return [len(r.body["input"]) for r in fake.requests if r.status == 200]


async def test_implements_the_protocol(client: AsyncOpenAI) -> None:
    mod = moderator(client)
    assert isinstance(mod, Moderator)
    assert (mod.name, mod.model) == ("openai", "omni-moderation-latest")
    assert await mod.moderate([]) == []


async def test_packs_by_count(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    mod = moderator(client, max_inputs_per_request=32)
    results = await mod.moderate([text(i) for i in range(100)])
    assert all(isinstance(r, SegmentModeration) for r in results)
    assert sorted(input_sizes(fake)) == [4, 32, 32, 32]
    assert mod.stats.requests == 4


async def test_packs_by_token_budget(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    mod = moderator(client, max_inputs_per_request=100, max_tokens_per_request=1000)
    # 300 ASCII bytes = 100 estimated tokens each: ten fit in a 1,000-token request.
    await mod.moderate([text(i, "x" * 299 + str(i % 10)) for i in range(45)])
    assert sorted(input_sizes(fake)) == [5, 10, 10, 10, 10]
    assert mod.stats.input_tokens == 4500


async def test_results_map_back_by_index(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    kinds = [None, "violence", None, "sexual/minors", "self-harm/intent", None, "hate/threatening"]
    segments = [text(i, f"line {i} {marker(k) if k else 'fine'}") for i, k in enumerate(kinds)] * 5
    mod = moderator(client, max_inputs_per_request=4)
    results = await mod.moderate(segments)
    assert len(results) == len(segments)
    for segment, result in zip(segments, results, strict=True):
        assert isinstance(result, SegmentModeration)
        expected = tuple(sorted(c for c, s in unsafe_categories(segment.text).items() if s > 0.5))
        assert result.flagged == expected
        assert set(result.scores) == set(CATEGORIES)
        assert (result.provider, result.model) == ("openai", SNAPSHOT)
        for category in expected:
            assert result.scores[category] > 0.9


async def test_borderline_scores_are_reported_but_not_flagged(client: AsyncOpenAI) -> None:
    (result,) = await moderator(client).moderate([text(0, "BORDERLINE_HARASSMENT here")])
    assert isinstance(result, SegmentModeration)
    assert result.flagged == ()
    assert result.scores["harassment"] == pytest.approx(0.45)


async def test_wrong_count_is_retried(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script("wrong_count")
    mod = moderator(client)
    results = await mod.moderate([text(i, f"t{i} UNSAFE_HATE" if i == 2 else "") for i in range(5)])
    assert [r.flagged for r in results if isinstance(r, SegmentModeration)] == [
        (),
        (),
        ("hate",),
        (),
        (),
    ]
    assert (mod.stats.requests, mod.stats.retries) == (2, 1)


async def test_persistent_wrong_count_is_an_error_never_a_guess(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.config.fault_rate = 1.0
    fake.config.faults = ("wrong_count",)
    results = await moderator(client).moderate([text(i) for i in range(3)])
    assert all(isinstance(r, SegmentError) and r.code == "bad_response" for r in results)
    assert fake.count() == FAST.max_attempts


async def test_an_answer_without_scores_fails_closed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A compatible server that answers with empty (or all-null) scores has judged
    nothing: retried, then an error, never a clean pass."""
    real = fake.routes["/v1/moderations"]

    def unscored(body: Any) -> dict[str, Any]:
        payload = real.handler(body)
        for i, result in enumerate(payload["results"]):
            scores = result["category_scores"]
            result["category_scores"] = {} if i % 2 else dict.fromkeys(scores)
            result["categories"] = {}
        return payload

    fake.add_route("/v1/moderations", Route(unscored, real.tokens))
    results = await moderator(client).moderate([text(i) for i in range(4)])
    assert all(isinstance(r, SegmentError) and r.code == "bad_response" for r in results)
    assert fake.count() == FAST.max_attempts


async def test_400_is_bisected_to_the_bad_segment(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    segments = [text(i, "TRIGGER_400 in here" if i == 5 else "") for i in range(16)]
    mod = moderator(client)
    results = await mod.moderate(segments)
    bad = results[5]
    assert isinstance(bad, SegmentError)
    assert bad.code == "bad_request"
    assert "Invalid input" in bad.message
    assert all(isinstance(r, SegmentModeration) for i, r in enumerate(results) if i != 5)
    # 16 -> 8 + 8 -> 4 + 4 -> 2 + 2 -> 1 + 1: nine requests; the five that held
    # segment 5 were 400s.
    assert fake.count() == 9
    assert fake.count(status=400) == 5


@pytest.mark.parametrize("fault", ["500", "503", "drop", "truncated", "429"])
async def test_faults_are_retried_until_they_stop(
    fake: FakeOpenAI, client: AsyncOpenAI, fault: str
) -> None:
    fake.script(fault, fault, "ok")
    results = await moderator(client).moderate([text(i) for i in range(10)])
    assert all(isinstance(r, SegmentModeration) for r in results)
    assert fake.count() == 3


@pytest.mark.parametrize(
    ("fault", "code"),
    [("500", "server_error"), ("503", "server_error"), ("drop", "connection_error")],
)
async def test_persistent_faults_give_errors_after_bounded_attempts(
    fake: FakeOpenAI, client: AsyncOpenAI, fault: str, code: str
) -> None:
    fake.config.fault_rate = 1.0
    fake.config.faults = (fault,)
    mod = moderator(client, max_inputs_per_request=5)
    results = await mod.moderate([text(i) for i in range(10)])
    assert [r.code for r in results if isinstance(r, SegmentError)] == [code] * 10
    assert fake.count() == 2 * FAST.max_attempts


async def test_timeouts_are_retried_then_reported(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script("timeout", "timeout")
    policy = RetryPolicy(max_attempts=2, base_delay=0.0)
    (result,) = await moderator(client, timeout=0.2, policy=policy).moderate([text(0)])
    assert isinstance(result, SegmentError)
    assert result.code == "timeout"


async def test_sdk_retries_are_off_even_on_an_injected_client(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.script("500")
    policy = RetryPolicy(max_attempts=1)
    (result,) = await moderator(client, policy=policy).moderate([text(0)])
    assert isinstance(result, SegmentError)
    assert fake.count() == 1


async def test_401_stops_the_run_at_once(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.config.api_key = "sk-another-key"
    mod = moderator(client)
    with pytest.raises(ProviderFatalError, match="401"):
        await mod.moderate([text(i) for i in range(20)])
    assert fake.count() == 1
    with pytest.raises(ProviderFatalError):
        await mod.moderate([text(0)])
    assert fake.count() == 1


async def test_401_among_concurrent_requests_cancels_the_rest(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.config.latency = 0.05
    fake.script("401")
    mod = moderator(client, max_inputs_per_request=1, concurrency=4)
    with pytest.raises(ProviderFatalError):
        await mod.moderate([text(i) for i in range(200)])
    assert fake.count() <= 8


async def test_429_retry_after_is_respected_with_virtual_time(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)

    fake.config.fault_retry_after_ms = 1500
    fake.script("429")
    mod = OpenAIModerator(
        ModerationSpec(provider="openai", tokens_per_minute=60_000),
        client,
        retry_policy=FAST,
        sleep=sleep,
        clock=lambda: now[0],
    )
    started = time.monotonic()
    results = await mod.moderate([text(i) for i in range(3)])
    assert all(isinstance(r, SegmentModeration) for r in results)
    assert time.monotonic() - started < 1.0  # virtual time: nothing really waited 1.5 s
    assert max(slept) >= 1.5
    # The first 429 halves the burst, not the rate.
    assert (mod.stats.rate_limited, mod.limiter.factor, mod.limiter.burst_seconds) == (1, 1.0, 1.0)


async def test_long_texts_are_chunked_and_the_highest_score_counts(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    filler = "lorem ipsum dolor sit amet " * 200  # 5,400 characters
    long_text = "BORDERLINE_HATE " + filler + " UNSAFE_VIOLENCE " + filler
    mod = moderator(client)
    (result,) = await mod.moderate([text(0, long_text)])
    assert isinstance(result, SegmentModeration)
    assert result.flagged == ("violence",)
    assert result.scores["violence"] == pytest.approx(0.97)
    assert result.scores["hate"] == pytest.approx(0.45)
    (request,) = fake.requests
    chunks = request.body["input"]
    assert len(chunks) >= 6
    assert all(len(c) <= 2000 for c in chunks)
    assert sum("UNSAFE_VIOLENCE" in c for c in chunks) >= 1


async def test_a_failed_chunk_fails_the_whole_segment(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    long_text = "word " * 1000 + "TRIGGER_400"
    results = await moderator(client).moderate([text(0, long_text), text(1)])
    assert isinstance(results[0], SegmentError)
    assert isinstance(results[1], SegmentModeration)


@given(
    st.text(alphabet="ab \n", max_size=400),
    st.integers(min_value=2, max_value=60),
    st.data(),
)
def test_chunks_cover_the_text_with_overlap(body: str, size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(min_value=0, max_value=size - 1))
    chunks = chunk_text(body, size, overlap)
    assert all(len(c) <= size for c in chunks)
    # Each chunk starts exactly `overlap` characters before the previous one ended.
    assert chunks[0] + "".join(c[overlap:] for c in chunks[1:]) == body
    # Any stretch up to `overlap` characters long is whole in some chunk.
    for start in range(0, max(1, len(body) - overlap)):
        piece = body[start : start + max(1, overlap)]
        assert any(piece in c for c in chunks)


async def test_images_go_one_per_request(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    segments = [
        Segment(path="m[0].content[1]", role="user", kind="image", image_url="https://x/a.png"),
        text(1),
        Segment(
            path="m[2].content[1]",
            role="user",
            kind="image",
            image_url="https://x/UNSAFE_VIOLENCE_GRAPHIC.png",
        ),
        text(3, "UNSAFE_HARASSMENT"),
        Segment(path="m[4].content[1]", role="user", kind="image", image_url=None),
    ]
    results = await moderator(client).moderate(segments)
    assert isinstance(results[0], SegmentModeration)
    assert results[0].flagged == ()
    assert isinstance(results[2], SegmentModeration)
    assert results[2].flagged == ("violence/graphic",)
    assert isinstance(results[3], SegmentModeration)
    assert results[3].flagged == ("harassment",)
    assert isinstance(results[4], SegmentError)
    image_requests = [
        r.body["input"] for r in fake.requests if isinstance(r.body["input"][0], dict)
    ]
    assert image_requests == [
        [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
        [{"type": "image_url", "image_url": {"url": "https://x/UNSAFE_VIOLENCE_GRAPHIC.png"}}],
    ]
    assert fake.count() == 3


async def test_concurrency_is_bounded_across_calls(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.config.latency = 0.02
    mod = moderator(client, max_inputs_per_request=2, concurrency=3)
    batches = [[text(i) for i in range(b * 10, b * 10 + 10)] for b in range(6)]
    results = await asyncio.gather(*(mod.moderate(batch) for batch in batches))
    assert all(isinstance(r, SegmentModeration) for batch in results for r in batch)
    assert fake.count() == 30
    assert fake.max_in_flight <= 3


async def test_paces_under_the_limit_learned_from_headers(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.config.tokens_per_minute = 600_000  # 10,000 a second
    fake.config.burst_seconds = 3.0
    mod = moderator(client, max_inputs_per_request=4, concurrency=8)
    started = time.monotonic()
    # 15 requests of 2,000 estimated tokens: 30,000 tokens; the 2 s burst covers 20,000.
    results = await mod.moderate([text(i, "y" * 1499 + "z") for i in range(60)])
    elapsed = time.monotonic() - started
    assert all(isinstance(r, SegmentModeration) for r in results)
    assert mod.limiter.tokens_per_minute == 600_000
    assert fake.count(status=429) == 0
    assert elapsed >= 0.8


async def test_from_spec_reads_the_environment(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ModerationSpec(provider="openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIModerator.from_spec(spec)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    mod = OpenAIModerator.from_spec(spec, retry_policy=FAST)
    try:
        (result,) = await mod.moderate([text(0, "UNSAFE_ILLICIT")])
    finally:
        await mod.aclose()
    assert isinstance(result, SegmentModeration)
    assert result.flagged == ("illicit",)
    assert fake.requests[0].headers["authorization"] == "<redacted>"


async def test_two_thousand_segments_with_ten_percent_faults(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.config.fault_rate = 0.10
    fake.config.faults = ("500", "503", "429", "drop", "truncated", "wrong_count", "timeout")
    fake.config.seed = 9  # ten faults, all seven kinds, among the first ~70 requests
    fake.config.timeout_sleep = 0.6
    rng = random.Random(5)
    unsafe_pool = [marker(c) for c in CATEGORIES]
    segments = [
        text(i, f"example {i} " + (rng.choice(unsafe_pool) if rng.random() < 0.1 else "fine"))
        for i in range(2000)
    ]
    mod = moderator(client, timeout=0.3, concurrency=8)
    started = time.monotonic()
    results = await asyncio.gather(
        *(mod.moderate(segments[b : b + 250]) for b in range(0, 2000, 250))
    )
    flat = [r for batch in results for r in batch]
    assert time.monotonic() - started < 15
    assert len(flat) == 2000
    faults = {r.fault for r in fake.requests if r.fault}
    assert len(faults) >= 5, faults
    errors = 0
    for segment, result in zip(segments, flat, strict=True):
        expected = {c for c, s in unsafe_categories(segment.text).items() if s > 0.5}
        if isinstance(result, SegmentError):
            errors += 1
            continue
        assert set(result.flagged) == expected
    assert errors <= 64  # at most a few requests out of ~70 exhaust four attempts
    assert mod.stats.requests == fake.count()
    assert len(segments) / mod.stats.requests > 20


def test_default_pack_uses_openai_and_its_grader() -> None:
    policy = load_policy("default")
    spec = policy.moderation
    assert (spec.provider, spec.model, policy.requires_network) == (
        "openai",
        "omni-moderation-latest",
        True,
    )
    assert spec.is_zero_tolerance("sexual/minors")
    assert all(spec.threshold_for(c) is not None for c in CATEGORIES)
    assert set(spec.flag_roles) == {"system", "developer", "assistant", "text"}
    assert set(spec.escalate_roles) == {"user", "tool", "function", "rejected"}
    grader = policy.grader
    assert (grader.provider, grader.model, grader.sees) == ("openai", "gpt-4o-mini", "escalations")
    assert {r.id for r in grader.rules} >= {
        "violent-wrongdoing",
        "sexual-minors",
        "self-harm",
        "hate-harassment",
        "malware-intrusion",
        "personal-data",
    }
    assert all(r.not_allowed and r.allowed and r.examples for r in grader.rules)


async def test_five_thousand_examples_through_the_pipeline(
    fake: FakeOpenAI, client: AsyncOpenAI, tmp_path: Path
) -> None:
    """Issue 3's end-to-end check: 10% faulty answers, conservation, nothing unsafe clean."""
    from moderation.api import screen  # the pipeline; imported here to keep the rest unit-level

    rng = random.Random(3)
    unsafe_lines: set[int] = set()
    lines = []
    for line in range(1, 5001):
        user, assistant = f"question {line}", f"answer {line}"
        if rng.random() < 0.1:
            unsafe_lines.add(line)
            if rng.random() < 0.5:
                user += " " + marker(rng.choice(CATEGORIES))
            else:
                assistant += " " + marker(rng.choice(CATEGORIES))
        if line == 777:
            user += " TRIGGER_400"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        lines.append(json.dumps({"messages": messages}))
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    fake.config.fault_rate = 0.10
    fake.config.faults = ("429", "500", "503", "drop", "truncated")
    policy = load_policy("default")
    mod = OpenAIModerator(
        policy.moderation, client, retry_policy=RetryPolicy(max_attempts=3, base_delay=0.01)
    )
    summary = (await screen(data, out=tmp_path / "out", policy=policy, moderator=mod)).model_dump()

    counts = summary["counts"]
    assert counts["input"] == 5000
    assert counts["clean"] + counts["flagged"] + counts["quarantine"] == 5000
    out = tmp_path / "out"
    clean = (out / "clean.jsonl").read_text().splitlines()
    assert not any("UNSAFE_" in row for row in clean)
    decided = {}
    for name in ("flagged", "quarantine"):
        for row in (out / f"{name}.jsonl").read_text().splitlines():
            record = json.loads(row)
            decided[record["line"]] = record
    assert unsafe_lines <= set(decided)
    bad = decided[777]
    assert bad["decision"] == "quarantine"
    assert {"stage": "error", "code": "bad_request"} in [
        {"stage": r["stage"], "code": r["code"]} for r in bad["reasons"]
    ]
    for record in decided.values():
        if any(r["stage"] == "error" for r in record["reasons"]):
            assert record["decision"] == "quarantine"
    assert fake.count() < 5000 / 10  # packing: over ten examples a request


async def test_build_client_checks_the_key_and_switches_sdk_retries_off() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_client(environ={"OPENAI_API_KEY": "   "})
    sdk = build_client(
        timeout=7.0,
        environ={"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    try:
        assert str(sdk.base_url) == "http://127.0.0.1:9/v1/"
        assert (sdk.max_retries, sdk.timeout) == (0, 7.0)
    finally:
        await sdk.close()
