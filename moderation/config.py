"""A dataset repository's settings: ``[tool.moderation]`` in its ``pyproject.toml``.

The nearest ``pyproject.toml`` with a ``[tool.moderation]`` table, from the working
directory upward (stopping at the repository's root, the folder holding ``.git``), is
read once and validated here; paths in it are relative to the folder it is in.
Command-line flags override it; built-in defaults fill the rest::

    [tool.moderation]
    policy = "policies/ours.yaml"      # a built-in pack's name, or a path
    inputs = ["data/*.jsonl"]          # files or glob patterns
    out = "screened"                   # `run`'s output directory
    cache = ".moderation-cache/cache.sqlite"   # or false for none
    max-flagged = 0                    # the gate's limits: a count ...
    max-quarantined = "1%"             # ... or a percentage
    concurrency = 8
    batch-size = 64
    max-line-bytes = 4194304
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from moderation.errors import ConfigError, InputError
from moderation.gating import Limit
from moderation.policy import names_a_file
from moderation.reader import DEFAULT_MAX_LINE_BYTES

__all__ = [
    "GATE_CACHE",
    "RUN_CACHE_NAME",
    "ProjectConfig",
    "Settings",
    "find_project_config",
    "settings",
]

GATE_CACHE = Path(".moderation-cache") / "cache.sqlite"
"""The gate's cache, under the project's folder (or the working directory)."""
RUN_CACHE_NAME = ".moderation-cache.sqlite"
"""``run``'s cache, in its output directory: beside the outputs it makes cheap to redo."""


class ProjectConfig(BaseModel):
    """The validated ``[tool.moderation]`` table. Keys are written as the flags are
    (``max-flagged``); the snake_case spelling is accepted too."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=lambda name: name.replace("_", "-"),
    )

    policy: str | None = None
    inputs: tuple[str, ...] = ()
    out: str | None = None
    cache: str | Literal[False] | None = None
    # Strict: TOML's `true` is not the number 1.
    max_flagged: str | StrictInt | None = None
    max_quarantined: str | StrictInt | None = None
    concurrency: StrictInt | None = Field(default=None, ge=1)
    batch_size: StrictInt | None = Field(default=None, ge=1)
    max_line_bytes: StrictInt | None = Field(default=None, ge=1024)
    root: Path = Field(default_factory=Path.cwd, exclude=True)
    """The folder of the ``pyproject.toml`` (paths are relative to it)."""
    source: str = Field(default="", exclude=True)

    @field_validator("max_flagged", "max_quarantined")
    @classmethod
    def _limit(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            try:
                Limit.parse(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    def path(self, value: str) -> Path:
        """``value`` relative to the project's folder, then written relative to the
        working directory (reports name ``data/train.jsonl``, not an absolute path)."""
        full = self.root / value
        try:
            return Path(os.path.relpath(full))
        except ValueError:  # another drive, on Windows
            return full

    def input_paths(self) -> list[Path]:
        """``inputs``, glob patterns expanded in sorted order. A pattern that matches
        nothing is an error: a gate that checks no file must not pass."""
        found: list[Path] = []
        for pattern in self.inputs:
            if not any(ch in pattern for ch in "*?["):
                found.append(self.path(pattern))
                continue
            matches = sorted(p for p in self.root.glob(pattern) if p.is_file())
            if not matches:
                raise InputError(f"{self.source}: inputs: {pattern!r} matches no file")
            found.extend(self.path(str(p.relative_to(self.root))) for p in matches)
        return found

    def policy_ref(self) -> str | None:
        """The policy: a built-in name as is, a path made relative to the project."""
        if self.policy is None:
            return None
        return str(self.path(self.policy)) if names_a_file(self.policy) else self.policy


def find_project_config(start: Path | None = None) -> ProjectConfig:
    """The nearest ``[tool.moderation]`` from ``start`` (default: the working
    directory) up to the repository's root; empty settings when there is none.

    Raises :class:`ConfigError` for a ``pyproject.toml`` that does not parse or a
    table with an unknown key or a bad value.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            table = _moderation_table(candidate)
            if table is not None:
                return _validate(table, candidate)
        if (folder / ".git").exists():
            break
    return ProjectConfig()


def _moderation_table(path: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("moderation")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.moderation] must be a table")
    return table


def _validate(table: dict[str, Any], path: Path) -> ProjectConfig:
    try:
        return ProjectConfig.model_validate({**table, "root": path.parent, "source": str(path)})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(table)"
            if err["type"] == "extra_forbidden":
                known = ", ".join(
                    f.alias or name
                    for name, f in ProjectConfig.model_fields.items()
                    if name not in ("root", "source")
                )
                problems.append(f"unknown key {key!r} (known: {known})")
            else:
                problems.append(f"{key}: {err['msg']}")
        raise ConfigError(f"{path}: [tool.moderation]: {'; '.join(problems)}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """One command's settings: flags over ``[tool.moderation]`` over defaults."""

    inputs: list[Path]
    policy: str | None
    out: Path | None
    cache: Path | None
    max_flagged: Limit
    max_quarantined: Limit
    concurrency: int
    batch_size: int
    max_line_bytes: int


def settings(
    command: Literal["run", "gate", "validate"],
    flags: Mapping[str, Any],
    project: ProjectConfig,
) -> Settings:
    """Merge ``flags`` (argparse's values; ``None`` or absent means not given) over
    ``project``. Cache: ``--no-cache``, else ``--cache``, else the table's ``cache``
    (``false`` for none), else ``run``'s default beside its outputs or the gate's
    :data:`GATE_CACHE` under the project's folder."""

    def pick(name: str, default: Any) -> Any:
        flag = flags.get(name)
        if flag is not None:
            return flag
        value = getattr(project, name)
        return default if value is None else value

    inputs = [Path(p) for p in flags.get("inputs") or ()] or project.input_paths()
    out = flags.get("out")
    if out is None and project.out is not None:
        out = project.path(project.out)
    if command == "run" and out is None and not flags.get("dry_run"):
        raise ConfigError("give --out DIR (or set out in [tool.moderation]), or --dry-run")
    cache: Path | None = None
    if flags.get("no_cache"):
        cache = None
    elif flags.get("cache") is not None:
        cache = Path(flags["cache"])
    elif isinstance(project.cache, str):
        cache = project.path(project.cache)
    elif project.cache is None and command == "run" and out is not None:
        cache = Path(out) / RUN_CACHE_NAME
    elif project.cache is None and command == "gate":
        cache = project.path(str(GATE_CACHE))
    policy = flags.get("policy") or project.policy_ref()
    return Settings(
        inputs=inputs,
        policy=policy,
        out=None if out is None else Path(out),
        cache=cache,
        max_flagged=Limit.parse(pick("max_flagged", 0)),
        max_quarantined=Limit.parse(pick("max_quarantined", 0)),
        concurrency=int(pick("concurrency", 8)),
        batch_size=int(pick("batch_size", 64)),
        max_line_bytes=int(pick("max_line_bytes", DEFAULT_MAX_LINE_BYTES)),
    )
