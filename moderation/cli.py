"""The command line: ``moderation run | gate | validate | audit verify``, a thin layer
over :mod:`moderation.api`, :mod:`moderation.gating` and :mod:`moderation.verify`.

Settings come from the flags, then ``[tool.moderation]`` in the nearest
``pyproject.toml`` (:mod:`moderation.config`), then the defaults.

Exit status: ``0`` success, ``1`` the data failed (``gate`` found too many flagged or
quarantined examples, ``validate`` found invalid ones, ``audit verify`` found the record
tampered with), ``2`` usage, configuration or input error, ``3`` an internal error (a
bug), ``130`` interrupted. Every command takes ``--log-level``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog
from rich.markup import escape

from moderation._redact import redact_text
from moderation._terminal import ProgressReporter, print_summary, stderr_console
from moderation._version import __version__
from moderation.api import resolve_policy, screen
from moderation.config import Settings, find_project_config, settings
from moderation.errors import ConfigError, InvariantError, ModerationError
from moderation.gate_report import emit, github_error
from moderation.gating import DEFAULT_KEEP, Limit, gate
from moderation.logs import DEFAULT_LOG_LEVEL, LOG_LEVELS, configure_logging
from moderation.reader import DEFAULT_MAX_LINE_BYTES, ReadStats, check_inputs, read_examples
from moderation.tokens import token_method
from moderation.validate import validate
from moderation.verify import verify_run

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_log = structlog.get_logger("moderation.cli")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _limit(text: str) -> str:
    try:
        Limit.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _common(command: argparse.ArgumentParser) -> None:
    """Options ``run`` and ``gate`` share; unset ones come from [tool.moderation]."""
    command.add_argument(
        "--concurrency", type=_positive, metavar="N", help="batches in flight (default 8)"
    )
    command.add_argument(
        "--batch-size", type=_positive, metavar="N", help="examples per batch (default 64)"
    )
    command.add_argument(
        "--max-line-bytes",
        type=_positive,
        metavar="N",
        help=f"quarantine longer lines unread (default {DEFAULT_MAX_LINE_BYTES})",
    )
    cache = command.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path, metavar="PATH", help="the result cache (SQLite)")
    cache.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the result cache"
    )


_LOG_LEVEL_HELP = f"debug, info or warning (default {DEFAULT_LOG_LEVEL}); credentials are redacted"

# Options every command takes, before or after its name. In the commands their default
# is SUPPRESS, so that a value given before the command name is not reset by them.
_SHARED = argparse.ArgumentParser(add_help=False)
_SHARED.add_argument(
    "--log-level", choices=tuple(LOG_LEVELS), default=argparse.SUPPRESS, help=_LOG_LEVEL_HELP
)


class _CommandParser(argparse.ArgumentParser):
    """The parser of every (sub)command: it always inherits the shared options."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["parents"] = [*kwargs.get("parents", ()), _SHARED]
        super().__init__(**kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moderation",
        description="Screen training datasets (JSONL) with a moderation classifier and an"
        " LLM policy check, before you train on them or upload them.",
    )
    parser.add_argument("--version", action="version", version=f"moderation {__version__}")
    parser.add_argument(
        "--log-level", choices=tuple(LOG_LEVELS), default=DEFAULT_LOG_LEVEL, help=_LOG_LEVEL_HELP
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )

    run = commands.add_parser(
        "run",
        help="screen datasets and write clean / flagged / quarantine JSONL",
        description="Screen INPUT files and write clean.jsonl, flagged.jsonl,"
        " quarantine.jsonl, audit.jsonl and summary.json to --out.",
    )
    run.add_argument("inputs", nargs="*", metavar="INPUT", help="JSONL or .jsonl.gz files")
    run.add_argument(
        "--out", type=Path, metavar="DIR", help="output directory (required unless --dry-run)"
    )
    run.add_argument(
        "--policy",
        metavar="NAME|PATH",
        help="built-in pack (default, offline) or a policy file; without it: 'default'"
        " when OPENAI_API_KEY is set, else 'offline'",
    )
    _common(run)
    run.add_argument("--quiet", action="store_true", help="no progress and no table")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="read and validate, then estimate requests, tokens and cost; call no API",
    )

    ci = commands.add_parser(
        "gate",
        help="the CI gate: exit 1 when a dataset has too many flagged or quarantined examples",
        description="Screen INPUT files (writing no outputs) and exit 0 when the flagged and"
        " quarantined examples are within the limits, 1 when not, 2 on a usage,"
        " configuration or input error. Never falls back to a weaker policy.",
    )
    ci.add_argument("inputs", nargs="*", metavar="INPUT", help="JSONL or .jsonl.gz files")
    ci.add_argument(
        "--policy", metavar="NAME|PATH", help="built-in pack or policy file (default: default)"
    )
    for name in ("flagged", "quarantined"):
        ci.add_argument(
            f"--max-{name}",
            type=_limit,
            metavar="N|P%",
            help=f"most {name} examples allowed: a count or a percentage (default 0)",
        )
    ci.add_argument("--format", choices=("text", "json", "github"), default="text")
    ci.add_argument(
        "--show",
        type=_non_negative,
        metavar="N",
        help="findings listed (text 20, json 200) or annotated (github 50)",
    )
    _common(ci)
    ci.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    check = commands.add_parser(
        "validate",
        help="check the format of datasets offline, with token counts",
        description="Check INPUT files against the fine-tuning formats, offline: no API"
        " call. Exit 1 when any example is invalid.",
    )
    check.add_argument("inputs", nargs="*", metavar="INPUT")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--max-line-bytes", type=_positive, help=argparse.SUPPRESS)
    check.add_argument(
        "--show",
        type=_non_negative,
        default=20,
        metavar="N",
        help="list the first N problems (default 20)",
    )

    audit = commands.add_parser(
        "audit", help="check a run's audit trail", description="Work with a run's audit trail."
    )
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check that a run's outputs and audit log are as the run wrote them",
        description="Check DIR's audit chain, counts, output files and summary. Exit 0 when"
        " intact, 1 when anything was edited, deleted, reordered or cut off, 2 when DIR is"
        " not a run's output directory.",
    )
    verify.add_argument("directory", type=Path, metavar="DIR", help="a run's --out directory")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moderation`` command."""
    args = _parser().parse_args(argv)
    # Diagnostics go to stderr: stdout carries results (the table, `--format json`).
    configure_logging(args.log_level)
    _log.debug(
        "command",
        **{k: v if isinstance(v, int | str | None) else str(v) for k, v in vars(args).items()},
        openai_base_url=os.environ.get("OPENAI_BASE_URL"),
        openai_api_key_set=bool(os.environ.get("OPENAI_API_KEY")),
    )
    console = stderr_console()
    try:
        if args.command == "run":
            return _run(args, console)
        if args.command == "gate":
            return _gate(args)
        if args.command == "audit":
            return _verify(args)
        return _validate(args)
    except KeyboardInterrupt:
        console.print("[yellow]moderation: interrupted; no output was finished[/]")
        return EXIT_INTERRUPTED
    except InvariantError as exc:
        console.print(f"[red]moderation: internal error:[/] {_safe(exc)}")
        return EXIT_BUG
    except ModerationError as exc:
        # A provider's message can quote a (masked) key: it goes out redacted.
        console.print(f"[red]moderation: error:[/] {_safe(exc)}", highlight=False)
        return EXIT_USAGE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[red]moderation: error:[/] {_safe(where + (exc.strerror or ''))}")
        return EXIT_USAGE
    except Exception as exc:
        console.print(f"[red]moderation: internal error (a bug):[/] {escape(_bug(exc, args))}")
        return EXIT_BUG


def _safe(exc: BaseException | str) -> str:
    """Text for the terminal: credentials redacted, rich markup escaped."""
    return escape(redact_text(str(exc)))


def _bug(exc: Exception, args: argparse.Namespace) -> str:
    """Where an unexpected exception came from, without its message: a message can hold
    anything, an example's text included (a validation error quotes its input)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    text = f"{type(exc).__name__}{where}"
    if args.log_level == "debug":
        text += "\n" + "".join(traceback.format_list(frames))
    else:
        text += " (--log-level debug shows the traceback)"
    return text


def _run(args: argparse.Namespace, console: Any) -> int:
    opts = settings("run", vars(args), find_project_config())
    paths = check_inputs(opts.inputs)
    if args.dry_run:
        return _dry_run(opts, paths)
    assert opts.out is not None  # settings() requires it for run
    choice = resolve_policy(opts.policy)
    if choice.fallback:
        console.print(f"[bold yellow]WARNING:[/] {choice.fallback}")
    with ProgressReporter(paths, enabled=not args.quiet) as progress:
        summary = asyncio.run(
            screen(
                paths,
                out=opts.out,
                policy=choice,
                concurrency=opts.concurrency,
                batch_size=opts.batch_size,
                max_line_bytes=opts.max_line_bytes,
                progress=progress,
                allow_fallback=True,
                cache=opts.cache,
            )
        )
    if not args.quiet:
        from rich.console import Console

        print_summary(summary, Console(highlight=False), out=opts.out)
    if choice.fallback:
        console.print(f"[bold yellow]WARNING:[/] {choice.fallback}")
    return EXIT_OK


def _dry_run(opts: Settings, paths: list[Path]) -> int:
    from rich.console import Console

    from moderation._terminal import print_estimate
    from moderation.estimate import estimate_run

    # The estimate is of the policy a key would give: without --policy, 'default'.
    choice = resolve_policy(opts.policy, allow_fallback=False, require_key=False)
    estimate = estimate_run(
        paths, choice.policy, batch_size=opts.batch_size, max_line_bytes=opts.max_line_bytes
    )
    print_estimate(estimate, Console(highlight=False))
    return EXIT_OK


def _gate(args: argparse.Namespace) -> int:
    try:
        opts = settings("gate", vars(args), find_project_config())
        paths = check_inputs(opts.inputs)
        with ProgressReporter(paths, enabled=not args.quiet) as progress:
            result = asyncio.run(
                gate(
                    paths,
                    policy=opts.policy,
                    max_flagged=opts.max_flagged,
                    max_quarantined=opts.max_quarantined,
                    cache=opts.cache,
                    concurrency=opts.concurrency,
                    batch_size=opts.batch_size,
                    max_line_bytes=opts.max_line_bytes,
                    progress=progress,
                    # What --show asks for is kept, in every format (json: all it keeps).
                    keep=max(args.show or 0, DEFAULT_KEEP),
                )
            )
    except ModerationError as exc:
        if args.format == "github":
            print(github_error(redact_text(str(exc))), flush=True)
        raise
    emit(result, args.format, show=args.show)
    return EXIT_OK if result.passed else EXIT_FAILED


def _verify(args: argparse.Namespace) -> int:
    result = verify_run(args.directory)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK if result.ok else EXIT_FAILED
    for problem in result.problems:
        print(problem.located(args.directory))
    counts = result.counts or {}
    tally = " ".join(f"{k} {counts[k]:,}" for k in counts if isinstance(counts[k], int))
    if result.ok:
        print(f"OK: {result.events:,} events, {tally}; chain head {result.head}")
        return EXIT_OK
    print(f"FAILED: {len(result.problems)} problem(s) in {args.directory}")
    return EXIT_FAILED


def _validate(args: argparse.Namespace) -> int:
    opts = settings("validate", vars(args), find_project_config())
    paths = check_inputs(opts.inputs)
    report: dict[str, Any] = {"files": {}, "token_method": token_method()}
    invalid_total = 0
    shown: list[dict[str, Any]] = []
    for path in paths:
        stats = ReadStats()
        formats: Counter[str] = Counter()
        problems: Counter[str] = Counter()
        warnings: Counter[str] = Counter()
        tokens = invalid = 0
        for example in read_examples([path], stats=stats, max_line_bytes=opts.max_line_bytes):
            validate(example)
            formats[example.format or "unrecognized"] += 1
            tokens += example.tokens
            problems.update({p.code for p in example.problems})
            warnings.update({w.code for w in example.warnings})
            if example.problems:
                invalid += 1
                if len(shown) < args.show:
                    shown.append(
                        {
                            "source": example.source,
                            "line": example.line,
                            "codes": [p.code for p in example.problems],
                        }
                    )
        invalid_total += invalid
        report["files"][str(path)] = {
            "examples": stats.examples,
            "blank_lines": stats.blank_lines,
            "valid": stats.examples - invalid,
            "invalid": invalid,
            "formats": dict(formats.most_common()),
            "problems": dict(problems.most_common()),
            "warnings": dict(warnings.most_common()),
            "tokens": tokens,
        }
    report["problems_shown"] = shown
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_validation(report)
    return EXIT_FAILED if invalid_total else EXIT_OK


def _print_validation(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="moderation validate")
    for column in ("file", "examples", "valid", "invalid", "formats", "tokens"):
        table.add_column(column, justify="right" if column not in ("file", "formats") else "left")
    for name, info in report["files"].items():
        formats = ", ".join(f"{k} {v:,}" for k, v in info["formats"].items())
        table.add_row(
            name,
            f"{info['examples']:,}",
            f"{info['valid']:,}",
            f"[red]{info['invalid']:,}" if info["invalid"] else "0",
            formats,
            f"{info['tokens']:,}",
        )
    console.print(table)
    console.print(f"tokens counted by {report['token_method']}")
    for name, info in report["files"].items():
        for label in ("problems", "warnings"):
            if info[label]:
                items = ", ".join(f"{k} ×{v:,}" for k, v in info[label].items())
                console.print(f"{name}: {label}: {items}")
    for item in report["problems_shown"]:
        console.print(f"  {item['source']}:{item['line']}: {', '.join(item['codes'])}")
