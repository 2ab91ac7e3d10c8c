"""The result cache: what it answers, what it never keeps, and how it fails."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import orjson
import pytest
from datagen import chat, line
from stubs import KeywordModerator, ScriptedGrader

from moderation import screen, stream
from moderation.cache import ResultCache, open_cache
from moderation.models import Reason, Verdict
from moderation.policy import Policy
from moderation.providers import GradeRequest

OUTPUTS = ("clean.jsonl", "flagged.jsonl", "quarantine.jsonl")


def stub_policy(threshold: float = 0.5) -> Policy:
    return Policy.model_validate(
        {
            "id": "stub",
            "version": "1",
            "moderation": {"provider": "local", "thresholds": {"stub/*": threshold}},
            "grader": {"provider": "none"},
        }
    )


def dataset(path: Path, n: int = 120) -> list[bytes]:
    """Clean, flagged, escalated (allow / violation / no verdict), failing and invalid."""
    lines = []
    for i in range(n):
        kind = i % 8
        if kind == 0:
            lines.append(line(chat(f"q{i}", f"BAD answer {i}")))
        elif kind == 1:
            lines.append(line(chat(f"BAD q{i}", f"ALLOW {i}")))
        elif kind == 2:
            lines.append(line(chat(f"BAD q{i}", f"VIOLATE {i}")))
        elif kind == 3:
            lines.append(line(chat(f"BAD q{i}", f"BROKEN {i}")))
        elif kind == 4:
            lines.append(line(chat(f"q{i}", f"FAIL {i}")))
        elif kind == 5:
            lines.append(b'{"messages": 5}')
        else:
            lines.append(line(chat(f"q{i}", f"a{i}")))
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return lines


async def _screen(
    source: Path, out: Path, cache: Path | ResultCache | None, **kw: object
) -> tuple[dict[str, bytes], KeywordModerator, ScriptedGrader, dict[str, object]]:
    moderator, grader = KeywordModerator(), ScriptedGrader()
    summary = await screen(
        source,
        out=out,
        policy=kw.pop("policy", stub_policy()),
        moderator=kw.pop("moderator", moderator),
        grader=grader,
        cache=cache,
        **kw,  # type: ignore[arg-type]
    )
    files = {name: (out / name).read_bytes() for name in OUTPUTS}
    return files, moderator, grader, summary.model_dump()


async def test_a_second_run_asks_only_what_failed_and_writes_the_same_bytes(
    tmp_path: Path,
) -> None:
    source = tmp_path / "d.jsonl"
    dataset(source)
    cache = tmp_path / "c.sqlite"
    first, mod1, grader1, summary1 = await _screen(source, tmp_path / "a", cache)
    second, mod2, grader2, summary2 = await _screen(source, tmp_path / "b", cache)
    uncached, *_ = await _screen(source, tmp_path / "c", None)
    assert first == second == uncached
    assert sum(mod1.calls) == 105 * 3  # 105 valid chat examples, 3 segments each
    # Only the 15 examples whose moderation failed (a transient error) are asked again.
    assert sum(mod2.calls) == 15 * 3
    # The grader's verdicts and its "no valid verdict" answers are both kept.
    assert (grader1.stats.requests, grader2.stats.requests) == (45, 0)
    assert summary2["cache"]["moderate"] == {"hits": 90, "misses": 15, "stored": 0, "damaged": 0}
    assert summary2["cache"]["grade"] == {"hits": 45, "misses": 0, "stored": 0, "damaged": 0}
    assert summary1["cache"]["moderate"]["stored"] == 90
    with ResultCache(cache) as opened:
        assert (opened.count("moderate"), opened.count("grade"), opened.count()) == (90, 45, 135)
    assert summary2["counts"] == summary1["counts"]
    assert summary2["requests"] == 2  # one call per batch (of 64), for the failed ones


async def test_one_edited_line_is_the_only_one_asked_again(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    lines = [line(chat(f"q{i}", f"a{i}")) for i in range(200)]
    source.write_bytes(b"".join(x + b"\n" for x in lines))
    cache = tmp_path / "c.sqlite"
    await _screen(source, tmp_path / "a", cache)
    lines[137] = line(chat("q137", "an edited BAD answer"))
    source.write_bytes(b"".join(x + b"\n" for x in lines))
    files, moderator, _, summary = await _screen(source, tmp_path / "b", cache)
    assert moderator.calls == [3]
    assert summary["cache"]["moderate"]["hits"] == 199
    assert orjson.loads(files["flagged.jsonl"])["line"] == 138


@pytest.mark.parametrize("change", ["policy", "model", "version"])
async def test_entries_do_not_match_another_policy_model_or_tool_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    source = tmp_path / "d.jsonl"
    source.write_bytes(b"".join(line(chat(f"q{i}", "a")) + b"\n" for i in range(10)))
    cache = tmp_path / "c.sqlite"
    await _screen(source, tmp_path / "a", cache)
    options: dict[str, object] = {}
    moderator = KeywordModerator()
    if change == "policy":
        options["policy"] = stub_policy(threshold=0.6)
    elif change == "model":
        moderator.model = "stub-2"
    else:
        monkeypatch.setattr("moderation.cache.__version__", "99.0")
    options["moderator"] = moderator
    await _screen(source, tmp_path / "b", cache, **options)
    assert sum(moderator.calls) == 30
    await _screen(source, tmp_path / "c", cache, **options)
    assert sum(moderator.calls) == 30, "the new scope's answers are now cached too"


async def test_damaged_entries_are_misses_and_are_overwritten(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    lines = [line(chat(f"q{i}", "BAD" if i == 3 else "a")) for i in range(10)]
    source.write_bytes(b"".join(x + b"\n" for x in lines))
    cache = tmp_path / "c.sqlite"
    reference, *_ = await _screen(source, tmp_path / "a", cache)
    with sqlite3.connect(cache) as db:
        keys = [row[0] for row in db.execute("SELECT hash FROM entries ORDER BY hash LIMIT 4")]
        db.execute("UPDATE entries SET value = ? WHERE hash = ?", (b"\xff not json", keys[0]))
        db.execute("UPDATE entries SET value = ? WHERE hash = ?", (b'[{"scores": 1}]', keys[1]))
        db.execute("UPDATE entries SET value = ? WHERE hash = ?", (b"[]", keys[2]))  # wrong count
        # Another hash with the same 8-byte index key: not this example's answer.
        other = keys[3][:16] + "0" * 48
        db.execute("UPDATE entries SET hash = ? WHERE hash = ?", (other, keys[3]))
    db.close()
    files, moderator, _, summary = await _screen(source, tmp_path / "b", cache)
    assert files == reference
    assert sum(moderator.calls) == 12
    assert summary["cache"]["moderate"] == {"hits": 6, "misses": 4, "stored": 4, "damaged": 3}
    _, moderator, _, _ = await _screen(source, tmp_path / "c", cache)
    assert moderator.calls == []


@pytest.mark.parametrize("content", [b"this is not a database\n" * 50, "foreign-sqlite"])
async def test_a_file_that_is_not_a_cache_is_left_alone_and_the_run_goes_on(
    tmp_path: Path, content: bytes | str
) -> None:
    cache = tmp_path / "c.sqlite"
    if isinstance(content, bytes):
        cache.write_bytes(content)
    else:
        with sqlite3.connect(cache) as db:
            db.execute("CREATE TABLE precious (x)")
        db.close()
    before = cache.read_bytes()
    source = tmp_path / "d.jsonl"
    source.write_bytes(line(chat("q", "a")) + b"\n")
    files, moderator, _, summary = await _screen(source, tmp_path / "a", cache)
    assert files["clean.jsonl"] == line(chat("q", "a")) + b"\n"
    assert moderator.calls == [3]
    assert "cannot use as a cache" in summary["cache"]["error"]
    assert cache.read_bytes() == before


def test_a_cache_from_a_newer_schema_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ResultCache(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    cache, why = open_cache(path)
    assert cache is None and why is not None and "newer" in why


async def test_the_cache_holds_no_text_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-the-cache-0123456789")
    secret_words = ["Zanzibar-quokka", "marmalade-hexagon", "sk-never-in-the-cache"]
    source = tmp_path / "d.jsonl"
    source.write_bytes(
        line(chat("BAD Zanzibar-quokka", "ALLOW marmalade-hexagon"))
        + b"\n"
        + line(chat("q", "BAD sk-never-in-the-cache"))
        + b"\n"
    )
    cache = tmp_path / "cache" / "c.sqlite"
    await _screen(source, tmp_path / "a", cache)
    stored = b"".join(p.read_bytes() for p in cache.parent.iterdir())
    assert b"stub/bad" in stored and b"refuses" in stored  # scores and the verdict are there
    for word in secret_words:
        assert word.encode() not in stored


class _RaisingGrader(ScriptedGrader):
    """Raises on every call, like a grader whose network failed."""

    async def grade(self, request: GradeRequest) -> Verdict | Reason:
        self.stats.requests += 1
        raise ConnectionError("down")


async def test_grader_errors_are_never_cached(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_bytes(line(chat("BAD q", "ALLOW")) + b"\n")
    cache = tmp_path / "c.sqlite"
    for _ in range(2):
        grader = _RaisingGrader()
        await screen(
            source,
            out=tmp_path / "out",
            policy=stub_policy(),
            moderator=KeywordModerator(),
            grader=grader,
            cache=cache,
        )
        assert grader.stats.requests == 1
    good = ScriptedGrader()
    summary = await screen(
        source,
        out=tmp_path / "out",
        policy=stub_policy(),
        moderator=KeywordModerator(),
        grader=good,
        cache=cache,
    )
    assert good.stats.requests == 1 and summary.counts.clean == 1


async def test_a_changed_escalation_asks_the_grader_again(tmp_path: Path) -> None:
    """The grader is shown what moderation found, so that is part of its key."""

    class Scores(KeywordModerator):
        def __init__(self, model: str, score: float) -> None:
            super().__init__()
            self.model = model
            self.score = score

        async def moderate(self, segments):  # type: ignore[no-untyped-def]
            results = await super().moderate(segments)
            return [
                r.model_copy(update={"scores": {"stub/bad": self.score}}) if "BAD" in s.text else r
                for s, r in zip(segments, results, strict=True)
            ]

    source = tmp_path / "d.jsonl"
    source.write_bytes(line(chat("BAD q", "ALLOW")) + b"\n")
    cache = tmp_path / "c.sqlite"
    asked = []
    for model, score in (("a", 0.9), ("b", 0.9), ("c", 0.8)):
        grader = ScriptedGrader()
        await screen(
            source,
            out=tmp_path / "out",
            policy=stub_policy(),
            moderator=Scores(model, score),
            grader=grader,
            cache=cache,
        )
        asked.append(grader.stats.requests)
    # Another moderation model that finds the same: the grader's answer still holds.
    # One that finds another score: the grader is asked again.
    assert asked == [1, 0, 1]


async def test_stream_and_records_use_the_cache(tmp_path: Path) -> None:
    records = [chat(f"q{i}", "BAD" if i % 4 == 0 else "a") for i in range(40)]
    cache = tmp_path / "c.sqlite"
    decisions = []
    calls = []
    for _ in range(2):
        moderator = KeywordModerator()
        results = [
            r
            async for r in stream(
                records=records, policy=stub_policy(), moderator=moderator, cache=cache
            )
        ]
        decisions.append([r.decision for r in results])
        calls.append(sum(moderator.calls))
    assert decisions[0] == decisions[1] and decisions[0].count("flagged") == 10
    assert calls == [120, 0]
    assert {p.name for p in tmp_path.iterdir()} <= {  # noqa: ASYNC240
        "c.sqlite",
        "c.sqlite-wal",
        "c.sqlite-shm",
    }


class _Hangs(KeywordModerator):
    """Answers ``answered`` calls, then hangs until cancelled."""

    def __init__(self, answered: int) -> None:
        super().__init__()
        self.answered = answered
        self.hung = 0

    async def moderate(self, segments):  # type: ignore[no-untyped-def]
        if self.stats.requests >= self.answered:
            self.hung += 1
            await asyncio.sleep(3600)
        return await super().moderate(segments)


async def test_an_interrupted_run_resumes_without_asking_twice(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    lines = dataset(source, 400)
    reference, *_ = await _screen(source, tmp_path / "ref", None, batch_size=10)
    cache = tmp_path / "out" / ".cache.sqlite"
    hanging = _Hangs(answered=12)
    run = asyncio.create_task(
        screen(
            source,
            out=tmp_path / "out",
            policy=stub_policy(),
            moderator=hanging,
            grader=ScriptedGrader(),
            batch_size=10,
            concurrency=4,
            cache=cache,
        )
    )
    while hanging.hung < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    left_behind = [p.name for p in (tmp_path / "out").iterdir()]
    assert [name for name in left_behind if not name.startswith(".cache.sqlite")] == []
    with sqlite3.connect(cache) as db:
        stored = {row[0] for row in db.execute("SELECT hash FROM entries")}
    db.close()
    left = [x for x in lines if hashlib.sha256(x).hexdigest() not in stored]
    expected_segments = sum(3 for x in left if b'"messages":[' in x)
    assert 0 < expected_segments < sum(3 for x in lines if b'"messages":[' in x)
    files, moderator, _, _ = await _screen(
        source, tmp_path / "out", cache, batch_size=10, concurrency=4
    )
    assert files == reference
    assert sum(moderator.calls) == expected_segments
