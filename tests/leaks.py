"""Where a secret, or an example's text, must never show up.

:func:`assert_nowhere` searches a canary in every file under some directories (outputs,
caches: ``*.sqlite*`` and whatever else a run leaves) and in captured terminal output::

    assert_nowhere(CANARY, dirs=[tmp_path], texts={"stderr": err}, allow=[input_file])

A gate test adds its output with one more entry in ``texts``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["assert_nowhere", "find_canary"]


def _forms(canary: str) -> list[bytes]:
    # As written, and as JSON writes it with non-ASCII escaped.
    forms = [canary.encode()]
    escaped = canary.encode("ascii", "backslashreplace")
    if escaped not in forms:
        forms.append(escaped)
    return forms


def find_canary(
    canary: str,
    *,
    dirs: Iterable[Path] = (),
    texts: Mapping[str, str | bytes] | None = None,
    allow: Iterable[Path] = (),
) -> list[str]:
    """Every place ``canary`` occurs: ``path`` of files under ``dirs`` (recursively,
    hidden files and caches included, ``allow`` excepted) and names of ``texts``."""
    forms = _forms(canary)
    allowed = {Path(p).resolve() for p in allow}
    found: list[str] = []
    for name, text in (texts or {}).items():
        data = text.encode() if isinstance(text, str) else text
        if any(form in data for form in forms):
            found.append(name)
    for root in dirs:
        for folder, _, files in os.walk(root):
            for file in files:
                path = Path(folder, file)
                if path.resolve() in allowed or path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes()
                if any(form in data for form in forms):
                    found.append(str(path))
    return found


def assert_nowhere(
    canary: str,
    *,
    dirs: Iterable[Path] = (),
    texts: Mapping[str, str | bytes] | None = None,
    allow: Iterable[Path] = (),
) -> None:
    """Fail, naming each place, when ``canary`` occurs anywhere but in ``allow``."""
    found = find_canary(canary, dirs=dirs, texts=texts, allow=allow)
    assert not found, f"{canary!r} leaked into: {', '.join(found)}"
