"""The ``local`` moderation provider: offline, deterministic, no key, no network.

:class:`LocalModerator` scores every text segment with

- ``local/offensive``: the probability from alt-profanity-check's classifier (always
  present, rounded to 4 decimals), see :mod:`._offensive`;
- ``secret/<kind>``: credentials and keys (:data:`SECRET_KINDS`), see :mod:`._secrets`;
- ``pii/<kind>``: personal data (:data:`PII_KINDS`), see :mod:`._pii`.

Detector categories appear in ``scores`` (with 1.0) only when detected, so results stay
compact. ``flagged`` lists the detections and ``local/offensive`` when it is at least 0.5;
the policy applies its own thresholds to ``scores``. Image segments get a
:class:`~moderation.models.SegmentError` with code ``unsupported_input``: this provider
cannot see images, and the policy decides what that means.

**Threads.** The classifier and the detectors hold the GIL (regex tokenisation, dict
lookups, small numpy calls), so running :meth:`LocalModerator.moderate` in a worker
thread buys no throughput. Measured with a concurrent parse/validate task on the same
event loop (10,000 segments of ~330 characters, 5 runs, median): batches of 100, inline
0.72 s vs thread 0.73 s wall; batches of 1,000, inline 0.83 s vs thread 1.00 s (GIL
contention), but the longest event-loop stall fell from ~170 ms to ~30 ms. Calls are
therefore run inline, and only calls with more than ``offload_chars`` characters of text
(default 256 KiB, e.g. a 1 MB segment) go to a thread, so that they do not freeze the
loop. The first call loads the model (about 1 s) in a thread for the same reason.

The detectors are also exported as pure functions (:func:`find_secrets`,
:func:`find_pii`, :func:`iter_secrets`, :func:`iter_pii`, :func:`redact`) for reuse, e.g.
to redact credentials from log lines.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from moderation.errors import ConfigError
from moderation.models import Segment, SegmentError, SegmentModeration
from moderation.providers import ProviderStats
from moderation.providers.local._offensive import OffensiveClassifier
from moderation.providers.local._pii import (
    PII_KINDS,
    card_brand,
    find_pii,
    iban_valid,
    iter_pii,
    luhn_valid,
)
from moderation.providers.local._secrets import (
    SECRET_KINDS,
    SECRET_PATTERNS,
    Detection,
    find_secrets,
    iter_secrets,
    looks_random,
    redact,
)

__all__ = [
    "CATEGORIES",
    "MODELS",
    "OFFENSIVE",
    "PII_KINDS",
    "SECRET_KINDS",
    "SECRET_PATTERNS",
    "Detection",
    "LocalModerator",
    "OffensiveClassifier",
    "card_brand",
    "find_pii",
    "find_secrets",
    "iban_valid",
    "iter_pii",
    "iter_secrets",
    "looks_random",
    "luhn_valid",
    "redact",
]

OFFENSIVE: Final = "local/offensive"
"""The offensive-language category (a probability, always present for text)."""

CATEGORIES: frozenset[str] = frozenset(
    {OFFENSIVE}
    | {f"secret/{kind}" for kind in SECRET_KINDS}
    | {f"pii/{kind}" for kind in PII_KINDS}
)
"""Every category :class:`LocalModerator` can report."""

MODELS: frozenset[str] = frozenset({"local-v1"})
"""Model names :class:`LocalModerator` accepts. ``local-v1`` is the detectors of this
package plus alt-profanity-check's bundled classifier."""

_OFFLOAD_CHARS = 256 * 1024


class LocalModerator:
    """Offline :class:`~moderation.providers.Moderator`: offensive-language classifier,
    credential detectors and personal-data detectors.

    ``model``: must be one of :data:`MODELS` (a policy naming another fails with
    :class:`~moderation.errors.ConfigError`, it is not silently ignored).
    ``offensive`` / ``secrets`` / ``pii``: switch a family of categories off (its
    categories then never appear). ``flag_offensive_at``: the probability from which the
    provider itself lists ``local/offensive`` in ``flagged``. ``chunk_chars`` /
    ``max_chars``: see :class:`OffensiveClassifier`. ``offload_chars``: a call whose texts
    total more characters than this runs in a worker thread (``None``: never), so that one
    huge batch does not hold up the event loop; smaller calls run inline, which is faster
    (the work holds the GIL either way; see this package's docstring for measurements).
    ``cache_size``: results of up to this many distinct texts of at most ``cache_chars``
    characters are kept (least recently used first out), so that a system prompt repeated
    in every example is scored once; a result depends only on the text, so the cache
    cannot change an answer. Repeated texts within one call are always scored once.
    """

    def __init__(
        self,
        model: str = "local-v1",
        *,
        offensive: bool = True,
        secrets: bool = True,
        pii: bool = True,
        flag_offensive_at: float = 0.5,
        chunk_chars: int = 150,
        max_chars: int = 1_048_576,
        offload_chars: int | None = _OFFLOAD_CHARS,
        cache_size: int = 2048,
        cache_chars: int = 2048,
    ) -> None:
        if model not in MODELS:
            raise ConfigError(
                f"unknown model {model!r} for the local moderation provider; "
                f"known: {', '.join(sorted(MODELS))}"
            )
        if not 0.0 <= flag_offensive_at <= 1.0:
            raise ConfigError("flag_offensive_at must be between 0 and 1")
        self._model = model
        self._offensive = (
            OffensiveClassifier(chunk_chars=chunk_chars, max_chars=max_chars) if offensive else None
        )
        self._secrets = secrets
        self._pii = pii
        self._flag_at = flag_offensive_at
        self._offload_chars = offload_chars
        self._stats = ProviderStats()
        self._cache: OrderedDict[str, SegmentModeration] = OrderedDict()
        self._cache_size = cache_size
        self._cache_chars = cache_chars
        self._cache_lock = threading.Lock()

    @property
    def name(self) -> str:
        """``"local"``."""
        return "local"

    @property
    def model(self) -> str:
        """The model name given to the constructor (``"local-v1"``)."""
        return self._model

    @property
    def stats(self) -> ProviderStats:
        """``calls`` counts the non-empty :meth:`moderate` calls (one batch each); it makes
        no API request."""
        return self._stats

    def load(self) -> None:
        """Load the classifier now (about 0.9 s once per process) rather than on the
        first :meth:`moderate` call."""
        if self._offensive is not None:
            self._offensive.load()

    async def moderate(self, segments: Sequence[Segment]) -> list[SegmentModeration | SegmentError]:
        """Score ``segments``; the result is aligned with the input.

        Text segments get a :class:`SegmentModeration`, image segments a
        :class:`SegmentError` (``unsupported_input``). All texts of the call are
        classified in one batch.
        """
        if not segments:
            return []
        self._stats.calls += 1
        if self._offensive is not None and not self._offensive.loaded:
            # The first use imports scikit-learn and the model (about 1 s): not on the loop.
            await asyncio.to_thread(self._offensive.load)
        size = sum(len(segment.text) for segment in segments)
        if self._offload_chars is not None and size > self._offload_chars:
            return await asyncio.to_thread(self.moderate_sync, segments)
        return self.moderate_sync(segments)

    def moderate_sync(self, segments: Sequence[Segment]) -> list[SegmentModeration | SegmentError]:
        """:meth:`moderate` without the event loop (does not count a request)."""
        results: list[SegmentModeration | SegmentError | None] = [None] * len(segments)
        pending: dict[str, list[int]] = {}
        cache = self._cache
        with self._cache_lock:
            for index, segment in enumerate(segments):
                if segment.kind != "text":
                    results[index] = SegmentError(
                        code="unsupported_input",
                        message=f"the local provider cannot moderate {segment.kind} segments",
                        provider=self.name,
                        model=self._model,
                    )
                    continue
                cached = cache.get(segment.text)
                if cached is not None:
                    cache.move_to_end(segment.text)
                    results[index] = cached
                else:
                    pending.setdefault(segment.text, []).append(index)
        if pending:
            texts = list(pending)
            if self._offensive is not None:
                probabilities: list[float | None] = list(self._offensive.predict(texts))
            else:
                probabilities = [None] * len(texts)
            scored = [self._score(t, p) for t, p in zip(texts, probabilities, strict=True)]
            with self._cache_lock:
                for text, result in zip(texts, scored, strict=True):
                    for index in pending[text]:
                        results[index] = result
                    if self._cache_size > 0 and len(text) <= self._cache_chars:
                        cache[text] = result
                        if len(cache) > self._cache_size:
                            cache.popitem(last=False)
        return [result for result in results if result is not None]

    def _score(self, text: str, probability: float | None) -> SegmentModeration:
        scores: dict[str, float] = {}
        flagged: list[str] = []
        if probability is not None:
            rounded = round(probability, 4)
            scores[OFFENSIVE] = rounded
            if rounded >= self._flag_at:
                flagged.append(OFFENSIVE)
        detected: list[str] = []
        if self._secrets:
            detected.extend(f"secret/{kind}" for kind in find_secrets(text))
        if self._pii:
            detected.extend(f"pii/{kind}" for kind in find_pii(text))
        detected.sort()
        for category in detected:
            scores[category] = 1.0
        flagged.extend(detected)
        return SegmentModeration(
            scores=scores, flagged=tuple(flagged), provider=self.name, model=self._model
        )

    async def aclose(self) -> None:
        """Nothing to release; present for the :class:`Moderator` protocol."""
