"""Where a run may write, decided on purpose (private).

A run writes only the fixed file names of :data:`~moderation.sinks.OUTPUT_FILES` (and
their ``.NAME.partial`` temporaries) directly under ``--out``. Before anything is
written, :func:`prepare_output_dir` refuses

- an ``--out`` that exists and is not a directory (a symbolic link to a directory is
  followed: naming it is a deliberate choice);
- an output name that is a symbolic link: replacing it would silently cut the link,
  following it would write somewhere the user did not name;
- an output name that is a directory, FIFO or device;
- an output name that is an input: the same path, or the same file under another
  name (a hard link, or a symbolic link to it), compared by device and inode.

Temporaries are created fresh (:func:`create_new`): any old file or link by that name
is removed first and the file is opened ``O_EXCL | O_NOFOLLOW``, so a link planted
there cannot redirect the write. Finished files are moved into place with
``os.replace``, which replaces a directory entry and never writes through a link.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from moderation.errors import ConfigError

__all__ = ["check_not_an_input", "create_new", "partial_name", "prepare_output_dir"]

# POSIX flags; where a platform lacks one, it is left out (O_EXCL alone already refuses
# to open an existing name, links included).
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def partial_name(name: str) -> str:
    """The temporary name under which output ``name`` is written until the run commits."""
    return f".{name}.partial"


def prepare_output_dir(out: Path, names: Iterable[str], inputs: Iterable[Path] = ()) -> None:
    """Create ``out`` if needed and check that the outputs ``names`` can be written there
    without touching anything else (see the module's docstring). Raises
    :class:`ConfigError` with the reason otherwise."""
    try:
        info = out.stat()
    except FileNotFoundError:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{out}: cannot create the output directory: {exc.strerror}"
            ) from None
    except OSError as exc:
        raise ConfigError(f"{out}: cannot use as the output directory: {exc.strerror}") from None
    else:
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{out}: exists and is not a directory")
    sources = _sources(inputs)
    for name in names:
        _check_target(out / name, sources)
        # A stale temporary is replaced without a look, unless it is an input.
        _check_target(out / partial_name(name), sources, temporary=True)


def check_not_an_input(target: Path, inputs: Iterable[Path]) -> None:
    """Raise :class:`ConfigError` when writing ``target`` (the result cache, say) would
    write over one of ``inputs``, under any name."""
    _check_target(target, _sources(inputs), temporary=True)


def _sources(inputs: Iterable[Path]) -> dict[object, Path]:
    """Each input by its file identity and by its absolute path."""
    sources: dict[object, Path] = {}
    for path in inputs:
        found = path.stat()
        sources[(found.st_dev, found.st_ino)] = path
        sources[os.path.abspath(path)] = path
    return sources


def _check_target(target: Path, sources: dict[object, Path], *, temporary: bool = False) -> None:
    try:
        info = target.lstat()
    except FileNotFoundError:
        return
    # The same directory entry, or the same file (an input that is a link to it, or a
    # hard link of it).
    for key in ((info.st_dev, info.st_ino), os.path.abspath(target)):
        source = sources.get(key)
        if source is not None:
            raise ConfigError(
                f"{source}: refusing to write an output over an input ({target} is that file)"
            )
    if temporary:
        return
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(
            f"{target}: is a symbolic link (to {os.readlink(target)}); refusing to replace"
            " it: remove it or choose another --out"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{target}: exists and is not a regular file")


def create_new(path: Path) -> IO[bytes]:
    """A new, empty regular file at ``path``, open for writing; whatever was there (a
    stale temporary, a link) is removed first, never written through."""
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o666)
    except IsADirectoryError:
        raise ConfigError(f"{path}: exists and is a directory") from None
    except FileExistsError:
        raise ConfigError(f"{path}: created by someone else meanwhile (another run?)") from None
    return os.fdopen(fd, "wb", buffering=1 << 20)
