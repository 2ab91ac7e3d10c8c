"""The pipeline with stub providers: routing rules, order, determinism, conservation."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import orjson
import pytest
from datagen import chat, line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stubs import KeywordModerator, ScriptedGrader

from moderation import screen, stream
from moderation.errors import ConfigError, ProviderFatalError
from moderation.policy import Policy

STUB_POLICY = {
    "id": "stub",
    "version": "1",
    "moderation": {
        "provider": "local",
        "thresholds": {"stub/*": 0.5},
        "zero_tolerance": [],
    },
}


def policy(**grader: object) -> Policy:
    data = dict(STUB_POLICY)
    if grader:
        data["grader"] = {"provider": "none", **grader}
    return Policy.model_validate(data)


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(item + b"\n" for item in lines))
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        name: (out / name).read_bytes()
        for name in ("clean.jsonl", "flagged.jsonl", "quarantine.jsonl")
    }


def _records(out: Path, name: str) -> list[dict]:
    return [orjson.loads(x) for x in (out / name).read_bytes().splitlines()]


async def test_routing_table_of_design(tmp_path: Path) -> None:
    lines = [
        line(chat("hello", "hi")),  # 1 clean
        line(chat("hello", "BAD answer")),  # 2 assistant over threshold: flagged
        line(chat("BAD request", "I won't help with that. ALLOW")),  # 3 escalated, allow
        line(chat("BAD request", "Sure, here it is. VIOLATE")),  # 4 escalated, violation
        line(chat("BAD request", "Hmm. UNSURE")),  # 5 escalated, uncertain
        line(chat("BAD request", "Hmm. LOWCONF")),  # 6 escalated, low confidence
        line(chat("BAD request", "BROKEN")),  # 7 escalated, grader gave no verdict
        line(chat("hello", "FAIL")),  # 8 moderation error
        b'{"messages": 5}',  # 9 invalid format
        b"not json",  # 10 unparseable
    ]
    source = _write(tmp_path / "d.jsonl", lines)
    grader = ScriptedGrader()
    summary = await screen(
        source,
        out=tmp_path / "out",
        policy=policy(provider="none"),
        moderator=KeywordModerator(),
        grader=grader,
    )
    assert summary.counts.model_dump() == {"input": 10, "clean": 2, "flagged": 2, "quarantine": 6}
    clean = (tmp_path / "out" / "clean.jsonl").read_bytes().splitlines()
    assert clean == [lines[0], lines[2]]
    flagged = {r["line"]: r for r in _records(tmp_path / "out", "flagged.jsonl")}
    assert set(flagged) == {2, 4}
    assert [r["code"] for r in flagged[2]["reasons"]] == ["flagged"]
    assert flagged[2]["reasons"][0]["detail"]["path"] == "messages[2].content"
    assert flagged[4]["reasons"][-1]["code"] == "violation"
    assert flagged[4]["verdict"]["rule"] == "r1"
    quarantine = {
        r["line"]: [x["code"] for x in r["reasons"]]
        for r in _records(tmp_path / "out", "quarantine.jsonl")
    }
    assert quarantine[5][-1] == "uncertain"
    assert quarantine[6][-1] == "low_confidence"
    assert quarantine[7][-1] == "invalid_answer"
    assert quarantine[8] == ["timeout"]
    assert quarantine[10] == ["invalid_json"]
    assert 9 in quarantine
    # Only escalated examples reached the grader.
    assert grader.stats.requests == 5
    assert summary.graded == 5


async def test_escalation_without_grader_is_quarantined(tmp_path: Path) -> None:
    source = _write(tmp_path / "d.jsonl", [line(chat("BAD request", "No."))])
    summary = await screen(
        source, out=tmp_path / "out", policy=policy(), moderator=KeywordModerator()
    )
    assert summary.counts.quarantine == 1
    assert summary.graded == 0  # no grader was asked
    (record,) = _records(tmp_path / "out", "quarantine.jsonl")
    assert [r["code"] for r in record["reasons"]] == ["escalated", "not_configured"]


async def test_zero_tolerance_flags_in_any_role(tmp_path: Path) -> None:
    data = dict(STUB_POLICY)
    data["moderation"] = {**STUB_POLICY["moderation"], "zero_tolerance": ["stub/bad"]}
    grader = ScriptedGrader()
    source = _write(tmp_path / "d.jsonl", [line(chat("BAD", "ALLOW"))])
    summary = await screen(
        source,
        out=tmp_path / "out",
        policy=Policy.model_validate(data),
        moderator=KeywordModerator(),
        grader=grader,
    )
    assert summary.counts.flagged == 1 and grader.stats.requests == 0


async def test_invalid_examples_cost_no_provider_call(tmp_path: Path) -> None:
    moderator = KeywordModerator()
    source = _write(tmp_path / "d.jsonl", [b"[1]", b'{"messages": []}', b"{"])
    summary = await screen(source, out=tmp_path / "out", policy=policy(), moderator=moderator)
    assert summary.counts.quarantine == 3
    assert moderator.calls == []


async def test_output_is_in_input_order_and_identical_at_any_concurrency(tmp_path: Path) -> None:
    rng = random.Random(7)
    lines = [
        line(chat(f"q{i}", ("BAD " if rng.random() < 0.2 else "") + f"a{i}")) for i in range(600)
    ]
    source = _write(tmp_path / "d.jsonl", lines)
    results = []
    for concurrency, batch in ((1, 1), (64, 7), (16, 64)):
        out = tmp_path / f"out-{concurrency}"
        await screen(
            source,
            out=out,
            policy=policy(),
            moderator=KeywordModerator(jitter=0.003, seed=concurrency),
            concurrency=concurrency,
            batch_size=batch,
        )
        results.append(_outputs(out))
    assert results[0] == results[1] == results[2]
    clean_lines = results[0]["clean.jsonl"].splitlines()
    assert clean_lines == [x for x in lines if b"BAD" not in x]


class _Exploding(KeywordModerator):
    """Fails (or hangs, to be cancelled) on its fourth call, mid-run."""

    def __init__(self, exc: BaseException | None) -> None:
        super().__init__()
        self.exc = exc

    async def moderate(self, segments):  # type: ignore[no-untyped-def]
        if self.stats.requests >= 3:
            if self.exc is None:
                await asyncio.sleep(3600)
            raise self.exc
        return await super().moderate(segments)


@pytest.mark.parametrize("how", ["crash", "cancel"])
async def test_interrupted_run_leaves_nothing_that_looks_finished(tmp_path: Path, how: str) -> None:
    source = _write(tmp_path / "d.jsonl", [line(chat(f"q{i}", "a")) for i in range(500)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # a stale finished run
    moderator = _Exploding(ProviderFatalError("key revoked") if how == "crash" else None)
    run = asyncio.create_task(
        screen(source, out=out, policy=policy(), moderator=moderator, batch_size=10)
    )
    if how == "cancel":
        while moderator.stats.requests < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        run.cancel()
    with pytest.raises(ProviderFatalError if how == "crash" else asyncio.CancelledError):
        await run
    assert sorted(p.name for p in out.iterdir()) == []


async def test_configuration_errors_write_nothing(tmp_path: Path) -> None:
    source = _write(tmp_path / "d.jsonl", [line(chat("a", "b"))])
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await screen(source, out=tmp_path / "out", policy="default")
    assert not (tmp_path / "out").exists()


async def test_refuses_to_write_over_an_input(tmp_path: Path) -> None:
    source = _write(tmp_path / "clean.jsonl", [line(chat("a", "b"))])
    with pytest.raises(ConfigError, match="over an input"):
        await screen(source, out=tmp_path, policy=policy(), moderator=KeywordModerator())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(
        st.sampled_from(["ok", "bad", "fail", "esc", "junk", "blank", "array"]), max_size=60
    ),
    concurrency=st.integers(1, 8),
    batch=st.integers(1, 9),
)
async def test_conservation_and_determinism_over_random_datasets(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[str], concurrency: int, batch: int
) -> None:
    make = {
        "ok": lambda i: line(chat(f"q{i}", f"a{i}")),
        "bad": lambda i: line(chat(f"q{i}", f"BAD {i}")),
        "fail": lambda i: line(chat(f"q{i}", f"FAIL {i}")),
        "esc": lambda i: line(chat(f"BAD {i}", f"ALLOW {i}")),
        "junk": lambda i: b"{" + str(i).encode(),
        "blank": lambda i: b"  ",
        "array": lambda i: b"[%d]" % i,
    }
    lines = [make[k](i) for i, k in enumerate(kinds)]
    root = tmp_path_factory.mktemp("prop")
    source = _write(root / "d.jsonl", lines)
    outs = []
    for c, b in ((concurrency, batch), (1, 1)):
        out = root / f"out-{c}-{b}"
        summary = await screen(
            source,
            out=out,
            policy=policy(provider="none"),
            moderator=KeywordModerator(jitter=0.001),
            grader=ScriptedGrader(),
            concurrency=c,
            batch_size=b,
        )
        outs.append(_outputs(out))
        non_blank = sum(1 for k in kinds if k != "blank")
        counts = summary.counts
        assert counts.input == non_blank == counts.clean + counts.flagged + counts.quarantine
        lines_out = sum(len(v.splitlines()) for v in outs[-1].values())
        assert lines_out == non_blank
    assert outs[0] == outs[1]


@pytest.mark.parametrize(("images", "decision"), [("quarantine", "quarantine"), ("skip", "clean")])
async def test_images_the_policy_cannot_screen(tmp_path: Path, images: str, decision: str) -> None:
    data = dict(STUB_POLICY)
    data["moderation"] = {**STUB_POLICY["moderation"], "images": images}
    record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
            {"role": "assistant", "content": "A cat."},
        ]
    }
    moderator = KeywordModerator()
    source = _write(tmp_path / "d.jsonl", [line(record)])
    summary = await screen(
        source, out=tmp_path / "out", policy=Policy.model_validate(data), moderator=moderator
    )
    assert getattr(summary.counts, decision) == 1
    assert moderator.calls == [2], "only the text segments reach the moderator"
    if decision == "quarantine":
        (result,) = _records(tmp_path / "out", "quarantine.jsonl")
        assert [r["code"] for r in result["reasons"]] == ["image_not_screened"]


async def test_stream_yields_every_result_in_input_order(tmp_path: Path) -> None:
    lines = [line(chat(f"q{i}", "BAD" if i % 3 == 0 else "fine")) for i in range(50)] + [b"{"]
    source = _write(tmp_path / "d.jsonl", lines)
    results = [
        r
        async for r in stream(
            source, policy=policy(), moderator=KeywordModerator(jitter=0.002), batch_size=4
        )
    ]
    assert [r.line for r in results] == list(range(1, 52))
    assert [r.decision for r in results[:6]] == ["flagged", "clean", "clean"] * 2
    assert results[-1].decision == "quarantine" and results[-1].example == "{"
    assert results[1].example == orjson.loads(lines[1])
    assert os.listdir(tmp_path) == ["d.jsonl"], "stream writes no files"


async def test_stream_stops_cleanly_when_the_caller_stops_early() -> None:
    records = [chat(f"q{i}", "a") for i in range(2000)]
    results = stream(
        records=records, policy=policy(), moderator=KeywordModerator(), concurrency=2, batch_size=4
    )
    first = await anext(results)
    assert first.line == 1
    # The producer is blocked on a full queue here; closing must not wait for it.
    await asyncio.wait_for(results.aclose(), timeout=5)
