"""Paths: inputs are regular files (links followed on purpose), outputs go only under
--out, never over an input and never through a link."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import orjson
import pytest
from datagen import chat, line, write_lines
from stubs import KeywordModerator

from moderation import screen_sync
from moderation.cli import main
from moderation.errors import ConfigError, InputError
from moderation.policy import Policy
from moderation.reader import check_inputs, open_input

POLICY = Policy.model_validate(
    {"id": "stub", "version": "1", "moderation": {"provider": "local", "zero_tolerance": []}}
)
OUTPUTS = {"clean.jsonl", "flagged.jsonl", "quarantine.jsonl", "audit.jsonl", "summary.json"}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "data.jsonl", iter([line(chat("q", "a")), line(chat("r", "b"))]))


def _screen(source: Path, out: Path) -> None:
    screen_sync(source, out=out, policy=POLICY, moderator=KeywordModerator())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a directory, not a regular file"),
        (os.mkfifo, "is a FIFO (named pipe), not a regular file"),
        (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), "is a socket, not a regular file"),
        (lambda p: p.symlink_to("/dev/null"), "is a character device, not a regular file"),
        (lambda p: p.symlink_to(p.parent / "nowhere.jsonl"), "broken symbolic link (to "),
        (lambda p: p.symlink_to(p), "cannot follow"),
    ],
    ids=["directory", "fifo", "socket", "device", "broken-link", "link-loop"],
)
def test_non_regular_inputs_are_refused_by_name_without_opening_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    path = tmp_path / "input.jsonl"
    make(path)  # type: ignore[operator]
    with pytest.raises(InputError, match=re.escape("input.jsonl: " + message)):
        check_inputs([path])
    # A FIFO nobody writes to would block an open(): the command returns at once.
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_file_that_turned_into_a_fifo_fails_on_open_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "late.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        open_input(fifo)


def test_symlinked_input_is_followed_and_where_it_led_is_recorded(
    tmp_path: Path, data: Path
) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    out = tmp_path / "out"
    _screen(link, out)
    start = orjson.loads((out / "audit.jsonl").read_bytes().splitlines()[0])
    assert start["links"] == {str(link): str(data.resolve())}
    assert list(start["inputs"]) == [str(link)]
    assert (out / "clean.jsonl").read_bytes() == data.read_bytes()


def test_out_may_be_a_link_to_a_directory(tmp_path: Path, data: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    _screen(data, tmp_path / "out")
    assert {p.name for p in real.iterdir()} == OUTPUTS


def test_out_that_is_a_file_is_refused(tmp_path: Path, data: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        _screen(data, tmp_path / "out")


def test_an_output_name_that_is_a_link_is_refused_and_its_target_untouched(
    tmp_path: Path, data: Path
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "clean.jsonl").symlink_to(victim)
    with pytest.raises(ConfigError, match=r"clean.jsonl: is a symbolic link \(to .*precious"):
        _screen(data, out)
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["clean.jsonl"]


def test_a_link_planted_at_a_temporary_name_is_replaced_not_written_through(
    tmp_path: Path, data: Path
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    for name in (".clean.jsonl.partial", ".summary.json.partial", ".audit.jsonl.partial"):
        (out / name).symlink_to(victim)
    _screen(data, out)
    assert victim.read_text() == "keep me"
    assert all(not (out / name).is_symlink() for name in OUTPUTS)
    assert (out / "clean.jsonl").read_bytes() == data.read_bytes()


def test_os_replace_replaces_a_link_and_leaves_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (tmp_path / "final").symlink_to(victim)
    (tmp_path / "partial").write_text("new")
    os.replace(tmp_path / "partial", tmp_path / "final")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "final").is_symlink() and (tmp_path / "final").read_text() == "new"


def test_an_output_name_that_is_a_directory_is_refused_before_any_work(
    tmp_path: Path, data: Path
) -> None:
    (tmp_path / "out" / "audit.jsonl").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"audit\.jsonl: exists and is not a regular file"):
        _screen(data, tmp_path / "out")


@pytest.mark.parametrize(
    "alias",
    ["same-path", "hard-link", "symlink-to-output", "temporary-name", "link-at-temporary-name"],
)
def test_writing_over_an_input_is_refused_whatever_its_name(
    tmp_path: Path, data: Path, alias: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    original = data.read_bytes()
    if alias == "same-path":
        source = out / "flagged.jsonl"
        source.write_bytes(original)
    elif alias == "hard-link":
        os.link(data, out / "flagged.jsonl")
        source = data
    elif alias == "symlink-to-output":
        (out / "quarantine.jsonl").write_bytes(original)
        source = tmp_path / "via-link.jsonl"
        source.symlink_to(out / "quarantine.jsonl")
    elif alias == "temporary-name":
        source = out / ".clean.jsonl.partial"
        source.write_bytes(original)
    else:
        source = out / ".audit.jsonl.partial"
        source.symlink_to(data)
    with pytest.raises(ConfigError, match="refusing to write an output over an input"):
        _screen(source, out)
    assert source.read_bytes() == original


def test_a_path_with_dot_dot_is_not_recorded_as_a_link(tmp_path: Path, data: Path) -> None:
    (tmp_path / "sub").mkdir()
    source = tmp_path / "sub" / ".." / data.name
    _screen(source, tmp_path / "out")
    start = orjson.loads((tmp_path / "out" / "audit.jsonl").read_bytes().splitlines()[0])
    assert start["links"] == {}


def test_the_cache_is_never_written_over_an_input_nor_left_by_a_refused_run(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = data.read_bytes()
    # The cache named as an input: refused before anything is read or written.
    gate = ["gate", str(data), "--policy", "offline", "--cache", str(data)]
    assert main(gate) == 2
    assert "refusing to write an output over an input" in capsys.readouterr().err
    assert data.read_bytes() == original
    # An output directory the run refuses: no cache file is created in it either.
    out = tmp_path / "out"
    out.mkdir()
    (out / "clean.jsonl").write_bytes(original)
    run = ["run", str(out / "clean.jsonl"), "--out", str(out), "--policy", "offline"]
    assert main(run) == 2
    assert sorted(p.name for p in out.iterdir()) == ["clean.jsonl"]


def test_commit_syncs_the_summary_and_the_directory(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """summary.json marks a finished run: it and the renames are made durable, so a
    crash cannot leave an empty summary.json that looks finished."""
    import stat as stat_module

    synced: list[os.stat_result] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    out = tmp_path / "out"
    _screen(data, out)
    summary = (out / "summary.json").stat()
    assert any(s.st_ino == summary.st_ino for s in synced)
    assert any(stat_module.S_ISDIR(s.st_mode) and s.st_ino == out.stat().st_ino for s in synced)
