"""[tool.moderation] in a dataset repository's pyproject.toml, overridden by flags."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from datagen import AWS_KEY, chat, line

from moderation.cli import main
from moderation.config import GATE_CACHE, RUN_CACHE_NAME, find_project_config, settings
from moderation.errors import ConfigError, InputError
from moderation.gating import Limit


def _repo(root: Path, table: str) -> Path:
    """A dataset repository: .git, pyproject.toml with ``table``, data/ and a subfolder."""
    (root / ".git").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "data"\n\n[tool.moderation]\n{table}')
    data = root / "data"
    data.mkdir()
    (data / "b.jsonl").write_bytes(line(chat("q", "a")) + b"\n")
    (data / "a.jsonl").write_bytes(line(chat("q", f"key {AWS_KEY}")) + b"\n")
    (root / "notes").mkdir()
    return root


def test_nearest_table_paths_relative_to_it_and_globs_sorted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(
        tmp_path / "repo",
        'policy = "policies/ours.yaml"\ninputs = ["data/*.jsonl"]\nout = "screened"\n'
        'max-flagged = "1.5%"\nmax_quarantined = 3\nconcurrency = 2\n',
    )
    monkeypatch.chdir(root / "notes")
    project = find_project_config()
    assert project.root == root.resolve()
    opts = settings("gate", {}, project)
    assert [p.resolve() for p in opts.inputs] == [
        (root / "data" / "a.jsonl").resolve(),
        (root / "data" / "b.jsonl").resolve(),
    ]
    assert Path(opts.policy or "").resolve() == (root / "policies" / "ours.yaml").resolve()
    assert (opts.max_flagged, opts.max_quarantined) == (Limit(1.5, True), Limit(3))
    assert opts.concurrency == 2 and opts.batch_size == 64
    assert opts.cache is not None
    assert opts.cache.resolve() == (root / GATE_CACHE).resolve()
    # Flags win; run keeps its cache beside its outputs.
    flags = {"inputs": ["x.jsonl"], "max_flagged": "0", "policy": "offline", "out": "o"}
    run = settings("run", flags, project)
    assert run.inputs == [Path("x.jsonl")] and run.policy == "offline"
    assert run.max_flagged == Limit(0) and run.cache == Path("o") / RUN_CACHE_NAME
    assert settings("run", {**flags, "no_cache": True}, project).cache is None
    assert settings("gate", {"cache": "c.db"}, project).cache == Path("c.db")


def test_from_the_root_paths_are_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path / "repo", 'inputs = "data/b.jsonl"\ncache = false\nout = "o"\n')
    monkeypatch.chdir(root)
    opts = settings("run", {}, find_project_config())
    assert opts.inputs == [Path("data/b.jsonl")] and opts.out == Path("o")
    assert opts.cache is None, "cache = false turns it off"


def test_the_search_stops_at_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.moderation]\npolicy = "offline"\n')
    inner = tmp_path / "repo"
    (inner / ".git").mkdir(parents=True)
    (inner / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no table here
    monkeypatch.chdir(inner)
    assert find_project_config().policy is None
    monkeypatch.chdir(tmp_path)
    assert find_project_config().policy == "offline"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('polcy = "offline"\n', "unknown key 'polcy'"),
        ('max-flagged = "lots"\n', "max-flagged"),
        ("concurrency = 0\n", "concurrency"),
        ("concurrency = true\n", "concurrency"),  # TOML's true is not the number 1
        ("max-quarantined = true\n", "max-quarantined"),
        ("inputs = 3\n", "inputs"),
        ('policy = "offline\n', "not valid TOML"),
    ],
)
def test_bad_tables_are_configuration_errors_that_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    table: str,
    message: str,
) -> None:
    root = _repo(tmp_path / "repo", table)
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError, match=message):
        find_project_config()
    assert main(["gate", "data/b.jsonl", "--policy", "offline"]) == 2
    assert message in capsys.readouterr().err


def test_a_pattern_that_matches_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path / "repo", 'inputs = ["data/*.jsonl", "more/*.jsonl"]\n')
    monkeypatch.chdir(root)
    with pytest.raises(InputError, match=r"'more/\*.jsonl' matches no file"):
        settings("gate", {}, find_project_config())


def test_the_commands_read_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _repo(
        tmp_path / "repo",
        'policy = "offline"\ninputs = ["data/*.jsonl"]\nout = "screened"\nmax-flagged = 1\n',
    )
    monkeypatch.chdir(root / "notes")
    assert main(["gate"]) == 0, "one flagged example is within max-flagged = 1"
    assert "2 examples" in capsys.readouterr().out
    assert main(["gate", "--max-flagged", "0"]) == 1, "the flag overrides the table"
    capsys.readouterr()
    assert (root / GATE_CACHE).is_file(), "the gate's cache is under the project's folder"
    assert main(["run", "--quiet"]) == 0
    summary = orjson.loads((root / "screened" / "summary.json").read_bytes())
    assert summary["counts"]["input"] == 2 and summary["policy"]["id"] == "offline"
    assert summary["cache"]["path"].endswith(RUN_CACHE_NAME)
    assert main(["validate", "--format", "json"]) == 0
    assert set(orjson.loads(capsys.readouterr().out)["files"]) == {
        "../data/a.jsonl",
        "../data/b.jsonl",
    }


def test_run_needs_an_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    assert main(["run", "x.jsonl"]) == 2
    assert "--out" in capsys.readouterr().err
