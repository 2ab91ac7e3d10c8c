"""Offensive-language probability (``local/offensive``) from alt-profanity-check.

alt-profanity-check ships its model inside its wheel (a TF-IDF vectorizer and a
sigmoid-calibrated ensemble of 5 linear SVMs): nothing is downloaded. Importing it costs
about 0.9 s, so it is loaded on first use (or by :meth:`OffensiveClassifier.load`).

**Batching.** Every ``predict_prob`` call pays about 3 ms of scikit-learn input
validation whatever its size, so :meth:`OffensiveClassifier.predict` scores all its texts
in one batch. On top of that it uses a *fast path* that computes exactly what
``predict_prob`` computes (same analyzer, vocabulary, idf, l2 normalisation, linear
decision, sigmoid calibration and average, in the same summation order) with a few numpy
calls, which removes the fixed cost (about 0.05 ms instead of 3 ms a call). The fast path
is only used when the loaded model has the expected structure and reproduces
``predict_prob`` on a set of probe sentences when it is loaded; otherwise every batch goes
through ``predict_prob`` itself.

**Long texts** are split into chunks of whole sentences (or lines) of at most
``chunk_chars`` characters, and a text's score is the highest of its chunks. The model
is a bag of words trained on short comments, and its l2-normalised TF-IDF *dilutes*:
insults that score 0.99-1.0 alone drop to 0.02-0.8 with 300 characters of neutral text
around them, and below 0.05 with 1,000. Measured on 1,058 neutral texts (the standard library's
docstrings, mean 597 characters) and 300 of them with one insult inserted, the share
scoring at least 0.9 (the offline pack's threshold) was:

=============  ============  ===============
chunk chars    neutral       embedded insult
=============  ============  ===============
whole / 2000   0 %           17 %
300            0 %           33 %
200            0 %           59 %
**150**        **0 %**       **69 %**
100            0.09 %        81 %
=============  ============  ===============

so 150 it is (at the 0.5 level, 150 flags 0.19 % of the neutral texts). Texts of at most
``chunk_chars`` characters are scored whole, exactly as alt-profanity-check scores them.
Only the first ``max_chars`` characters are classified (the secret and personal-data
detectors still see everything).

False positives: the classifier is a bag of words. It scores quoted insults and plenty of
harmless slang at 0.5-0.8, which is why the offline policy thresholds it at 0.9 and why
user/tool segments escalate rather than flag.
"""

from __future__ import annotations

import importlib
import itertools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OffensiveClassifier"]

_FloatArray = npt.NDArray[np.float64]

# Probe sentences that must give identical scores through the fast path and
# predict_prob before the fast path is trusted.
_PROBES = (
    "",
    "a",
    "Have a wonderful day, and thank you for your help with the garden.",
    "you are a fucking idiot and I hate you",
    "What a piece of shit, go to hell you stupid bastard!!!",
    "The quarterly report shows revenue grew 12% year over year.",
    "Damn, that was close. Hell of a game though.",
    "Idiot idiot idiot idiot",
    "Ünïcödé têxt wïth äccents and 数字 123 and emoji 🙂",
    "kill the process with SIGKILL, then restart the daemon",
)


@dataclass(frozen=True, slots=True)
class _LinearModel:
    """The profanity model's arithmetic, without scikit-learn's per-call overhead."""

    expit: Callable[[npt.NDArray[Any]], _FloatArray]
    preprocess: Callable[[str], str]
    tokenize: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: _FloatArray
    weights: tuple[_FloatArray, ...]
    intercepts: tuple[float, ...]
    cal_a: tuple[float, ...]
    cal_b: tuple[float, ...]

    def predict(self, docs: Sequence[str]) -> _FloatArray:
        expit = self.expit
        n = len(docs)
        preprocess = self.preprocess
        tokenize = self.tokenize
        lengths: list[int] = []
        tokens: list[str] = []
        for doc in docs:
            found = tokenize(preprocess(doc))
            lengths.append(len(found))
            tokens.extend(found)
        ids = np.fromiter(
            map(self.vocabulary.get, tokens, itertools.repeat(-1)), dtype=np.intp, count=len(tokens)
        )
        rows = np.repeat(np.arange(n, dtype=np.intp), lengths)
        known = ids >= 0
        size = len(self.idf)
        # Sorting (row, column) keys gives scikit-learn's CSR order: rows in turn, sorted
        # column indices within a row; sums below then run in the same order.
        keys, counts = np.unique(rows[known] * size + ids[known], return_counts=True)
        row_ids = keys // size
        column = keys % size
        values = counts.astype(np.float64) * self.idf[column]
        norms = np.sqrt(np.bincount(row_ids, weights=values * values, minlength=n))
        norms[norms == 0.0] = 1.0
        values /= norms[row_ids]
        total = np.zeros(n, dtype=np.float64)
        for weights, intercept, a, b in zip(
            self.weights, self.intercepts, self.cal_a, self.cal_b, strict=True
        ):
            decision = np.bincount(row_ids, weights=values * weights[column], minlength=n)
            total += expit(-(a * (decision + intercept) + b))
        result: _FloatArray = total / len(self.weights)
        return result


def _build_fast_path(vectorizer: Any, model: Any) -> _LinearModel | None:
    """Extract the linear model, or ``None`` when the structure is not the expected one."""
    try:
        if vectorizer.sublinear_tf or not vectorizer.use_idf or vectorizer.norm != "l2":
            return None
        if vectorizer.analyzer != "word" or tuple(vectorizer.ngram_range) != (1, 1):
            return None
        if getattr(vectorizer, "binary", False) or getattr(model, "method", None) != "sigmoid":
            return None
        if list(model.classes_) != [0, 1]:
            return None
        vocabulary = dict(vectorizer.vocabulary_)
        # Stop-word removal can be skipped only because stop words were removed before
        # the vocabulary was built: none of them has a column.
        stop_words = vectorizer.get_stop_words() or frozenset()
        if any(word in vocabulary for word in stop_words):
            return None
        weights: list[_FloatArray] = []
        intercepts: list[float] = []
        cal_a: list[float] = []
        cal_b: list[float] = []
        for calibrated in model.calibrated_classifiers_:
            estimator = calibrated.estimator
            (calibrator,) = calibrated.calibrators
            coef = np.asarray(estimator.coef_, dtype=np.float64)
            if coef.shape != (1, len(vocabulary)):
                return None
            if not hasattr(calibrator, "a_") or not hasattr(calibrator, "b_"):
                return None
            weights.append(np.ascontiguousarray(coef[0]))
            intercepts.append(float(estimator.intercept_[0]))
            cal_a.append(float(calibrator.a_))
            cal_b.append(float(calibrator.b_))
        if not weights:
            return None
        # scikit-learn's sigmoid calibration uses scipy's expit (which has no type stubs).
        special = importlib.import_module("scipy.special")
        expit: Callable[[npt.NDArray[Any]], _FloatArray] = special.expit
        return _LinearModel(
            expit=expit,
            preprocess=vectorizer.build_preprocessor(),
            tokenize=vectorizer.build_tokenizer(),
            vocabulary=vocabulary,
            idf=np.asarray(vectorizer.idf_, dtype=np.float64),
            weights=tuple(weights),
            intercepts=tuple(intercepts),
            cal_a=tuple(cal_a),
            cal_b=tuple(cal_b),
        )
    except (AttributeError, TypeError, ValueError):
        return None


class _Loaded:
    def __init__(self) -> None:
        from profanity_check import predict_prob
        from profanity_check import profanity_check as module

        self.predict_prob: Callable[[list[str]], Any] = predict_prob
        fast = _build_fast_path(getattr(module, "vectorizer", None), getattr(module, "model", None))
        if fast is not None:
            expected = np.asarray(predict_prob(list(_PROBES)), dtype=np.float64)
            if not np.allclose(fast.predict(_PROBES), expected, rtol=0.0, atol=1e-12):
                fast = None
        self.fast = fast

    def predict(self, docs: Sequence[str]) -> _FloatArray:
        if self.fast is not None:
            return self.fast.predict(docs)
        return np.asarray(self.predict_prob(list(docs)), dtype=np.float64)


_LOCK = threading.Lock()
_LOADED: _Loaded | None = None


def _loaded() -> _Loaded:
    global _LOADED
    if _LOADED is None:
        with _LOCK:
            if _LOADED is None:
                _LOADED = _Loaded()
    return _LOADED


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n\s*")  # linear: each branch starts fixed


def _chunks(text: str, size: int) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` characters made of whole sentences
    (or lines); a sentence longer than ``size`` is cut at a space. A text of at most
    ``size`` characters is its own single chunk."""
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_BREAK.split(text):
        if not sentence:
            continue
        start = 0
        while len(sentence) - start > size:  # index arithmetic: no quadratic re-slicing
            cut = sentence.rfind(" ", start + size // 2, start + size)
            if cut < 0:
                cut = start + size
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[start:cut])
            start = cut
        rest = sentence[start:] if start else sentence
        if current and len(current) + 1 + len(rest) > size:
            pieces.append(current)
            current = rest
        else:
            current = f"{current} {rest}" if current else rest
    if current:
        pieces.append(current)
    return pieces or [text[:size]]


class OffensiveClassifier:
    """Probability that a text is offensive, from alt-profanity-check's model.

    ``chunk_chars``: texts longer than this are scored chunk by chunk (highest wins).
    ``max_chars``: only this many leading characters of a text are classified.
    """

    def __init__(self, *, chunk_chars: int = 150, max_chars: int = 1_048_576) -> None:
        if chunk_chars < 50:
            raise ValueError("chunk_chars must be at least 50")
        if max_chars < chunk_chars:
            raise ValueError("max_chars must be at least chunk_chars")
        self.chunk_chars = chunk_chars
        self.max_chars = max_chars

    def load(self) -> None:
        """Import the model now (about 0.9 s, once per process) instead of on first use."""
        _loaded()

    @property
    def loaded(self) -> bool:
        """True once the model is in memory (in this process)."""
        return _LOADED is not None

    @property
    def fast_path(self) -> bool:
        """True when scores come from the verified fast path (loads the model)."""
        return _loaded().fast is not None

    def predict(self, texts: Sequence[str]) -> list[float]:
        """One probability in [0, 1] per text, computed in a single batch."""
        if not texts:
            return []
        docs: list[str] = []
        owners: list[int] = []
        for owner, text in enumerate(texts):
            pieces = _chunks(text[: self.max_chars], self.chunk_chars)
            docs.extend(pieces)
            owners.extend([owner] * len(pieces))
        probabilities = _loaded().predict(docs)
        if len(docs) == len(texts):
            return [float(p) for p in probabilities]
        best = np.zeros(len(texts), dtype=np.float64)
        np.maximum.at(best, np.asarray(owners, dtype=np.intp), probabilities)
        return [float(p) for p in best]
