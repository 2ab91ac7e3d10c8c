"""The validate stage: formats, every problem and warning code, segments, and that it
never raises on any JSON value."""

from __future__ import annotations

import copy
import re
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moderation.validate as validate_module
from moderation.models import Example, Reason
from moderation.tokens import count_tokens, set_token_method
from moderation.validate import CODES, FORMATS, MAX_REASONS, detect_format, validate

# Every text in the cases carries this marker, so we can check no detail ever quotes one.
S = "SENSITIVE"


@pytest.fixture(autouse=True)
def _estimate_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    import moderation.tokens as tokens

    monkeypatch.setattr(tokens, "_active", None)
    monkeypatch.setattr(tokens, "_requested", "auto")
    set_token_method("estimate")


def run(record: Any) -> Example:
    example = Example(source="t.jsonl", line=1, raw=b"", hash="h", record=record)
    validate(example)
    return example


def sys_(text: str = f"{S} be brief") -> dict[str, Any]:
    return {"role": "system", "content": text}


def user(text: str = f"{S} user asks") -> dict[str, Any]:
    return {"role": "user", "content": text}


def asst(text: Any = f"{S} assistant answers", **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **extra}


def chat(*messages: Any, **top: Any) -> dict[str, Any]:
    return {"messages": list(messages), **top}


def call(
    call_id: str = "call_1", name: str = "get_weather", args: str = '{"city": "Paris"}'
) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}


def image(url: str = "https://example.com/a.png", **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def text_part(text: str = f"{S} part") -> dict[str, Any]:
    return {"type": "text", "text": text}


def pair(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "input": {"messages": [sys_(), user()]},
        "preferred_output": [asst(f"{S} good")],
        "non_preferred_output": [asst(f"{S} bad")],
    }
    record.update(overrides)
    return record


# ------------------------------------------------------------------------- valid records

# (id, record, format, [(path, role, kind)], warnings)
VALID: list[tuple[str, dict[str, Any], str, list[tuple[str, str, str]], set[str]]] = [
    (
        "chat-basic",
        chat(sys_(), user(), asst()),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-developer-counts-as-system",
        chat({"role": "developer", "content": f"{S} rules"}, user(), asst()),
        "chat",
        [
            ("messages[0].content", "developer", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-multi-turn-with-names",
        chat(
            sys_(),
            {"role": "user", "content": f"{S} q1", "name": "alice"},
            asst(name="bot"),
            user(),
            asst(),
        ),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].content", "assistant", "text"),
            ("messages[3].content", "user", "text"),
            ("messages[4].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-image-parts",
        chat(
            sys_(),
            {"role": "user", "content": [text_part(), IMAGE, image("data:image/png;base64,AAAA")]},
            asst(),
        ),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content[0].text", "user", "text"),
            ("messages[1].content[1].image_url", "user", "image"),
            ("messages[1].content[2].image_url", "user", "image"),
            ("messages[2].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-assistant-text-parts",
        chat(sys_(), user(), {"role": "assistant", "content": [text_part(), text_part()]}),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].content[0].text", "assistant", "text"),
            ("messages[2].content[1].text", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-tool-calls",
        chat(
            sys_(),
            user(),
            {"role": "assistant", "content": None, "tool_calls": [call()]},
            {"role": "tool", "tool_call_id": "call_1", "content": f"{S} 21C"},
            asst(),
            tools=TOOLS,
            parallel_tool_calls=False,
        ),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].tool_calls[0].function.arguments", "assistant", "text"),
            ("messages[3].content", "tool", "text"),
            ("messages[4].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-tool-calls-without-content-key-and-empty-content",
        chat(
            sys_(),
            user(),
            {"role": "assistant", "tool_calls": [call("a"), call("b", args="")]},
            {"role": "tool", "tool_call_id": "a", "content": f"{S} 1", "name": "get_weather"},
            {"role": "tool", "tool_call_id": "b", "content": f"{S} 2"},
            {"role": "assistant", "content": "", "tool_calls": [call("c")]},
            {"role": "tool", "tool_call_id": "c", "content": f"{S} 3"},
            asst(),
        ),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].tool_calls[0].function.arguments", "assistant", "text"),
            ("messages[3].content", "tool", "text"),
            ("messages[4].content", "tool", "text"),
            ("messages[5].tool_calls[0].function.arguments", "assistant", "text"),
            ("messages[6].content", "tool", "text"),
            ("messages[7].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-legacy-function-call",
        chat(
            sys_(),
            user(),
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": f"{S} result"},
            asst(),
            functions=[{"name": "f", "parameters": {"type": "object"}}],
        ),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].function_call.arguments", "assistant", "text"),
            ("messages[3].content", "function", "text"),
            ("messages[4].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "chat-weights",
        chat(sys_(), user(), asst(weight=0), user(), asst(weight=1), user(), asst(weight=1.0)),
        "chat",
        [
            (f"messages[{i}].content", r, "text")
            for i, r in enumerate(["system"] + ["user", "assistant"] * 3)
        ],
        set(),
    ),
    (
        "chat-null-optional-fields",
        chat(sys_(), user(), asst(tool_calls=None, function_call=None, name=None)),
        "chat",
        [
            ("messages[0].content", "system", "text"),
            ("messages[1].content", "user", "text"),
            ("messages[2].content", "assistant", "text"),
        ],
        set(),
    ),
    (
        "preference",
        pair(),
        "preference",
        [
            ("input.messages[0].content", "system", "text"),
            ("input.messages[1].content", "user", "text"),
            ("preferred_output[0].content", "assistant", "text"),
            ("non_preferred_output[0].content", "rejected", "text"),
        ],
        set(),
    ),
    (
        "preference-with-tools",
        pair(
            input={"messages": [sys_(), user()], "tools": TOOLS, "parallel_tool_calls": True},
            preferred_output=[{"role": "assistant", "tool_calls": [call("x")]}],
            non_preferred_output=[
                {"role": "assistant", "content": None, "tool_calls": [call("y")]}
            ],
        ),
        "preference",
        [
            ("input.messages[0].content", "system", "text"),
            ("input.messages[1].content", "user", "text"),
            ("preferred_output[0].tool_calls[0].function.arguments", "assistant", "text"),
            ("non_preferred_output[0].tool_calls[0].function.arguments", "rejected", "text"),
        ],
        set(),
    ),
    (
        "preference-image-input",
        pair(input={"messages": [{"role": "user", "content": [IMAGE, text_part()]}]}),
        "preference",
        [
            ("input.messages[0].content[0].image_url", "user", "image"),
            ("input.messages[0].content[1].text", "user", "text"),
            ("preferred_output[0].content", "assistant", "text"),
            ("non_preferred_output[0].content", "rejected", "text"),
        ],
        set(),
    ),
    (
        "prompt-completion",
        {"prompt": f"{S} p", "completion": f"{S} c"},
        "prompt_completion",
        [("prompt", "user", "text"), ("completion", "assistant", "text")],
        set(),
    ),
    (
        "prompt-completion-empty-prompt",
        {"prompt": "", "completion": f"{S} c"},
        "prompt_completion",
        [("completion", "assistant", "text")],
        set(),
    ),
    (
        "text",
        {"text": f"{S} corpus", "id": 7, "url": "https://x", "meta": {"lang": "en"}},
        "text",
        [("text", "text", "text")],
        set(),
    ),
    (
        "text-with-input-metadata",
        {"text": f"{S} corpus", "input": "x", "prompt": "y"},
        "text",
        [("text", "text", "text")],
        set(),
    ),
]


@pytest.mark.parametrize(
    ("record", "fmt", "segments", "warnings"),
    [case[1:] for case in VALID],
    ids=[case[0] for case in VALID],
)
def test_valid_records(
    record: dict[str, Any], fmt: str, segments: list[tuple[str, str, str]], warnings: set[str]
) -> None:
    before = copy.deepcopy(record)
    example = run(record)
    assert example.problems == []
    assert example.format == fmt
    assert {w.code for w in example.warnings} == warnings
    assert [(s.path, s.role, s.kind) for s in example.segments] == segments
    assert record == before, "validate must not change the record"
    for segment in example.segments:
        assert resolve(record, segment.path) == (
            segment.image_url if segment.kind == "image" else segment.text
        )
        if segment.kind == "image":
            assert segment.text == ""
            assert segment.image_url
    assert example.tokens == count_tokens(example) > 0


def test_image_segment_carries_url() -> None:
    example = run(chat(sys_(), {"role": "user", "content": [IMAGE]}, asst()))
    (image_segment,) = [s for s in example.segments if s.kind == "image"]
    assert image_segment.image_url == "https://example.com/a.png"
    assert image_segment.path == "messages[1].content[0].image_url"


def test_blank_texts_make_no_segment() -> None:
    example = run(chat(sys_(), {"role": "user", "content": [text_part(" \n"), IMAGE]}, asst()))
    assert example.problems == []
    assert [s.path for s in example.segments] == [
        "messages[0].content",
        "messages[1].content[1].image_url",
        "messages[2].content",
    ]
    assert [w.code for w in example.warnings] == ["empty_content"]


# ------------------------------------------------------------------------------ warnings

# (id, record, warning codes, path of the first warning)
WARNINGS: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("no-system", chat(user(), asst()), ["no_system_message"], "messages"),
    ("no-user", chat(sys_(), asst()), ["no_user_message"], "messages"),
    (
        "last-not-assistant",
        chat(sys_(), user(), asst(), user()),
        ["last_message_not_assistant"],
        "messages[3]",
    ),
    (
        "all-weights-zero",
        chat(sys_(), user(), asst(weight=0), user(), asst(weight=0)),
        ["no_trained_assistant_message"],
        "messages",
    ),
    (
        "blank-user-content",
        chat(sys_(), user("  \t"), asst()),
        ["empty_content"],
        "messages[1].content",
    ),
    (
        "blank-text-part",
        chat(sys_(), {"role": "user", "content": [text_part(), text_part("  ")]}, asst()),
        ["empty_content"],
        "messages[1].content[1].text",
    ),
    ("blank-text-record", {"text": "   "}, ["empty_content"], "text"),
    ("empty-text-record", {"text": ""}, ["empty_content"], "text"),
    ("empty-completion", {"prompt": f"{S} p", "completion": ""}, ["empty_content"], "completion"),
    ("chat-extra-top-key", chat(sys_(), user(), asst(), id=5), ["unrecognized_key"], "id"),
    (
        "prompt-completion-extra-key",
        {"prompt": "p", "completion": f"{S} c", "source": "x"},
        ["unrecognized_key"],
        "source",
    ),
    ("preference-extra-key", pair(meta={}), ["unrecognized_key"], "meta"),
    (
        "preference-input-extra-key",
        pair(input={"messages": [sys_(), user()], "metadata": {}}),
        ["unrecognized_key"],
        "input.metadata",
    ),
    (
        "preference-no-user",
        pair(input={"messages": [sys_()]}),
        ["no_user_message"],
        "input.messages",
    ),
    (
        "unmatched-tool-call-id",
        chat(
            sys_(),
            user(),
            {"role": "assistant", "tool_calls": [call("a")]},
            {"role": "tool", "tool_call_id": "b", "content": f"{S} r"},
            asst(),
        ),
        ["unmatched_tool_call_id"],
        "messages[3].tool_call_id",
    ),
    (
        "unknown-tool-name",
        chat(
            sys_(),
            user(),
            {"role": "assistant", "tool_calls": [call("a", name="get_time")]},
            {"role": "tool", "tool_call_id": "a", "content": f"{S} r"},
            asst(),
            tools=TOOLS,
        ),
        ["unknown_tool_name"],
        "messages[2].tool_calls[0].function.name",
    ),
    (
        "arguments-not-json",
        chat(
            sys_(),
            user(),
            {"role": "assistant", "tool_calls": [call("a", args=f"{S} not json")]},
            {"role": "tool", "tool_call_id": "a", "content": f"{S} r"},
            asst(),
        ),
        ["tool_call_arguments_not_json"],
        "messages[2].tool_calls[0].function.arguments",
    ),
    (
        "identical-outputs",
        pair(preferred_output=[asst("same")], non_preferred_output=[asst("same")]),
        ["identical_outputs"],
        "non_preferred_output",
    ),
    (
        "too-many-warnings",
        chat(
            sys_(),
            user(),
            *[{"role": "tool", "tool_call_id": f"t{i}", "content": f"{S}"} for i in range(25)],
            asst(),
        ),
        ["unmatched_tool_call_id"] * MAX_REASONS + ["too_many_warnings"],
        "messages[2].tool_call_id",
    ),
]


@pytest.mark.parametrize(
    ("record", "codes", "path"), [c[1:] for c in WARNINGS], ids=[c[0] for c in WARNINGS]
)
def test_warnings_do_not_invalidate(record: dict[str, Any], codes: list[str], path: str) -> None:
    example = run(record)
    assert example.problems == []
    assert example.valid
    assert [w.code for w in example.warnings] == codes
    assert example.warnings[0].detail["path"] == path
    assert all(w.stage == "validate" for w in example.warnings)
    if str(record.get("text", "x")).strip():  # (a blank text record has nothing to moderate)
        assert example.segments, "a record with only warnings is still moderated"


def test_too_many_warnings_counts_the_rest() -> None:
    record = WARNINGS[-1][1]
    example = run(record)
    assert example.warnings[-1].detail == {"more": 25 - MAX_REASONS}


# ------------------------------------------------------------------------------ problems

LONG_ROLE = f"{S} " * 20

# (id, record, exact set of problem codes, a path one of them has)
ERRORS: list[tuple[str, Any, set[str], str | None]] = [
    ("unrecognized-format", {"foo": 1, "bar": f"{S}"}, {"unrecognized_format"}, None),
    ("empty-object", {}, {"unrecognized_format"}, None),
    ("alpaca", {"instruction": S, "input": S, "output": S}, {"unrecognized_format"}, None),
    ("trl-preference", {"prompt": S, "chosen": S, "rejected": S}, {"missing_field"}, "completion"),
    ("messages-string", {"messages": f"{S}"}, {"missing_messages_list"}, "messages"),
    ("messages-null", {"messages": None}, {"missing_messages_list"}, "messages"),
    ("messages-empty", {"messages": []}, {"empty_messages"}, "messages"),
    ("message-not-object", chat(user(), f"{S}", asst()), {"message_not_object"}, "messages[1]"),
    ("missing-role", chat({"content": S}, user(), asst()), {"message_missing_key"}, "messages[0]"),
    (
        "missing-content",
        chat(user(), {"role": "assistant"}),
        {"message_missing_key"},
        "messages[1]",
    ),
    (
        "function-message-missing-name",
        chat(
            user(),
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "content": S},
            asst(),
        ),
        {"message_missing_key"},
        "messages[2]",
    ),
    (
        "message-unrecognized-key",
        chat({**user(), "foo": 1}, asst()),
        {"message_unrecognized_key"},
        "messages[0]",
    ),
    (
        "weight-on-user",
        chat({**user(), "weight": 1}, asst()),
        {"key_not_allowed_for_role"},
        "messages[0]",
    ),
    (
        "tool-calls-on-user",
        chat({**user(), "tool_calls": [call()]}, asst()),
        {"key_not_allowed_for_role"},
        "messages[0]",
    ),
    (
        "tool-call-id-on-assistant",
        chat(user(), asst(tool_call_id="x")),
        {"key_not_allowed_for_role"},
        "messages[1]",
    ),
    (
        "role-robot",
        chat({"role": "robot", "content": S}, asst()),
        {"unrecognized_role"},
        "messages[0].role",
    ),
    (
        "role-number",
        chat({"role": 5, "content": S}, asst()),
        {"unrecognized_role"},
        "messages[0].role",
    ),
    ("role-case", chat({"role": "User", "content": S}, asst()), {"unrecognized_role"}, None),
    ("role-text", chat({"role": LONG_ROLE, "content": S}, asst()), {"unrecognized_role"}, None),
    ("assistant-null", chat(user(), asst(None)), {"missing_content"}, "messages[1].content"),
    ("user-empty-string", chat(user(""), asst()), {"missing_content"}, "messages[0].content"),
    ("user-empty-list", chat({"role": "user", "content": []}, asst()), {"missing_content"}, None),
    (
        "user-only-empty-parts",
        chat({"role": "user", "content": [text_part("")]}, asst()),
        {"missing_content"},
        "messages[0].content",
    ),
    ("no-assistant", chat(sys_(), user()), {"example_missing_assistant_message"}, "messages"),
    ("content-number", chat(user(), asst(5)), {"invalid_content"}, "messages[1].content"),
    (
        "content-object",
        chat({"role": "user", "content": {"text": S}}, asst()),
        {"invalid_content"},
        None,
    ),
    (
        "part-not-object",
        chat({"role": "user", "content": [S]}, asst()),
        {"invalid_content_part", "missing_content"},
        "messages[0].content[0]",
    ),
    (
        "part-without-type",
        chat({"role": "user", "content": [text_part(), {"text": S}]}, asst()),
        {"invalid_content_part"},
        "messages[0].content[1]",
    ),
    (
        "text-part-not-string",
        chat({"role": "user", "content": [text_part(), {"type": "text", "text": 5}]}, asst()),
        {"invalid_content_part"},
        "messages[0].content[1].text",
    ),
    (
        "text-part-extra-key",
        chat({"role": "user", "content": [{**text_part(), "cache": 1}]}, asst()),
        {"invalid_content_part"},
        "messages[0].content[0]",
    ),
    (
        "image-part-extra-key",
        chat({"role": "user", "content": [{**IMAGE, "x": 1}]}, asst()),
        {"invalid_content_part"},
        "messages[0].content[0]",
    ),
    (
        "audio-part",
        chat({"role": "user", "content": [text_part(), {"type": "input_audio"}]}, asst()),
        {"unsupported_content_part_type"},
        "messages[0].content[1].type",
    ),
    (
        "image-in-assistant",
        chat(user(), {"role": "assistant", "content": [text_part(), IMAGE]}),
        {"image_not_allowed_for_role"},
        "messages[1].content[1]",
    ),
    (
        "image-in-system",
        chat({"role": "system", "content": [IMAGE]}, user(), asst()),
        {"image_not_allowed_for_role"},
        "messages[0].content[0]",
    ),
    (
        "image-url-string",
        chat(
            {
                "role": "user",
                "content": [text_part(), {"type": "image_url", "image_url": "https://x"}],
            },
            asst(),
        ),
        {"invalid_image_url"},
        "messages[0].content[1].image_url",
    ),
    (
        "image-url-missing-url",
        chat(
            {"role": "user", "content": [text_part(), {"type": "image_url", "image_url": {}}]},
            asst(),
        ),
        {"invalid_image_url"},
        "messages[0].content[1].image_url.url",
    ),
    (
        "image-url-ftp",
        chat({"role": "user", "content": [text_part(), image("ftp://x/a.png")]}, asst()),
        {"invalid_image_url"},
        "messages[0].content[1].image_url.url",
    ),
    (
        "image-url-bad-detail",
        chat({"role": "user", "content": [image(detail="ultra")]}, asst()),
        {"invalid_image_url"},
        "messages[0].content[0].image_url.detail",
    ),
    (
        "image-url-unhashable-detail",
        chat({"role": "user", "content": [image(detail=[])]}, asst()),
        {"invalid_image_url"},
        "messages[0].content[0].image_url.detail",
    ),
    (
        "image-url-extra-key",
        chat({"role": "user", "content": [image(size=3)]}, asst()),
        {"invalid_image_url"},
        "messages[0].content[0].image_url",
    ),
    ("name-number", chat({**user(), "name": 5}, asst()), {"invalid_name"}, "messages[0].name"),
    ("name-empty", chat(user(), asst(name="")), {"invalid_name"}, "messages[1].name"),
    ("weight-2", chat(user(), asst(weight=2)), {"invalid_weight"}, "messages[1].weight"),
    ("weight-half", chat(user(), asst(weight=0.5)), {"invalid_weight"}, "messages[1].weight"),
    ("weight-string", chat(user(), asst(weight="1")), {"invalid_weight"}, "messages[1].weight"),
    ("weight-bool", chat(user(), asst(weight=True)), {"invalid_weight"}, "messages[1].weight"),
    ("weight-null", chat(user(), asst(weight=None)), {"invalid_weight"}, "messages[1].weight"),
    (
        "tool-calls-object",
        chat(user(), asst(tool_calls={})),
        {"invalid_tool_calls"},
        "messages[1].tool_calls",
    ),
    (
        "tool-calls-empty",
        chat(user(), asst(tool_calls=[])),
        {"invalid_tool_calls"},
        "messages[1].tool_calls",
    ),
    (
        "tool-calls-empty-no-content",
        chat(user(), {"role": "assistant", "tool_calls": []}),
        {"invalid_tool_calls", "message_missing_key"},
        "messages[1].tool_calls",
    ),
    (
        "tool-call-string",
        chat(user(), asst(tool_calls=[S])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0]",
    ),
    (
        "tool-call-no-id",
        chat(user(), asst(tool_calls=[{k: v for k, v in call().items() if k != "id"}])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0].id",
    ),
    (
        "tool-call-bad-type",
        chat(user(), asst(tool_calls=[{**call(), "type": "fn"}])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0].type",
    ),
    (
        "tool-call-function-string",
        chat(user(), asst(tool_calls=[{**call(), "function": S}])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0].function",
    ),
    (
        "tool-call-no-name",
        chat(user(), asst(tool_calls=[{**call(), "function": {"arguments": "{}"}}])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0].function.name",
    ),
    (
        "tool-call-arguments-object",
        chat(user(), asst(tool_calls=[{**call(), "function": {"name": "f", "arguments": {}}}])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "tool-call-extra-key",
        chat(user(), asst(tool_calls=[{**call(), "index": 0}])),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0]",
    ),
    (
        "tool-call-function-extra-key",
        chat(
            user(),
            asst(tool_calls=[{**call(), "function": {"name": "f", "arguments": "", "x": 1}}]),
        ),
        {"invalid_tool_call"},
        "messages[1].tool_calls[0].function",
    ),
    (
        "only-bad-tool-call-and-null-content",
        chat(
            user(), {"role": "assistant", "content": None, "tool_calls": [{**call(), "type": "x"}]}
        ),
        {"invalid_tool_call", "missing_content"},
        "messages[1].content",
    ),
    (
        "function-call-string",
        chat(user(), asst(function_call=S)),
        {"invalid_function_call"},
        "messages[1].function_call",
    ),
    (
        "function-call-no-arguments",
        chat(user(), asst(function_call={"name": "f"})),
        {"invalid_function_call"},
        "messages[1].function_call.arguments",
    ),
    (
        "function-call-arguments-number",
        chat(user(), asst(function_call={"name": "f", "arguments": 1})),
        {"invalid_function_call"},
        "messages[1].function_call.arguments",
    ),
    (
        "tool-message-without-id",
        chat(user(), asst(tool_calls=[call()]), {"role": "tool", "content": S}, asst()),
        {"tool_message_missing_tool_call_id"},
        "messages[2]",
    ),
    (
        "tool-call-id-number",
        chat(
            user(),
            asst(tool_calls=[call()]),
            {"role": "tool", "content": S, "tool_call_id": 5},
            asst(),
        ),
        {"invalid_tool_call_id"},
        "messages[2].tool_call_id",
    ),
    (
        "tool-call-id-empty",
        chat(
            user(),
            asst(tool_calls=[call()]),
            {"role": "tool", "content": S, "tool_call_id": ""},
            asst(),
        ),
        {"invalid_tool_call_id"},
        "messages[2].tool_call_id",
    ),
    ("tools-object", chat(user(), asst(), tools={}), {"invalid_tools"}, "tools"),
    (
        "tools-retrieval",
        chat(user(), asst(), tools=[{"type": "retrieval"}]),
        {"invalid_tools"},
        "tools[0]",
    ),
    (
        "tools-function-missing",
        chat(user(), asst(), tools=[{"type": "function"}]),
        {"invalid_tools"},
        "tools[0].function",
    ),
    (
        "tools-no-name",
        chat(user(), asst(), tools=[{"type": "function", "function": {"description": "d"}}]),
        {"invalid_tools"},
        "tools[0].function.name",
    ),
    (
        "tools-parameters-string",
        chat(
            user(),
            asst(),
            tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}],
        ),
        {"invalid_tools"},
        "tools[0].function.parameters",
    ),
    (
        "tools-description-number",
        chat(
            user(),
            asst(),
            tools=[{"type": "function", "function": {"name": "f", "description": 1}}],
        ),
        {"invalid_tools"},
        "tools[0].function.description",
    ),
    ("functions-string", chat(user(), asst(), functions=S), {"invalid_functions"}, "functions"),
    (
        "functions-no-name",
        chat(user(), asst(), functions=[{"name": 5}]),
        {"invalid_functions"},
        "functions[0].name",
    ),
    (
        "parallel-tool-calls-string",
        chat(user(), asst(), parallel_tool_calls="yes"),
        {"invalid_parallel_tool_calls"},
        "parallel_tool_calls",
    ),
    (
        "preference-input-tools",
        pair(input={"messages": [user()], "tools": S}),
        {"invalid_tools"},
        "input.tools",
    ),
    ("preference-missing-input", pair(input=None), {"invalid_field_type"}, "input"),
    (
        "preference-no-input",
        {k: v for k, v in pair().items() if k != "input"},
        {"missing_field"},
        "input",
    ),
    (
        "preference-no-non-preferred",
        {k: v for k, v in pair().items() if k != "non_preferred_output"},
        {"missing_field"},
        "non_preferred_output",
    ),
    ("preference-input-no-messages", pair(input={}), {"missing_messages_list"}, "input.messages"),
    ("preference-input-empty", pair(input={"messages": []}), {"empty_messages"}, "input.messages"),
    ("preference-input-string", pair(input=S), {"invalid_field_type"}, "input"),
    (
        "preference-output-object",
        pair(preferred_output=asst()),
        {"invalid_output"},
        "preferred_output",
    ),
    (
        "preference-output-empty",
        pair(non_preferred_output=[]),
        {"empty_output"},
        "non_preferred_output",
    ),
    (
        "preference-output-user",
        pair(non_preferred_output=[user()]),
        {"output_role_not_assistant"},
        "non_preferred_output[0].role",
    ),
    (
        "preference-output-missing-content",
        pair(preferred_output=[{"role": "assistant"}]),
        {"message_missing_key"},
        "preferred_output[0]",
    ),
    (
        "preference-input-bad-role",
        pair(input={"messages": [{"role": "human", "content": S}]}),
        {"unrecognized_role"},
        "input.messages[0].role",
    ),
    ("prompt-only", {"prompt": S}, {"missing_field"}, "completion"),
    ("completion-only", {"completion": S}, {"missing_field"}, "prompt"),
    ("prompt-number", {"prompt": 1, "completion": S}, {"invalid_field_type"}, "prompt"),
    ("completion-list", {"prompt": S, "completion": [S]}, {"invalid_field_type"}, "completion"),
    ("text-number", {"text": 5}, {"invalid_field_type"}, "text"),
    ("text-null", {"text": None, "id": 1}, {"invalid_field_type"}, "text"),
    (
        "lone-surrogate",
        chat(user(), asst(f"{S} \ud800 x")),
        {"invalid_unicode"},
        "messages[1].content",
    ),
    ("lone-surrogate-text", {"text": "\udfff"}, {"invalid_unicode"}, "text"),
    (
        "several-problems",
        chat({"role": "robot", "content": S}, {**user(), "weight": 1}, asst(weight=3)),
        {"unrecognized_role", "key_not_allowed_for_role", "invalid_weight"},
        None,
    ),
    (
        "too-many-problems",
        chat(*[{"role": "robot", "content": S} for _ in range(30)]),
        {"unrecognized_role", "too_many_problems"},
        "messages[0].role",
    ),
]


@pytest.mark.parametrize(
    ("record", "codes", "path"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_problems(record: Any, codes: set[str], path: str | None) -> None:
    example = run(record)
    assert {p.code for p in example.problems} == codes
    assert all(p.stage == "validate" for p in example.problems)
    assert not example.valid
    assert example.segments == [], "no segments (and no API spend) for an invalid record"
    assert example.tokens == 0
    if path is not None:
        assert path in [p.detail.get("path") for p in example.problems if p.detail]
    assert example.format == detect_format(record)


def test_problems_are_all_reported_and_capped() -> None:
    example = run(ERRORS[-1][1])
    assert len(example.problems) == MAX_REASONS + 1
    assert example.problems[-1] == Reason(
        stage="validate", code="too_many_problems", detail={"more": 30 + 1 - MAX_REASONS}
    )
    several = run(ERRORS[-2][1])
    assert [p.detail["path"] for p in several.problems] == [
        "messages[0].role",
        "messages[1]",
        "messages[2].weight",
    ]


def test_unrecognized_format_lists_key_names_only() -> None:
    example = run({"foo": f"{S} value", "bar baz": 1, "q" * 100: 2})
    assert example.format is None
    (problem,) = example.problems
    assert problem.code == "unrecognized_format"
    assert problem.detail == {
        "keys": ["foo", "<7-char string>", "<100-char string>"],
        "key_count": 3,
    }


def test_details_quote_identifiers_not_text() -> None:
    robot = run(chat({"role": "robot", "content": S}, asst()))
    assert robot.problems[0].detail == {"path": "messages[0].role", "value": "robot"}
    long_role = run(chat({"role": LONG_ROLE, "content": S}, asst()))
    assert long_role.problems[0].detail == {
        "path": "messages[0].role",
        "value": f"<{len(LONG_ROLE)}-char string>",
    }
    number = run(chat({"role": 5, "content": S}, asst()))
    assert number.problems[0].detail["value"] == "<number>"
    weight = run(chat(user(), asst(weight=2)))
    assert weight.problems[0].detail == {"path": "messages[1].weight", "got": "number", "value": 2}
    missing = run(chat(user(), {"role": "assistant"}))
    assert missing.problems[0].detail == {"path": "messages[1]", "key": "content"}


@pytest.mark.parametrize(
    "record",
    [c[1] for c in VALID] + [c[1] for c in WARNINGS] + [c[1] for c in ERRORS],
    ids=[c[0] for c in VALID] + [c[0] for c in WARNINGS] + [c[0] for c in ERRORS],
)
def test_no_detail_carries_example_text(record: Any) -> None:
    example = run(record)
    details = orjson.dumps([r.detail for r in example.problems + example.warnings])
    assert S.encode() not in details


def test_every_code_is_tested_and_documented() -> None:
    produced = {code for case in ERRORS for code in case[2]}
    produced |= {code for case in WARNINGS for code in case[2]}
    produced.add("data_type")  # test_not_an_object
    assert produced == set(CODES)
    assert {code for case in ERRORS for code in case[2]} <= {
        c for c, kind in CODES.items() if kind == "error"
    }
    assert {code for case in WARNINGS for code in case[2]} <= {
        c for c, kind in CODES.items() if kind == "warning"
    }
    doc = validate_module.__doc__ or ""
    documented = dict(re.findall(r"^``(\w+)``\s+(error|warning)\b", doc, re.MULTILINE))
    assert documented == CODES


def test_not_an_object() -> None:
    example = run(cast(Any, [1, 2]))
    assert example.format is None
    assert [(p.code, p.detail) for p in example.problems] == [("data_type", {"got": "array"})]


def test_unparsed_line_is_left_alone() -> None:
    reason = Reason(stage="validate", code="invalid_json", detail={"column": 3})
    example = Example(source="t", line=1, raw=b"{", hash="h", problems=[reason])
    validate(example)
    assert example.problems == [reason]
    assert example.warnings == []
    assert example.format is None
    assert example.segments == []
    assert example.tokens == 0


def test_earlier_problem_keeps_segments_out() -> None:
    earlier = Reason(stage="validate", code="something_else")
    example = Example(
        source="t", line=1, raw=b"", hash="h", record=chat(user(), asst()), problems=[earlier]
    )
    validate(example)
    assert example.problems == [earlier]
    assert example.format == "chat"
    assert example.segments == []
    assert example.tokens == 0


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"messages": 1, "text": "x"}, "chat"),
        ({"preferred_output": 1}, "preference"),
        ({"non_preferred_output": 1, "prompt": "p"}, "preference"),
        ({"input": {"messages": []}}, "preference"),
        ({"input": "x", "output": "y"}, None),
        ({"input": {"text": "x"}}, None),
        ({"completion": "c", "text": "t"}, "prompt_completion"),
        ({"prompt": "p"}, "prompt_completion"),
        ({"prompt": "p", "text": "t"}, "text"),
        ({"text": 1}, "text"),
        ({"content": "x"}, None),
        ([], None),
        ("text", None),
        (None, None),
    ],
)
def test_detect_format(record: Any, fmt: str | None) -> None:
    assert detect_format(record) == fmt


# ----------------------------------------------------------------------------- properties

PATH_PART = re.compile(r"([A-Za-z_]+)|\[(\d+)\]")


def resolve(record: Any, path: str) -> Any:
    """Follow a segment path (``messages[3].content[1].text``) into a record."""
    node = record
    for name, index in PATH_PART.findall(path):
        node = node[int(index)] if index else node[name]
    if isinstance(node, dict) and "url" in node:  # an image segment points at image_url
        return node["url"]
    return node


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["", " ", "system", "user", "assistant", "tool", "function", "text"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["role", "content", "name", "type", "text", "image_url", "url", "weight", "x", "id"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "bot"])
texts = st.text(max_size=12) | st.sampled_from(["", " ", "\ud800"])
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(["https://e/x.png", "ftp://x", ""])},
                optional={"detail": st.sampled_from(["low", "high", "auto", "max"])},
            ),
        }
    ),
    json_values,
)
calls = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", ""]),
        "type": st.sampled_from(["function", "x"]),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["f", "g"]), "arguments": texts | st.just("{}")}
        ),
    }
)
messages = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.none() | texts | st.lists(parts, max_size=3) | json_values,
        "name": st.sampled_from(["n", ""]) | json_values,
        "weight": st.sampled_from([0, 1, 2, 0.5, True]) | json_values,
        "tool_calls": st.lists(calls, max_size=2) | json_values,
        "tool_call_id": st.sampled_from(["a", "b", ""]) | json_values,
        "function_call": calls.map(lambda c: c["function"]) | json_values,
    },
)
words = st.text(min_size=1, max_size=12)
text_parts = st.fixed_dictionaries({"type": st.just("text"), "text": words})
image_parts = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries({"url": st.just("https://e/x")}),
    }
)
good_calls = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b"]),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.just("f"), "arguments": texts}),
    }
)
well_formed = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer"]),
            "content": words | st.lists(text_parts, min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": words | st.lists(text_parts | image_parts, min_size=1, max_size=3),
        },
        optional={"name": st.just("u")},
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": words},
        optional={"weight": st.sampled_from([0, 1])},
    ),
    st.fixed_dictionaries(
        {
            "role": st.just("assistant"),
            "content": st.none(),
            "tool_calls": st.lists(good_calls, min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": words, "tool_call_id": st.sampled_from(["a", "b"])}
    ),
)
# Mostly well-formed messages, so that valid records (and their segments) are common too.
message_lists = st.lists(
    well_formed | well_formed | well_formed | messages | json_values, max_size=6
)
assistant_outputs = st.lists(
    st.fixed_dictionaries({"role": st.just("assistant"), "content": words})
    | st.fixed_dictionaries(
        {"role": st.just("assistant"), "tool_calls": st.lists(good_calls, min_size=1, max_size=2)}
    ),
    min_size=1,
    max_size=2,
)
records = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(well_formed, min_size=1, max_size=6)}),
    st.fixed_dictionaries(
        {
            "input": st.fixed_dictionaries(
                {"messages": st.lists(well_formed, min_size=1, max_size=4)}
            ),
            "preferred_output": assistant_outputs,
            "non_preferred_output": assistant_outputs,
        }
    ),
    st.dictionaries(st.text(max_size=6), json_values, max_size=5),
    st.fixed_dictionaries(
        {"messages": message_lists | json_values},
        optional={"tools": json_values, "parallel_tool_calls": json_values, "id": json_values},
    ),
    st.fixed_dictionaries(
        {
            "input": st.fixed_dictionaries({"messages": message_lists}) | json_values,
            "preferred_output": message_lists | json_values,
            "non_preferred_output": message_lists | json_values,
        }
    ),
    st.fixed_dictionaries(
        {"prompt": texts | json_values, "completion": texts | json_values},
    ),
    st.fixed_dictionaries({"text": texts | json_values}, optional={"id": json_values}),
    json_values,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_validate_never_raises_and_segments_come_from_valid_records(record: Any) -> None:
    before = copy.deepcopy(record)
    example = run(record)
    if record is None:  # the reader's "could not parse" case: left alone
        assert (example.problems, example.format, example.segments) == ([], None, [])
        return
    assert example.format in (*FORMATS, None)
    assert example.format == detect_format(record)
    codes = [r.code for r in example.problems] + [r.code for r in example.warnings]
    assert set(codes) <= set(CODES)
    assert all(CODES[r.code] == "error" for r in example.problems)
    assert all(CODES[r.code] == "warning" for r in example.warnings)
    assert len(example.problems) <= MAX_REASONS + 1
    assert len(example.warnings) <= MAX_REASONS + 1
    orjson.dumps([r.detail for r in example.problems + example.warnings])  # JSON-able
    if example.format is None:
        assert example.problems
    if example.problems:
        assert example.segments == []
        assert example.tokens == 0
    else:
        assert example.tokens >= 0
        for segment in example.segments:
            value = resolve(record, segment.path)
            if segment.kind == "image":
                assert value == segment.image_url
            else:
                assert value == segment.text
                assert segment.text.strip()
    assert record == before  # (a NaN is the same object in both, so this holds)
