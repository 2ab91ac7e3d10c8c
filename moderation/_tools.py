"""Tool and function definitions and calls of a conversation (private).

:class:`Conversation` carries what the messages of one conversation share: the declared
tool names and the call ids a tool result may answer.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from moderation._formats import Findings, json_type, safe_token

__all__ = ["Conversation", "check_definitions", "check_function_call", "check_tool_calls"]

_TOOL_CALL_KEYS: Final = frozenset({"id", "type", "function"})
_FUNCTION_CALL_KEYS: Final = frozenset({"name", "arguments"})


class Conversation:
    """State shared by the messages of one conversation (and a pair's outputs)."""

    __slots__ = ("call_ids", "tool_names", "trained")

    def __init__(self) -> None:
        self.call_ids: set[str] = set()
        self.trained = False
        """Whether an assistant message has a weight other than 0 (or none)."""
        self.tool_names: set[str] | None = None
        """Names declared in ``tools``/``functions``; ``None`` when none are declared."""


def check_definitions(
    container: dict[str, Any], prefix: str, conversation: Conversation, found: Findings
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


def check_tool_calls(
    calls: object, path: str, segment_role: str, conversation: Conversation, found: Findings
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


def check_function_call(
    call: object, path: str, segment_role: str, conversation: Conversation, found: Findings
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
    conversation: Conversation,
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
