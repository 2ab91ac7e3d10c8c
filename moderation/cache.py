"""The result cache: stage answers in SQLite, so a run never pays twice for one answer.

Each entry is one example's result for one stage, keyed by the example's content hash
and a *scope*: the stage, the provider (with its endpoint, when it has one: a hash of
the server's address) and model that answered, the policy's hash and the tool's
version. Change any of them and the old entries simply stop matching.

- ``moderate``: the per-segment scores of the example's moderated segments.
- ``grade``: the grader's :class:`~moderation.models.Verdict`, or its ``grade.*``
  :class:`~moderation.models.Reason` when it gave no valid verdict. The key also covers
  what moderation escalated, since the grader is shown that.

Transient failures (a :class:`~moderation.models.SegmentError`, an ``error.*`` reason)
are never stored: the next run asks again. Nothing of the example's text is stored,
nor any key: hashes, scores, verdicts (with the grader's rationale) only.

Answers are committed as each batch finishes (WAL journal), so a run killed at any
moment loses only the batches in flight; the same command again reads the rest from
here. A damaged entry is a miss (and is overwritten); a file that cannot be opened as
a cache is reported and the run goes on without one.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from pydantic import TypeAdapter, ValidationError

from moderation._version import __version__
from moderation.models import Example, Reason, SegmentModeration, Verdict

__all__ = [
    "CACHE_SCHEMA",
    "CacheArg",
    "GradeCache",
    "ModerationCache",
    "ResultCache",
    "StageStats",
    "cache_report",
    "grade_key",
    "open_cache",
]

CACHE_SCHEMA = 1
"""Bumped when the layout or the meaning of stored values changes."""
_APPLICATION_ID = 0x4D4F4443  # "MODC": marks the file as ours in its SQLite header
_LOOKUP_CHUNK = 500  # under SQLite's bound-parameter limit, on any build

_log = structlog.get_logger("moderation.cache")
_SEGMENTS = TypeAdapter(list[SegmentModeration])

# Entries are appended in rowid order; only the index takes the random order of the
# hashes, and it holds 64-bit integers (a hash's first 8 bytes) rather than 64-character
# text: a third of the write time. The full hash is stored and compared on every read,
# so two hashes that share a prefix can only cost a request, never a wrong answer.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS scopes (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    UNIQUE (stage, provider, model, policy_hash, tool_version)
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    scope INTEGER NOT NULL REFERENCES scopes (id),
    key INTEGER NOT NULL,
    hash TEXT NOT NULL,
    value BLOB NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (scope, key)
);
"""


@dataclass(slots=True)
class StageStats:
    """What one stage asked of the cache during a run."""

    hits: int = 0
    misses: int = 0
    stored: int = 0
    damaged: int = 0
    """Entries found but unreadable: counted as misses too, and overwritten."""


class ResultCache:
    """One SQLite cache file. Use it from one thread at a time (the run's event loop);
    it may be opened in another, e.g. a notebook's main thread.

    Prefer :func:`open_cache`, which turns a file that cannot serve as a cache into a
    warning instead of an error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, isolation_level=None, timeout=10.0, check_same_thread=False
        )
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise
        self.stats: dict[str, StageStats] = {}
        self._writable = True

    def _setup(self) -> None:
        db = self._db
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id != _APPLICATION_ID and tables:
            raise sqlite3.DatabaseError("an SQLite database that is not a moderation cache")
        if application_id == _APPLICATION_ID and version > CACHE_SCHEMA:
            raise sqlite3.DatabaseError(f"written by a newer version (schema {version})")
        # WAL: readers never block the writer, and a commit survives the process being
        # killed (NORMAL only gives up durability on power loss, which a cache can).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if application_id == _APPLICATION_ID and version < CACHE_SCHEMA:
            db.executescript("DROP TABLE IF EXISTS entries; DROP TABLE IF EXISTS scopes;")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={CACHE_SCHEMA}")

    def close(self) -> None:
        """Close the database (everything stored is already committed)."""
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def moderation(
        self, provider: str, model: str, policy_hash: str, *, endpoint: str = ""
    ) -> ModerationCache:
        """The moderation stage's view of the cache for this provider and policy
        (``endpoint``: the server's address, when answers depend on it)."""
        scope = self._scope("moderate", provider, endpoint, model, policy_hash)
        return ModerationCache(self, scope)

    def grading(
        self, provider: str, model: str, policy_hash: str, *, endpoint: str = ""
    ) -> GradeCache:
        """The grade stage's view of the cache for this grader and policy."""
        return GradeCache(self, self._scope("grade", provider, endpoint, model, policy_hash))

    def report(self) -> dict[str, Any]:
        """The summary's ``cache`` block: where it is and what each stage got from it."""
        return {"path": str(self.path), **{k: asdict(v) for k, v in sorted(self.stats.items())}}

    def count(self, stage: str | None = None) -> int:
        """Entries stored (for one stage, or all)."""
        if stage is None:
            row = self._db.execute("SELECT count(*) FROM entries").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM entries JOIN scopes ON scopes.id = entries.scope"
                " WHERE stage = ?",
                (stage,),
            ).fetchone()
        return int(row[0])

    def _scope(
        self, stage: str, provider: str, endpoint: str, model: str, policy_hash: str
    ) -> _Scope:
        # The provider column names who answered, and where: a fake, a vLLM server and
        # OpenAI never share answers.
        who = f"{provider}@{endpoint}" if endpoint else provider
        parts = (stage, who, model, policy_hash, __version__)
        columns = (
            "stage = ? AND provider = ? AND model = ? AND policy_hash = ? AND tool_version = ?"
        )
        scope: int | None = None
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO scopes"
                " (stage, provider, model, policy_hash, tool_version) VALUES (?, ?, ?, ?, ?)",
                parts,
            )
        except sqlite3.Error as exc:
            self._write_failed(exc)
        try:
            row = self._db.execute(f"SELECT id FROM scopes WHERE {columns}", parts).fetchone()
            scope = None if row is None else int(row[0])
        except sqlite3.Error as exc:
            _log.warning("cache_read_failed", path=str(self.path), error=str(exc))
        return _Scope(scope, stage, provider, self.stats.setdefault(stage, StageStats()))

    def _get(self, scope: int | None, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if scope is None:
            return found
        try:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT hash, value FROM entries WHERE scope = ? AND key IN ({marks})",
                    (scope, *map(_index_key, chunk)),
                )
                found.update((str(k), v) for k, v in rows if isinstance(v, bytes))
        except sqlite3.Error as exc:
            # A damaged page must cost a request, not the run.
            _log.warning("cache_read_failed", path=str(self.path), error=str(exc))
            return {}
        return found

    def _put(self, scope: int | None, items: Iterable[tuple[str, bytes]]) -> int:
        now = int(time.time())
        rows = [(scope, _index_key(key), key, value, now) for key, value in items]
        if not rows or scope is None or not self._writable:
            return 0
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries (scope, key, hash, value, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            self._write_failed(exc)
            return 0
        return len(rows)

    def _write_failed(self, exc: sqlite3.Error) -> None:
        if self._writable:
            _log.warning("cache_write_failed", path=str(self.path), error=str(exc))
        self._writable = False


def _index_key(hex_hash: str) -> int:
    """A hash's first 8 bytes as SQLite's signed 64-bit integer."""
    return int(hex_hash[:16], 16) - (1 << 63)


@dataclass(frozen=True, slots=True)
class _Scope:
    key: int | None
    """The scope's row in ``scopes``; ``None`` when the cache could not record it."""
    stage: str
    provider: str
    stats: StageStats


class ModerationCache:
    """Per-example segment scores, for one moderator, model and policy."""

    def __init__(self, cache: ResultCache, scope: _Scope) -> None:
        self._cache = cache
        self._scope = scope

    def restore(self, examples: Sequence[Example]) -> list[Example]:
        """Fill in ``moderation`` for the examples the cache answers; return the rest.

        Each example's ``moderated`` segments must already be chosen.
        """
        stats = self._scope.stats
        found = self._cache._get(self._scope.key, [e.hash for e in examples])
        misses: list[Example] = []
        for example in examples:
            value = found.get(example.hash)
            results = None if value is None else self._decode(value, len(example.moderated))
            if results is None:
                stats.misses += 1
                stats.damaged += value is not None
                misses.append(example)
            else:
                stats.hits += 1
                example.moderation = list(results)
        return misses

    def store(self, examples: Sequence[Example]) -> None:
        """Store the examples whose every segment was scored (errors are retried)."""
        items: list[tuple[str, bytes]] = []
        for example in examples:
            scored = [r for r in example.moderation if isinstance(r, SegmentModeration)]
            if scored and len(scored) == len(example.moderation):
                items.append((example.hash, _SEGMENTS.dump_json(scored)))
        self._scope.stats.stored += self._cache._put(self._scope.key, items)

    def _decode(self, value: bytes, expected: int) -> list[SegmentModeration] | None:
        try:
            results = _SEGMENTS.validate_json(value)
        except ValidationError:
            return None
        if len(results) != expected or any(r.provider != self._scope.provider for r in results):
            return None
        return results


def grade_key(example: Example) -> str:
    """The grade entry's key: the example's hash and what moderation escalated (the
    grader is shown both; the rules are in the policy's hash)."""
    escalations = orjson.dumps(
        [r.model_dump(mode="json") for r in example.escalations], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(example.hash.encode() + b"\n" + escalations).hexdigest()


class GradeCache:
    """Per-example verdicts (or ``grade.*`` reasons), for one grader, model and policy."""

    def __init__(self, cache: ResultCache, scope: _Scope) -> None:
        self._cache = cache
        self._scope = scope

    def restore(self, examples: Sequence[Example]) -> list[Example]:
        """Fill in ``verdict`` or ``grade_error`` where the cache answers; return the rest."""
        stats = self._scope.stats
        keys = [grade_key(e) for e in examples]
        found = self._cache._get(self._scope.key, keys)
        misses: list[Example] = []
        for example, key in zip(examples, keys, strict=True):
            value = found.get(key)
            answer = None if value is None else _decode_answer(value)
            if answer is None:
                stats.misses += 1
                stats.damaged += value is not None
                misses.append(example)
            elif isinstance(answer, Verdict):
                stats.hits += 1
                example.verdict = answer
            else:
                stats.hits += 1
                example.grade_error = answer
        return misses

    def store(self, examples: Sequence[Example]) -> None:
        """Store verdicts and ``grade.*`` reasons; ``error.*`` reasons are retried."""
        items: list[tuple[str, bytes]] = []
        for example in examples:
            if example.verdict is not None:
                value = {"verdict": example.verdict.model_dump(mode="json")}
            elif example.grade_error is not None and example.grade_error.stage == "grade":
                value = {"reason": example.grade_error.model_dump(mode="json")}
            else:
                continue
            items.append((grade_key(example), orjson.dumps(value)))
        self._scope.stats.stored += self._cache._put(self._scope.key, items)


def _decode_answer(value: bytes) -> Verdict | Reason | None:
    try:
        data = orjson.loads(value)
        if isinstance(data, dict) and "verdict" in data:
            return Verdict.model_validate(data["verdict"])
        if isinstance(data, dict) and "reason" in data:
            reason = Reason.model_validate(data["reason"])
            return reason if reason.stage == "grade" else None
    except (orjson.JSONDecodeError, ValidationError):
        return None
    return None


CacheArg = str | os.PathLike[str] | ResultCache | None
"""Where stage answers are cached: a path, an open cache, or ``None`` for no cache."""


def cache_report(cache: ResultCache | None, problem: str | None) -> dict[str, Any] | None:
    """The summary's ``cache`` block: hits per stage, or why there was no cache."""
    if cache is not None:
        return cache.report()
    return None if problem is None else {"error": problem}


def open_cache(path: str | Path) -> tuple[ResultCache | None, str | None]:
    """Open (or create) the cache at ``path``: the cache, or ``None`` and why not.

    A file that is not a cache (or is too damaged to open) is left untouched: the run
    goes on without a cache rather than failing or overwriting someone's file.
    """
    target = Path(path)
    try:
        return ResultCache(target), None
    except (sqlite3.Error, OSError) as exc:
        why = f"{target}: cannot use as a cache ({exc}); running without one"
        _log.warning("cache_unusable", path=str(target), error=str(exc))
        return None, why
