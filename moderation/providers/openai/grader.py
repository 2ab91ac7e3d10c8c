"""The ``openai`` grader: ``/v1/chat/completions`` with structured outputs, behind the
Grader protocol.

Each example is one request: the policy's rules in the system message, the example as
data between nonce delimiters in the user message (see :mod:`._prompt`), and a strict
JSON schema for the answer. Requests go through the same :class:`RetryLoop` and
:class:`RateLimiter` as the moderator's: transport failures and 429s are retried there.
What comes back is read strictly, failing closed:

======================================  =========================================
answer                                  result
======================================  =========================================
the verdict JSON, valid                 a :class:`Verdict`
``message.refusal`` set                 ``grade.refusal``
``finish_reason: length``               ``grade.truncated``
``finish_reason: content_filter``       ``grade.content_filter``
no content                              ``grade.empty``
content outside the schema              ``grade.invalid_answer``
a rule id the policy does not have      ``grade.unknown_rule``
a body that is not a chat completion    retried, then ``error.bad_response``
======================================  =========================================

Every ``grade.*`` reason quarantines the example (see :mod:`moderation.route`). Tokens
come from each response's ``usage``; cost from the policy's prices or the built-in
table (:mod:`._prices`).
"""

from __future__ import annotations

import json
from typing import Any

from openai import omit
from pydantic import BaseModel, ValidationError

from moderation.models import Reason, Verdict
from moderation.policy import GraderSpec
from moderation.providers import GradeRequest
from moderation.providers.openai._base import OpenAIProvider
from moderation.providers.openai._client import DEFAULT_TIMEOUT
from moderation.providers.openai._prices import price_for
from moderation.providers.openai._prompt import system_prompt, user_message, verdict_schema
from moderation.providers.openai._retry import Failure, MalformedResponse, RawResponse
from moderation.providers.openai.moderator import estimate_tokens

__all__ = ["DEFAULT_GRADER_MODEL", "OpenAIGrader", "read_answer"]

DEFAULT_GRADER_MODEL = "gpt-4o-mini"


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    finish_reason: str | None = None
    message: _Message


class _Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(BaseModel):
    """The part of a chat completion we read. Lenient about the rest, so any
    OpenAI-compatible server's answer is accepted when these fields are right."""

    choices: list[_Choice]
    usage: _Usage | None = None
    model: str | None = None


def _grade_reason(code: str, why: str, **detail: Any) -> Reason:
    return Reason(stage="grade", code=code, detail={"why": why, **detail})


def read_answer(completion: _Completion, rule_ids: frozenset[str]) -> Verdict | Reason:
    """The verdict in a chat completion, or the ``grade.*`` reason there is none.

    Never quotes the answer's text in a reason: a model may echo the example.
    """
    choice = completion.choices[0]
    if choice.message.refusal:
        return _grade_reason("refusal", "the model refused to judge the example")
    if choice.finish_reason == "length":
        return _grade_reason("truncated", "the answer was cut off at the output token limit")
    if choice.finish_reason == "content_filter":
        return _grade_reason("content_filter", "the provider's content filter stopped the answer")
    content = (choice.message.content or "").strip()
    if not content:
        return _grade_reason("empty", "the answer had no content")
    try:
        data = json.loads(content)
    except ValueError:
        return _grade_reason("invalid_answer", "the answer is not JSON")
    try:
        verdict = Verdict.model_validate(data)
    except ValidationError as exc:
        # Error types only: a field's name is the model's text, which can be the example's.
        kinds = sorted({e["type"] for e in exc.errors()})
        return _grade_reason(
            "invalid_answer", "the answer does not match the verdict schema", errors=kinds
        )
    if verdict.rule is not None and verdict.rule not in rule_ids:
        return _grade_reason("unknown_rule", "the answer names a rule the policy does not have")
    if verdict.verdict == "violation" and verdict.rule is None:
        return _grade_reason("invalid_answer", "a violation must name the rule it breaks")
    return verdict


class OpenAIGrader(OpenAIProvider[GraderSpec]):
    """Judges examples with a chat model (OpenAI or any compatible server).

    ``OpenAIGrader(spec, client=None, *, timeout=None, max_attempts=None, ...)``:
    without a client one is built from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` and
    closed by :meth:`aclose`; the default timeout is 60 s an attempt. The rest of the
    construction, client ownership and test hooks: see :class:`OpenAIProvider`.
    """

    DEFAULT_MODEL = DEFAULT_GRADER_MODEL
    DEFAULT_TIMEOUT = DEFAULT_TIMEOUT

    def _configure(self) -> None:
        self._price = price_for(self._model, self._spec.prices)
        if self._price is None:
            self._stats.cost_usd = None
        self._rule_ids = frozenset(rule.id for rule in self._spec.rules)
        self._schema = verdict_schema(sorted(self._rule_ids))
        # The system message depends on the rules only: built once per rule set.
        self._system: tuple[tuple[dict[str, Any], ...], str, int] | None = None

    def _system_message(self, rules: tuple[dict[str, Any], ...]) -> tuple[str, int]:
        if self._system is None or self._system[0] != rules:
            prompt = system_prompt(rules)
            self._system = (rules, prompt, estimate_tokens(prompt))
        return self._system[1], self._system[2]

    async def grade(self, request: GradeRequest) -> Verdict | Reason:
        """Judge one example. Raises only :class:`~moderation.errors.ProviderFatalError`."""
        system, system_tokens = self._system_message(request.rules)
        user = user_message(request.segments, request.findings)
        messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        tokens = system_tokens + estimate_tokens(user) + self._spec.max_output_tokens

        limit = self._spec.max_output_tokens
        by_completion = self._spec.output_limit_param == "max_completion_tokens"

        async def send() -> RawResponse:
            return await self._client.chat.completions.with_raw_response.create(
                model=self._model,
                messages=messages,
                response_format=self._schema,
                max_completion_tokens=limit if by_completion else omit,
                max_tokens=omit if by_completion else limit,
                temperature=omit if self._spec.temperature is None else self._spec.temperature,
            )

        outcome = await self._retry.call(send, self._parse, tokens=tokens)
        if isinstance(outcome, Failure):
            return Reason(
                stage="error",
                code=outcome.code,
                detail={
                    "provider": self.name,
                    "model": self._model,
                    "message": outcome.message,
                    "attempts": outcome.attempts,
                },
            )
        return outcome

    def _parse(self, raw: RawResponse) -> Verdict | Reason:
        try:
            completion = _Completion.model_validate_json(raw.content)
        except ValidationError:
            raise MalformedResponse("the response is not a chat completion") from None
        if not completion.choices:
            raise MalformedResponse("the response has no choices")
        if completion.usage is not None:
            self._count(completion.usage)
        return read_answer(completion, self._rule_ids)

    def _count(self, usage: _Usage) -> None:
        self._stats.input_tokens += usage.prompt_tokens
        self._stats.output_tokens += usage.completion_tokens
        if self._price is not None and self._stats.cost_usd is not None:
            self._stats.cost_usd += self._price.cost(usage.prompt_tokens, usage.completion_tokens)
