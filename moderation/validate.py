"""The validate stage: recognise each record's format, check it offline, split it into
segments and count its tokens, before any API call is spent on it.

Formats (``Example.format``):

``chat``
    OpenAI chat fine-tuning: ``{"messages": [...], "tools"?, "parallel_tool_calls"?,
    "functions"?}``. Roles ``system``, ``developer``, ``user``, ``assistant``, ``tool``,
    ``function``; content a string or a list of ``text`` / ``image_url`` parts (images
    in user messages only); assistant ``tool_calls`` / legacy ``function_call`` and
    ``weight`` (0 or 1); ``tool`` messages answer a ``tool_call_id``.
``preference``
    OpenAI DPO: ``{"input": {"messages": [...], "tools"?, ...}, "preferred_output":
    [assistant messages], "non_preferred_output": [assistant messages]}``. Segments of the
    non-preferred output get the role ``rejected``.
``prompt_completion``
    Legacy ``{"prompt": str, "completion": str}``: roles ``user`` and ``assistant``.
``text``
    ``{"text": str, ...}`` of pre-training corpora; any other keys are metadata.

The format is recognised by its keys (``messages``, then ``preferred_output`` /
``non_preferred_output`` / an ``input`` object with ``messages``, then ``completion`` or
``prompt``, then ``text``); a recognised record may still have problems. Problems are
errors (the example is quarantined, no API call is spent on it); warnings are recorded
and change nothing. The first seven codes are the OpenAI cookbook's ("Data preparation and
analysis for chat model fine-tuning"). Every ``detail`` has a ``path`` into the record
where there is one, and never the example's text.

===================================== ======= =====================================================
code                                  kind    meaning
===================================== ======= =====================================================
``data_type``                         error   the record is not a JSON object
``missing_messages_list``             error   ``messages`` (or ``input.messages``) is not a list
``message_missing_key``               error   a message lacks ``role``, ``content`` (required
                                              unless an assistant calls a tool) or, for role
                                              ``function``, ``name``; ``detail.key`` says which
``message_unrecognized_key``          error   a message has a key no role allows
``unrecognized_role``                 error   ``role`` is not one of the six roles
``missing_content``                   error   content is null, ``""`` or has no part with text or
                                              an image, and no tool call stands in
``example_missing_assistant_message`` error   a chat example has no assistant message
``unrecognized_format``               error   no known format; ``detail.keys`` lists the key names
                                              (never the values)
``empty_messages``                    error   ``messages`` is an empty list
``message_not_object``                error   a message is not a JSON object
``key_not_allowed_for_role``          error   a known key on the wrong role (``weight`` or
                                              ``tool_calls`` off an assistant, ``tool_call_id`` off
                                              a tool message)
``invalid_content``                   error   content is neither a string, a list nor null
``invalid_content_part``              error   a part is not an object, has no ``type``, a text
                                              part's ``text`` is not a string, or it has an unknown
                                              key
``unsupported_content_part_type``     error   a part type other than ``text``/``image_url``
``image_not_allowed_for_role``        error   an image outside a user message (OpenAI's vision
                                              fine-tuning takes images from users only)
``invalid_image_url``                 error   ``image_url`` is not ``{"url", "detail"?}`` with an
                                              https/http/``data:image/`` URL and detail
                                              ``auto``/``low``/``high``
``invalid_name``                      error   ``name`` is not a non-empty string
``invalid_weight``                    error   ``weight`` is not 0 or 1
``invalid_tool_calls``                error   ``tool_calls`` is not a non-empty list
``invalid_tool_call``                 error   a tool call is not ``{"id": str, "type": "function",
                                              "function": {"name": str, "arguments": str}}``
``invalid_function_call``             error   ``function_call`` is not ``{"name": str, "arguments":
                                              str}``
``tool_message_missing_tool_call_id`` error   a ``tool`` message has no ``tool_call_id``
``invalid_tool_call_id``              error   ``tool_call_id`` is not a non-empty string
``invalid_tools``                     error   ``tools`` is not a list of ``{"type": "function",
                                              "function": {"name", ...}}``
``invalid_functions``                 error   ``functions`` is not a list of ``{"name", ...}``
``invalid_parallel_tool_calls``       error   ``parallel_tool_calls`` is not a boolean
``missing_field``                     error   a required key is absent: ``input``,
                                              ``preferred_output``, ``non_preferred_output``,
                                              ``prompt``, ``completion``, ``text``
``invalid_field_type``                error   such a key has the wrong JSON type
``invalid_output``                    error   a preference output is not a list of messages
``empty_output``                      error   a preference output is an empty list
``output_role_not_assistant``         error   a preference output message is not an assistant's
``invalid_unicode``                   error   a text holds a lone UTF-16 surrogate (``\\ud800``
                                              escapes): it cannot be encoded or sent
``too_many_problems``                 error   more than 20 problems; ``detail.more`` counts the
                                              ones not listed
``unrecognized_key``                  warning a top-level key the format does not define (except
                                              ``text`` records, whose extra keys are metadata)
``no_system_message``                 warning no ``system`` or ``developer`` message
``no_user_message``                   warning no ``user`` message (in ``input`` for a pair)
``last_message_not_assistant``        warning a chat ends after its last assistant turn
``no_trained_assistant_message``      warning every assistant message has ``weight`` 0
``empty_content``                     warning a text that is empty or only whitespace where an
                                              empty text is allowed
``unmatched_tool_call_id``            warning a ``tool_call_id`` no earlier tool call has
``unknown_tool_name``                 warning a call to a function ``tools`` does not define
``tool_call_arguments_not_json``      warning tool-call ``arguments`` that do not parse as JSON
``identical_outputs``                 warning preferred and non-preferred outputs are equal
``too_many_warnings``                 warning more than 20 warnings were found
===================================== ======= =====================================================

Segments (text pieces that are not blank, and images) are made for valid records only:
an invalid example is quarantined before any moderation, so its list stays empty. Paths
look like ``messages[3].content``, ``messages[3].content[1].text``,
``messages[3].content[0].image_url``, ``messages[2].tool_calls[0].function.arguments``,
``input.messages[0].content``, ``preferred_output[0].content``, ``prompt``, ``text``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

from moderation._chat import check_chat, check_preference
from moderation._formats import (
    MAX_REASONS,
    Findings,
    check_prompt_completion,
    check_text,
    detect_format,
    json_type,
    safe_token,
)
from moderation.models import Example
from moderation.tokens import count_tokens

__all__ = [
    "CODES",
    "FORMATS",
    "MAX_REASONS",
    "detect_format",
    "validate",
    "validate_record",
]

FORMATS: Final = ("chat", "preference", "prompt_completion", "text")
"""The formats :func:`validate` recognises, as ``Example.format`` names them."""

CODES: Final[dict[str, Literal["error", "warning"]]] = {
    "data_type": "error",
    "missing_messages_list": "error",
    "message_missing_key": "error",
    "message_unrecognized_key": "error",
    "unrecognized_role": "error",
    "missing_content": "error",
    "example_missing_assistant_message": "error",
    "unrecognized_format": "error",
    "empty_messages": "error",
    "message_not_object": "error",
    "key_not_allowed_for_role": "error",
    "invalid_content": "error",
    "invalid_content_part": "error",
    "unsupported_content_part_type": "error",
    "image_not_allowed_for_role": "error",
    "invalid_image_url": "error",
    "invalid_name": "error",
    "invalid_weight": "error",
    "invalid_tool_calls": "error",
    "invalid_tool_call": "error",
    "invalid_function_call": "error",
    "tool_message_missing_tool_call_id": "error",
    "invalid_tool_call_id": "error",
    "invalid_tools": "error",
    "invalid_functions": "error",
    "invalid_parallel_tool_calls": "error",
    "missing_field": "error",
    "invalid_field_type": "error",
    "invalid_output": "error",
    "empty_output": "error",
    "output_role_not_assistant": "error",
    "invalid_unicode": "error",
    "too_many_problems": "error",
    "unrecognized_key": "warning",
    "no_system_message": "warning",
    "no_user_message": "warning",
    "last_message_not_assistant": "warning",
    "no_trained_assistant_message": "warning",
    "empty_content": "warning",
    "unmatched_tool_call_id": "warning",
    "unknown_tool_name": "warning",
    "tool_call_arguments_not_json": "warning",
    "identical_outputs": "warning",
    "too_many_warnings": "warning",
}
"""Every code the validate stage can produce, with its kind."""

_CHECKS: Final[dict[str, Callable[[dict[str, Any], Findings], None]]] = {
    "chat": check_chat,
    "preference": check_preference,
    "prompt_completion": check_prompt_completion,
    "text": check_text,
}


def validate_record(record: object) -> tuple[str | None, Findings]:
    """Check one parsed record: its format and what was found (problems, warnings,
    segments). :func:`validate` is this plus the bookkeeping on an :class:`Example`."""
    found = Findings()
    if not isinstance(record, dict):
        found.error("data_type", {"got": json_type(record)})
        found.finish()
        return None, found
    fmt = detect_format(record)
    if fmt is None:
        keys = [safe_token(key) for key in list(record)[:MAX_REASONS]]
        found.error("unrecognized_format", {"keys": keys, "key_count": len(record)})
    else:
        _CHECKS[fmt](record, found)
    found.finish()
    return fmt, found


def validate(example: Example) -> None:
    """Recognise the record's format, record problems (errors) and warnings, split it
    into segments and count its tokens. Mutates ``example``.

    An example whose line could not be parsed (``record is None``) already carries its
    problem and is left alone. Never raises on any JSON value.
    """
    record = example.record
    if record is None:
        return
    fmt, found = validate_record(record)
    example.format = fmt
    if found.problems:
        example.problems.extend(found.problems)
    if found.warnings:
        example.warnings.extend(found.warnings)
    if not example.problems:
        example.segments = found.segments
    example.tokens = count_tokens(example)
