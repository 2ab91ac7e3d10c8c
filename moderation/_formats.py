"""The format checks behind :mod:`moderation.validate` (private).

One pass over the record collects problems, warnings and segments together. Every
``detail`` holds paths, key names, JSON type names and short identifiers only: a value
taken from the record goes in only when it looks like an identifier (:func:`safe_token`),
so the audit log never carries example text.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import orjson

from moderation.models import Reason, Segment

MAX_REASONS: Final = 20
"""Problems (and, apart, warnings) kept per example; one more says how many were cut."""

_MISSING: Final = object()
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,64}").fullmatch

# Keys a message may have, per role (the cookbook's set, plus today's roles and keys).
_ROLE_KEYS: Final[dict[str, frozenset[str]]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "function_call", "weight"}),
    # Many exporters put the called function's name on tool results; it is harmless.
    "tool": frozenset({"role", "content", "name", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
_ALL_KEYS: Final = frozenset().union(*_ROLE_KEYS.values())
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
_CHAT_TOP_KEYS: Final = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_INPUT_KEYS: Final = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PREFERENCE_TOP_KEYS: Final = frozenset({"input", "preferred_output", "non_preferred_output"})
_PROMPT_COMPLETION_KEYS: Final = frozenset({"prompt", "completion"})
_TEXT_PART_KEYS: Final = frozenset({"type", "text"})
_IMAGE_PART_KEYS: Final = frozenset({"type", "image_url"})
_IMAGE_URL_KEYS: Final = frozenset({"url", "detail"})
_IMAGE_DETAILS: Final = frozenset({"auto", "low", "high"})
_IMAGE_SCHEMES: Final = ("https://", "http://", "data:image/")
_TOOL_CALL_KEYS: Final = frozenset({"id", "type", "function"})
_FUNCTION_CALL_KEYS: Final = frozenset({"name", "arguments"})


def json_type(value: object) -> str:
    """The JSON name of a value's type (``object``, ``array``, ``string``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _writable_number(value: object) -> bool:
    """True for a number every JSON writer downstream takes back as it is: not a bool,
    not inf or NaN, not an integer past 64 bits (orjson refuses those)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


def safe_token(value: object) -> str:
    """``value`` when it is a short identifier-like string, else a placeholder.

    Role values and key names are structure, not content, but a broken record can put
    anything there: only identifier-shaped strings are quoted back.
    """
    if isinstance(value, str):
        if _IDENTIFIER(value):
            return value
        return f"<{len(value)}-char string>"
    return f"<{json_type(value)}>"


class Findings:
    """What one pass over a record found. Segments are kept only while it is valid."""

    __slots__ = ("cut_problems", "cut_warnings", "problems", "segments", "warnings")

    def __init__(self) -> None:
        self.problems: list[Reason] = []
        self.warnings: list[Reason] = []
        self.segments: list[Segment] = []
        self.cut_problems = 0
        self.cut_warnings = 0

    def error(self, code: str, detail: dict[str, Any]) -> None:
        """Record a problem (capped at :data:`MAX_REASONS`)."""
        if len(self.problems) < MAX_REASONS:
            self.problems.append(Reason(stage="validate", code=code, detail=detail))
        else:
            self.cut_problems += 1

    def warn(self, code: str, detail: dict[str, Any]) -> None:
        """Record a warning (capped at :data:`MAX_REASONS`)."""
        if len(self.warnings) < MAX_REASONS:
            self.warnings.append(Reason(stage="validate", code=code, detail=detail))
        else:
            self.cut_warnings += 1

    def text(self, path: str, role: str, text: str) -> None:
        """A text segment, unless it is blank or the record is already invalid."""
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                self.error("invalid_unicode", {"path": path, "offset": exc.start})
                return
        if not self.problems and not text.isspace():
            self.segments.append(Segment(path=path, role=role, text=text))

    def image(self, path: str, role: str, url: str) -> None:
        """An image segment, unless the record is already invalid."""
        if not self.problems:
            self.segments.append(Segment(path=path, role=role, kind="image", image_url=url))

    def finish(self) -> None:
        """Close the lists: say how much was cut, drop segments of an invalid record."""
        if self.cut_problems:
            self.problems.append(
                Reason(
                    stage="validate", code="too_many_problems", detail={"more": self.cut_problems}
                )
            )
        if self.cut_warnings:
            self.warnings.append(
                Reason(
                    stage="validate", code="too_many_warnings", detail={"more": self.cut_warnings}
                )
            )
        if self.problems:
            self.segments.clear()


class _Conversation:
    """State shared by the messages of one conversation (and a pair's outputs)."""

    __slots__ = ("call_ids", "tool_names", "trained")

    def __init__(self) -> None:
        self.call_ids: set[str] = set()
        self.trained = False
        """Whether an assistant message has a weight other than 0 (or none)."""
        self.tool_names: set[str] | None = None
        """Names declared in ``tools``/``functions``; ``None`` when none are declared."""


def detect_format(record: object) -> str | None:
    """The format a record claims by its keys: ``chat``, ``preference``,
    ``prompt_completion``, ``text``, or ``None``."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "chat"
    # An "input" alone is not enough: Alpaca-style records have a string "input".
    if (
        "preferred_output" in record
        or "non_preferred_output" in record
        or (isinstance(record.get("input"), dict) and "messages" in record["input"])
    ):
        return "preference"
    if "completion" in record or ("prompt" in record and "text" not in record):
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


# ---------------------------------------------------------------------------------- chat


def check_chat(record: dict[str, Any], found: Findings) -> None:
    """``{"messages": [...], "tools"?, "parallel_tool_calls"?, "functions"?}``."""
    conversation = _Conversation()
    _definitions(record, "", conversation, found)
    for key in record:
        if key not in _CHAT_TOP_KEYS:
            found.warn("unrecognized_key", {"path": safe_token(key)})
    roles = _messages(record["messages"], "messages", conversation, found, None)
    if roles is None:
        return
    if "assistant" not in roles:
        found.error("example_missing_assistant_message", {"path": "messages"})
        return
    if roles.isdisjoint(_SYSTEM_ROLES):
        found.warn("no_system_message", {"path": "messages"})
    if "user" not in roles:
        found.warn("no_user_message", {"path": "messages"})
    messages: list[Any] = record["messages"]
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") != "assistant":
        found.warn("last_message_not_assistant", {"path": f"messages[{len(messages) - 1}]"})
    if not conversation.trained:
        found.warn("no_trained_assistant_message", {"path": "messages"})


def _definitions(
    container: dict[str, Any], prefix: str, conversation: _Conversation, found: Findings
) -> None:
    """``tools``, legacy ``functions`` and ``parallel_tool_calls`` of a conversation."""
    if "tools" in container:
        tools = container["tools"]
        names = conversation.tool_names = set()
        if not isinstance(tools, list):
            found.error("invalid_tools", {"path": f"{prefix}tools", "got": json_type(tools)})
        else:
            for i, tool in enumerate(tools):
                path = f"{prefix}tools[{i}]"
                if not isinstance(tool, dict) or tool.get("type") != "function":
                    found.error("invalid_tools", {"path": path, "expected": "function tool"})
                    continue
                _function_definition(
                    tool.get("function"), f"{path}.function", "invalid_tools", names, found
                )
    if "functions" in container:
        functions = container["functions"]
        if conversation.tool_names is None:
            conversation.tool_names = set()
        if not isinstance(functions, list):
            found.error(
                "invalid_functions", {"path": f"{prefix}functions", "got": json_type(functions)}
            )
        else:
            for i, function in enumerate(functions):
                _function_definition(
                    function,
                    f"{prefix}functions[{i}]",
                    "invalid_functions",
                    conversation.tool_names,
                    found,
                )
    if "parallel_tool_calls" in container and not isinstance(
        container["parallel_tool_calls"], bool
    ):
        found.error(
            "invalid_parallel_tool_calls",
            {
                "path": f"{prefix}parallel_tool_calls",
                "got": json_type(container["parallel_tool_calls"]),
            },
        )


def _function_definition(
    function: object, path: str, code: str, names: set[str], found: Findings
) -> None:
    """``{"name": str, "description"?: str, "parameters"?: object}``."""
    if not isinstance(function, dict):
        found.error(code, {"path": path, "got": json_type(function)})
        return
    name = function.get("name")
    if not isinstance(name, str) or not name:
        found.error(code, {"path": f"{path}.name", "got": json_type(name)})
    else:
        names.add(name)
    if "parameters" in function and not isinstance(function["parameters"], dict):
        found.error(code, {"path": f"{path}.parameters", "got": json_type(function["parameters"])})
    if "description" in function and not isinstance(function["description"], str):
        found.error(
            code, {"path": f"{path}.description", "got": json_type(function["description"])}
        )


def _messages(
    messages: object,
    path: str,
    conversation: _Conversation,
    found: Findings,
    output_role: str | None,
) -> set[str] | None:
    """Check a message list; return the roles seen, or ``None`` when there is no list.

    ``output_role`` is set for a preference pair's outputs: each message must then be an
    assistant's, and its segments get that role (``assistant`` or ``rejected``).
    """
    if not isinstance(messages, list):
        code = "invalid_output" if output_role else "missing_messages_list"
        found.error(code, {"path": path, "got": json_type(messages)})
        return None
    if not messages:
        found.error("empty_output" if output_role else "empty_messages", {"path": path})
        return None
    roles: set[str] = set()
    for i, message in enumerate(messages):
        role = _message(message, f"{path}[{i}]", conversation, found, output_role)
        if role is not None:
            roles.add(role)
    return roles


def _message(
    message: object,
    path: str,
    conversation: _Conversation,
    found: Findings,
    output_role: str | None,
) -> str | None:
    """Check one message and take its segments; return its role when it is known."""
    if not isinstance(message, dict):
        found.error("message_not_object", {"path": path, "got": json_type(message)})
        return None
    raw_role = message.get("role", _MISSING)
    role: str | None = None
    if raw_role is _MISSING:
        found.error("message_missing_key", {"path": path, "key": "role"})
    elif isinstance(raw_role, str) and raw_role in _ROLE_KEYS:
        role = raw_role
    else:
        found.error("unrecognized_role", {"path": f"{path}.role", "value": safe_token(raw_role)})
    allowed = _ALL_KEYS if role is None else _ROLE_KEYS[role]
    if not allowed.issuperset(message):
        for key in message:
            if key not in allowed:
                if key in _ALL_KEYS:
                    found.error(
                        "key_not_allowed_for_role", {"path": path, "key": key, "role": role}
                    )
                else:
                    found.error("message_unrecognized_key", {"path": path, "key": safe_token(key)})
    if role is None:
        return None
    if output_role is not None and role != "assistant":
        found.error("output_role_not_assistant", {"path": f"{path}.role", "value": role})
    segment_role = output_role or role

    calls = False
    if role == "assistant":
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            calls = _tool_calls(tool_calls, f"{path}.tool_calls", segment_role, conversation, found)
        function_call = message.get("function_call")
        if function_call is not None:
            calls = (
                _function_call(
                    function_call, f"{path}.function_call", segment_role, conversation, found
                )
                or calls
            )
        if "weight" not in message:
            conversation.trained = True
        else:
            weight = message["weight"]
            if weight:
                conversation.trained = True
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or weight not in (0, 1)
            ):
                detail: dict[str, Any] = {"path": f"{path}.weight", "got": json_type(weight)}
                if _writable_number(weight):
                    detail["value"] = weight
                found.error("invalid_weight", detail)

    if "content" not in message:
        if not calls:
            found.error("message_missing_key", {"path": path, "key": "content"})
    else:
        _content(message["content"], f"{path}.content", role, segment_role, calls, found)

    name = message.get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            found.error("invalid_name", {"path": f"{path}.name", "got": json_type(name)})
    elif role == "function":
        found.error("message_missing_key", {"path": path, "key": "name"})

    if role == "tool":
        call_id = message.get("tool_call_id", _MISSING)
        if call_id is _MISSING or call_id is None:
            found.error("tool_message_missing_tool_call_id", {"path": path})
        elif not isinstance(call_id, str) or not call_id:
            found.error(
                "invalid_tool_call_id", {"path": f"{path}.tool_call_id", "got": json_type(call_id)}
            )
        elif call_id not in conversation.call_ids:
            found.warn("unmatched_tool_call_id", {"path": f"{path}.tool_call_id"})
    return role


def _content(
    content: object, path: str, role: str, segment_role: str, calls: bool, found: Findings
) -> None:
    """A message's ``content``: a string, a list of parts, or null next to a call."""
    if isinstance(content, str):
        if content:
            if content.isspace():
                found.warn("empty_content", {"path": path})
            found.text(path, segment_role, content)
        elif not calls:
            found.error("missing_content", {"path": path})
    elif content is None:
        if not calls:
            found.error("missing_content", {"path": path})
    elif isinstance(content, list):
        filled = False
        for j, part in enumerate(content):
            filled = _part(part, f"{path}[{j}]", role, segment_role, found) or filled
        if not filled and not calls:
            found.error("missing_content", {"path": path})
    else:
        found.error("invalid_content", {"path": path, "got": json_type(content)})


def _part(part: object, path: str, role: str, segment_role: str, found: Findings) -> bool:
    """One content part; True when it carries something (text or an image)."""
    if not isinstance(part, dict):
        found.error("invalid_content_part", {"path": path, "got": json_type(part)})
        return False
    kind = part.get("type", _MISSING)
    if kind == "text":
        for key in part:
            if key not in _TEXT_PART_KEYS:
                found.error("invalid_content_part", {"path": path, "key": safe_token(key)})
        text = part.get("text")
        if not isinstance(text, str):
            found.error("invalid_content_part", {"path": f"{path}.text", "got": json_type(text)})
            return False
        if text.isspace():
            found.warn("empty_content", {"path": f"{path}.text"})
        if text:
            found.text(f"{path}.text", segment_role, text)
            return True
        return False
    if kind == "image_url":
        for key in part:
            if key not in _IMAGE_PART_KEYS:
                found.error("invalid_content_part", {"path": path, "key": safe_token(key)})
        if role != "user":
            found.error("image_not_allowed_for_role", {"path": path, "role": role})
        url_path = f"{path}.image_url"
        image = part.get("image_url")
        if not isinstance(image, dict):
            found.error("invalid_image_url", {"path": url_path, "got": json_type(image)})
            return False
        for key in image:
            if key not in _IMAGE_URL_KEYS:
                found.error("invalid_image_url", {"path": url_path, "key": safe_token(key)})
        detail = image.get("detail", "auto")
        if not isinstance(detail, str) or detail not in _IMAGE_DETAILS:
            found.error(
                "invalid_image_url",
                {"path": f"{url_path}.detail", "value": safe_token(detail)},
            )
        url = image.get("url")
        if not isinstance(url, str) or not url.startswith(_IMAGE_SCHEMES):
            # Never the URL itself: it may be a multi-megabyte data URL, or private.
            found.error("invalid_image_url", {"path": f"{url_path}.url", "got": json_type(url)})
            return False
        found.image(url_path, segment_role, url)
        return True
    if kind is _MISSING:
        found.error("invalid_content_part", {"path": path, "key": "type"})
    else:
        found.error(
            "unsupported_content_part_type", {"path": f"{path}.type", "value": safe_token(kind)}
        )
    return False


def _tool_calls(
    calls: object, path: str, segment_role: str, conversation: _Conversation, found: Findings
) -> bool:
    """An assistant's ``tool_calls``; True when there is at least one well-formed call."""
    if not isinstance(calls, list) or not calls:
        found.error("invalid_tool_calls", {"path": path, "got": json_type(calls)})
        return False
    good = False
    for k, call in enumerate(calls):
        call_path = f"{path}[{k}]"
        if not isinstance(call, dict):
            found.error("invalid_tool_call", {"path": call_path, "got": json_type(call)})
            continue
        ok = True
        for key in call:
            if key not in _TOOL_CALL_KEYS:
                found.error("invalid_tool_call", {"path": call_path, "key": safe_token(key)})
                ok = False
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            found.error("invalid_tool_call", {"path": f"{call_path}.id", "got": json_type(call_id)})
            ok = False
        else:
            conversation.call_ids.add(call_id)
        if call.get("type") != "function":
            found.error(
                "invalid_tool_call",
                {"path": f"{call_path}.type", "value": safe_token(call.get("type"))},
            )
            ok = False
        function = call.get("function")
        if not isinstance(function, dict):
            found.error(
                "invalid_tool_call", {"path": f"{call_path}.function", "got": json_type(function)}
            )
            continue
        ok = (
            _call(
                function,
                f"{call_path}.function",
                "invalid_tool_call",
                segment_role,
                conversation,
                found,
            )
            and ok
        )
        good = good or ok
    return good


def _function_call(
    call: object, path: str, segment_role: str, conversation: _Conversation, found: Findings
) -> bool:
    """A legacy ``function_call``; True when it is well-formed."""
    if not isinstance(call, dict):
        found.error("invalid_function_call", {"path": path, "got": json_type(call)})
        return False
    return _call(call, path, "invalid_function_call", segment_role, conversation, found)


def _call(
    function: dict[str, Any],
    path: str,
    code: str,
    segment_role: str,
    conversation: _Conversation,
    found: Findings,
) -> bool:
    """``{"name": str, "arguments": str}``: the arguments are text the model learns."""
    ok = True
    for key in function:
        if key not in _FUNCTION_CALL_KEYS:
            found.error(code, {"path": path, "key": safe_token(key)})
            ok = False
    name = function.get("name")
    if not isinstance(name, str) or not name:
        found.error(code, {"path": f"{path}.name", "got": json_type(name)})
        ok = False
    elif conversation.tool_names is not None and name not in conversation.tool_names:
        found.warn("unknown_tool_name", {"path": f"{path}.name", "value": safe_token(name)})
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        found.error(code, {"path": f"{path}.arguments", "got": json_type(arguments)})
        return False
    if arguments:
        try:
            orjson.loads(arguments)
        except orjson.JSONDecodeError:
            found.warn("tool_call_arguments_not_json", {"path": f"{path}.arguments"})
        found.text(f"{path}.arguments", segment_role, arguments)
    return ok


# ---------------------------------------------------------------------------- preference


def check_preference(record: dict[str, Any], found: Findings) -> None:
    """``{"input": {"messages": [...]}, "preferred_output": [...],
    "non_preferred_output": [...]}``."""
    conversation = _Conversation()
    for key in record:
        if key not in _PREFERENCE_TOP_KEYS:
            found.warn("unrecognized_key", {"path": safe_token(key)})
    source = record.get("input", _MISSING)
    if source is _MISSING:
        found.error("missing_field", {"path": "input"})
    elif not isinstance(source, dict):
        found.error(
            "invalid_field_type", {"path": "input", "expected": "object", "got": json_type(source)}
        )
    else:
        _definitions(source, "input.", conversation, found)
        for key in source:
            if key not in _INPUT_KEYS:
                found.warn("unrecognized_key", {"path": f"input.{safe_token(key)}"})
        roles = _messages(source.get("messages"), "input.messages", conversation, found, None)
        if roles is not None and "user" not in roles:
            found.warn("no_user_message", {"path": "input.messages"})
    for key, segment_role in (
        ("preferred_output", "assistant"),
        ("non_preferred_output", "rejected"),
    ):
        if key not in record:
            found.error("missing_field", {"path": key})
        else:
            _messages(record[key], key, conversation, found, segment_role)
    preferred = record.get("preferred_output")
    if preferred and preferred == record.get("non_preferred_output"):
        found.warn("identical_outputs", {"path": "non_preferred_output"})


# ------------------------------------------------------------------- prompt/completion, text


def _string_field(record: dict[str, Any], key: str, found: Findings) -> str | None:
    value = record.get(key, _MISSING)
    if value is _MISSING:
        found.error("missing_field", {"path": key})
        return None
    if not isinstance(value, str):
        found.error(
            "invalid_field_type", {"path": key, "expected": "string", "got": json_type(value)}
        )
        return None
    return value


def check_prompt_completion(record: dict[str, Any], found: Findings) -> None:
    """Legacy ``{"prompt": str, "completion": str}`` (an empty prompt is allowed)."""
    for key in record:
        if key not in _PROMPT_COMPLETION_KEYS:
            found.warn("unrecognized_key", {"path": safe_token(key)})
    prompt = _string_field(record, "prompt", found)
    completion = _string_field(record, "completion", found)
    if prompt:
        found.text("prompt", "user", prompt)
    if completion is not None:
        if not completion or completion.isspace():
            found.warn("empty_content", {"path": "completion"})
        if completion:
            found.text("completion", "assistant", completion)


def check_text(record: dict[str, Any], found: Findings) -> None:
    """``{"text": str, ...}``: other keys are the corpus's metadata and are not checked."""
    text = _string_field(record, "text", found)
    if text is not None:
        if not text or text.isspace():
            found.warn("empty_content", {"path": "text"})
        if text:
            found.text("text", "text", text)
