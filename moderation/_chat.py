"""Chat and preference (DPO) records: messages, roles, content parts, weights (private).

See :mod:`moderation.validate` for the codes; tools and function calls are checked in
:mod:`._tools`.
"""

from __future__ import annotations

from typing import Any, Final

from moderation._formats import MISSING, Findings, json_type, safe_token, writable_number
from moderation._tools import Conversation, check_definitions, check_function_call, check_tool_calls

__all__ = ["check_chat", "check_preference"]

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
# A conversation's keys: a chat record's, and a preference pair's `input`.
_CONVERSATION_KEYS: Final = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PREFERENCE_TOP_KEYS: Final = frozenset({"input", "preferred_output", "non_preferred_output"})
_TEXT_PART_KEYS: Final = frozenset({"type", "text"})
_IMAGE_PART_KEYS: Final = frozenset({"type", "image_url"})
_IMAGE_URL_KEYS: Final = frozenset({"url", "detail"})
_IMAGE_DETAILS: Final = frozenset({"auto", "low", "high"})
_IMAGE_SCHEMES: Final = ("https://", "http://", "data:image/")


# ---------------------------------------------------------------------------------- chat


def check_chat(record: dict[str, Any], found: Findings) -> None:
    """``{"messages": [...], "tools"?, "parallel_tool_calls"?, "functions"?}``."""
    conversation = Conversation()
    check_definitions(record, "", conversation, found)
    for key in record:
        if key not in _CONVERSATION_KEYS:
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


def _messages(
    messages: object,
    path: str,
    conversation: Conversation,
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
    conversation: Conversation,
    found: Findings,
    output_role: str | None,
) -> str | None:
    """Check one message and take its segments; return its role when it is known."""
    if not isinstance(message, dict):
        found.error("message_not_object", {"path": path, "got": json_type(message)})
        return None
    raw_role = message.get("role", MISSING)
    role: str | None = None
    if raw_role is MISSING:
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
            calls = check_tool_calls(
                tool_calls, f"{path}.tool_calls", segment_role, conversation, found
            )
        function_call = message.get("function_call")
        if function_call is not None:
            calls = (
                check_function_call(
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
                if writable_number(weight):
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
        call_id = message.get("tool_call_id", MISSING)
        if call_id is MISSING or call_id is None:
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
    kind = part.get("type", MISSING)
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
    if kind is MISSING:
        found.error("invalid_content_part", {"path": path, "key": "type"})
    else:
        found.error(
            "unsupported_content_part_type", {"path": f"{path}.type", "value": safe_token(kind)}
        )
    return False


# ---------------------------------------------------------------------------- preference


def check_preference(record: dict[str, Any], found: Findings) -> None:
    """``{"input": {"messages": [...]}, "preferred_output": [...],
    "non_preferred_output": [...]}``."""
    conversation = Conversation()
    for key in record:
        if key not in _PREFERENCE_TOP_KEYS:
            found.warn("unrecognized_key", {"path": safe_token(key)})
    source = record.get("input", MISSING)
    if source is MISSING:
        found.error("missing_field", {"path": "input"})
    elif not isinstance(source, dict):
        found.error(
            "invalid_field_type", {"path": "input", "expected": "object", "got": json_type(source)}
        )
    else:
        check_definitions(source, "input.", conversation, found)
        for key in source:
            if key not in _CONVERSATION_KEYS:
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
