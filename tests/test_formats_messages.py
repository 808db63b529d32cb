"""
Tests for L{pylon_ai.formats.messages}: Anthropic Messages bodies to and from
the canonical model, above all what Claude Code sends and what issue 9 adds
(thinking, effort, structured output, cache hints, context management).
"""

from __future__ import annotations

import copy
import typing
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.formats import chat, messages
from pylon_ai.formats.canonical import (
    STRUCTURED_OUTPUT_TOOL,
    Reasoning,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    unwrap_structured_output,
)
from pylon_ai.formats.errors import TranslationError

JSON = dict[str, Any]

USER = {"role": "user", "content": "hi"}
CACHE = {"type": "ephemeral"}


def claude_code_request(**extra: Any) -> JSON:
    """
    A request shaped as Claude Code 2.1 sends it: system blocks with cache
    control, adaptive thinking with an effort, context management, a user
    id, a large C{max_tokens} and 25 tools (the last with cache control).
    """
    tools: list[JSON] = [
        {
            "name": f"Tool{i}",
            "description": f"Tool number {i}.",
            "input_schema": {
                "type": "object",
                "properties": {"arg": {"type": "string"}},
                "required": ["arg"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        }
        for i in range(25)
    ]
    tools[-1]["cache_control"] = CACHE
    body: JSON = {
        "model": "claude-opus-4-6",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": CACHE,
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>...</system-reminder>"},
                    {"type": "text", "text": "list the files", "cache_control": CACHE},
                ],
            }
        ],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {
            "edits": [{"type": "clear_thinking_20251015", "keep": "all"}]
        },
        "metadata": {"user_id": "user_abc_account_def_session_123"},
        "tools": tools,
        "temperature": 1,
    }
    body.update(extra)
    return body


def to_chat(body: JSON, **kw: Any) -> JSON:
    """
    Messages -> Chat Completions, checking the input is left untouched.
    """
    before = copy.deepcopy(body)
    kw.setdefault("upstream_model", "gpt")
    result = chat.encode_request(messages.decode_request(body), **kw)
    assert body == before, "the input was mutated"
    return result


def from_chat(body: JSON, **kw: Any) -> JSON:
    """
    Chat Completions -> Messages, checking the input is left untouched.
    """
    body = {"model": "gpt", **body}
    before = copy.deepcopy(body)
    kw.setdefault("upstream_model", "claude")
    result = messages.encode_request(chat.decode_request(body), **kw)
    assert body == before, "the input was mutated"
    return result


def _check_keys(test: SynchronousTestCase, value: JSON, kind: Any, where: str) -> None:
    """
    C{value} has only keys C{kind} (an SDK TypedDict) knows, and all it
    requires.
    """
    known = set(typing.get_type_hints(kind))
    test.assertLessEqual(set(value), known, where)
    test.assertLessEqual(set(kind.__required_keys__), set(value), where)


def assert_valid_chat_body(test: SynchronousTestCase, body: JSON) -> None:
    """
    C{body} is a Chat Completions request the C{openai} SDK's types accept
    field by field: no parameter OpenAI would call unknown.
    """
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionFunctionToolParam,
        ChatCompletionSystemMessageParam,
        ChatCompletionToolMessageParam,
        ChatCompletionUserMessageParam,
        completion_create_params,
    )
    from openai.types.shared_params import FunctionDefinition

    _check_keys(
        test, body, completion_create_params.CompletionCreateParamsStreaming, "body"
    )
    kinds = {
        "system": ChatCompletionSystemMessageParam,
        "user": ChatCompletionUserMessageParam,
        "assistant": ChatCompletionAssistantMessageParam,
        "tool": ChatCompletionToolMessageParam,
    }
    for i, message in enumerate(body["messages"]):
        _check_keys(test, message, kinds[message["role"]], f"messages[{i}]")
    for i, tool in enumerate(body.get("tools", [])):
        _check_keys(test, tool, ChatCompletionFunctionToolParam, f"tools[{i}]")
        _check_keys(test, tool["function"], FunctionDefinition, f"tools[{i}].function")
    effort = body.get("reasoning_effort")
    if effort is not None:
        test.assertIn(effort, ("none", "minimal", "low", "medium", "high", "xhigh"))


class ClaudeCodeTests(SynchronousTestCase):
    """
    Claude Code's requests toward an OpenAI-format upstream.
    """

    def test_to_chat(self) -> None:
        """
        Claude Code's request is a valid Chat Completions body: the system
        blocks are one system message, the effort is C{reasoning_effort},
        the user id is C{user}, the 25 tools are functions; cache control
        and context management are dropped.
        """
        result = to_chat(
            claude_code_request(), max_tokens_field="max_completion_tokens"
        )
        assert_valid_chat_body(self, result)
        self.assertEqual(result["reasoning_effort"], "high")
        self.assertEqual(result["user"], "user_abc_account_def_session_123")
        self.assertEqual(result["max_completion_tokens"], 32000)
        self.assertEqual(
            result["messages"][0],
            {
                "role": "system",
                "content": "x-anthropic-billing-header: cc_version=2.1\n\n"
                "You are Claude Code, Anthropic's official CLI for Claude.",
            },
        )
        self.assertEqual(len(result["tools"]), 25)
        self.assertNotIn("cache_control", repr(result))
        self.assertNotIn("context_management", result)
        self.assertEqual(result["stream_options"], {"include_usage": True})

    def test_enabled_thinking(self) -> None:
        """
        Claude Code 2.0's C{thinking: enabled} with a budget of 31999 is the
        effort C{high}.
        """
        body = claude_code_request(thinking={"type": "enabled", "budget_tokens": 31999})
        del body["output_config"]
        result = to_chat(body)
        assert_valid_chat_body(self, result)
        self.assertEqual(result["reasoning_effort"], "high")

    def test_title_request(self) -> None:
        """
        The session-title request's C{output_config.format} is a
        C{response_format} of type C{json_schema}.
        """
        schema = {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
            "additionalProperties": False,
        }
        body = claude_code_request(
            output_config={"format": {"type": "json_schema", "schema": schema}},
            thinking={"type": "disabled"},
        )
        result = to_chat(body)
        assert_valid_chat_body(self, result)
        self.assertEqual(
            result["response_format"],
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            },
        )
        self.assertNotIn("reasoning_effort", result)

    def test_same_format_round_trip(self) -> None:
        """
        Decoded and encoded again as Messages, Claude Code's request keeps
        everything: cache control on system, blocks and tools, thinking,
        effort, context management and the user id.
        """
        body = claude_code_request()
        result = messages.encode_request(
            messages.decode_request(body), upstream_model=None
        )
        self.assertEqual(result, body)

    def test_tool_round_with_thinking(self) -> None:
        """
        A tool round: the assistant turn's signed thinking and tool use, and
        the user's tool result, reach Chat Completions as a tool call and a
        tool message; thinking stays out of the history by default, and
        goes as C{thinking_blocks} when asked.
        """
        body = claude_code_request()
        body["messages"] += [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Let me look.", "signature": "S1"},
                    {"type": "redacted_thinking", "data": "R1"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Tool3",
                        "input": {"arg": "ls"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "a.txt",
                        "cache_control": CACHE,
                    }
                ],
            },
        ]
        result = to_chat(body)
        assert_valid_chat_body(self, result)
        self.assertEqual(
            result["messages"][2:],
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "Tool3", "arguments": '{"arg":"ls"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"},
            ],
        )
        carried = to_chat(body, reasoning_history=True)["messages"][2]
        self.assertEqual(carried["reasoning_content"], "Let me look.")
        self.assertEqual(
            carried["thinking_blocks"],
            [
                {"type": "thinking", "thinking": "Let me look.", "signature": "S1"},
                {"type": "redacted_thinking", "data": "R1"},
            ],
        )

    def test_server_tools_and_containers_refused(self) -> None:
        """
        What Chat Completions cannot express is refused by name.
        """
        cases: list[tuple[JSON, str]] = [
            (
                {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
                "tools[0]",
            ),
            ({"container": "c1"}, "container"),
            ({"top_k": 3}, "top_k"),
        ]
        for extra, param in cases:
            e = self.assertRaises(
                TranslationError, to_chat, claude_code_request(**extra)
            )
            self.assertEqual(e.param, param)


class ReasoningToChatTests(SynchronousTestCase):
    """
    C{thinking} and C{output_config.effort} -> C{reasoning_effort}.
    """

    def effort(self, **extra: Any) -> Any:
        body = {"model": "claude", "max_tokens": 100, "messages": [USER], **extra}
        return to_chat(body).get("reasoning_effort")

    def test_budgets(self) -> None:
        """
        Budgets map per the documented table.
        """
        for budget, expected in [
            (1024, "low"),
            (2048, "low"),
            (2049, "medium"),
            (8192, "medium"),
            (8193, "high"),
            (31999, "high"),
        ]:
            thinking = {"type": "enabled", "budget_tokens": budget}
            self.assertEqual(self.effort(thinking=thinking), expected, budget)

    def test_modes_and_effort(self) -> None:
        """
        An explicit effort wins; adaptive alone, disabled and between_tools
        send none; an effort without thinking is sent.
        """
        cases: list[tuple[JSON, Any]] = [
            ({"thinking": {"type": "adaptive"}}, None),
            (
                {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
                "low",
            ),
            ({"thinking": {"type": "disabled"}}, None),
            ({"thinking": {"type": "between_tools"}}, None),
            ({"output_config": {"effort": "medium"}}, "medium"),
            (
                {
                    "thinking": {"type": "enabled", "budget_tokens": 2000},
                    "output_config": {"effort": "high"},
                },
                "high",
            ),
        ]
        for extra, expected in cases:
            self.assertEqual(self.effort(**extra), expected, extra)

    def test_no_reasoning_upstream(self) -> None:
        """
        An upstream that cannot reason gets no C{reasoning_effort}.
        """
        body = {"model": "c", "max_tokens": 9, "messages": [USER]}
        body["thinking"] = {"type": "enabled", "budget_tokens": 5000}
        req = messages.decode_request(body)
        result = chat.encode_request(req, upstream_model="gpt", reasoning=False)
        self.assertNotIn("reasoning_effort", result)

    def test_malformed(self) -> None:
        """
        Malformed thinking and output settings are refused by name.
        """
        cases: list[tuple[JSON, str]] = [
            ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
            ({"thinking": {"type": "lots"}}, "thinking.type"),
            ({"thinking": "on"}, "thinking"),
            ({"output_config": {"effort": "huge"}}, "output_config.effort"),
            ({"output_config": {"verbose": True}}, "output_config.verbose"),
            ({"output_config": {"format": {"type": "json"}}}, "output_config.format"),
            (
                {"output_config": {"format": {"type": "json_schema"}}},
                "output_config.format.schema",
            ),
            ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ]
        for extra, param in cases:
            body = {"model": "c", "max_tokens": 9, "messages": [USER], **extra}
            e = self.assertRaises(TranslationError, messages.decode_request, body)
            self.assertEqual(e.param, param, extra)


class ReasoningFromChatTests(SynchronousTestCase):
    """
    C{reasoning_effort} -> C{thinking}, within Anthropic's rules.
    """

    def test_efforts(self) -> None:
        """
        Each effort is a budget per the table; without a client limit, the
        limit is the default plus the budget; C{none} is no thinking.
        """
        for effort, budget in [
            ("minimal", 1024),
            ("low", 2048),
            ("medium", 8192),
            ("high", 16384),
            ("xhigh", 24576),
            ("max", 31999),
        ]:
            result = from_chat({"messages": [USER], "reasoning_effort": effort})
            self.assertEqual(
                result["thinking"], {"type": "enabled", "budget_tokens": budget}
            )
            self.assertEqual(result["max_tokens"], 4096 + budget)
        result = from_chat({"messages": [USER], "reasoning_effort": "none"})
        self.assertNotIn("thinking", result)

    def test_budget_below_max_tokens(self) -> None:
        """
        A client limit caps the budget below it; a limit that leaves less
        than Anthropic's minimum budget leaves thinking off.
        """
        body = {"messages": [USER], "reasoning_effort": "high", "max_tokens": 5000}
        result = from_chat(body)
        self.assertEqual(result["thinking"], {"type": "enabled", "budget_tokens": 4999})
        self.assertEqual(result["max_tokens"], 5000)
        body["max_tokens"] = 1024
        self.assertNotIn("thinking", from_chat(body))

    def test_sampling_dropped_with_thinking(self) -> None:
        """
        Anthropic refuses temperature and a low top_p with thinking: they go.
        """
        body = {"messages": [USER], "reasoning_effort": "low", "temperature": 0.2}
        body["top_p"] = 0.5
        result = from_chat(body)
        self.assertNotIn("temperature", result)
        self.assertNotIn("top_p", result)
        body["top_p"] = 0.97
        self.assertEqual(from_chat(body)["top_p"], 0.97)

    def test_forced_tool_turns_thinking_off(self) -> None:
        """
        A forced tool choice and thinking cannot go together: thinking stays
        off.
        """
        tools = [{"type": "function", "function": {"name": "f"}}]
        body = {
            "messages": [USER],
            "reasoning_effort": "low",
            "tools": tools,
            "tool_choice": "required",
        }
        self.assertNotIn("thinking", from_chat(body))

    def tool_round(self, assistant: JSON) -> JSON:
        return {
            "messages": [
                USER,
                assistant,
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "reasoning_effort": "medium",
        }

    def test_tool_round_with_signed_thinking(self) -> None:
        """
        A tool round whose assistant turn carries its signed thinking back
        (C{thinking_blocks}) keeps thinking on, the blocks first.
        """
        call = {"id": "c1", "type": "function", "function": {"name": "f"}}
        assistant = {
            "role": "assistant",
            "content": None,
            "reasoning_content": "hmm",
            "thinking_blocks": [
                {"type": "thinking", "thinking": "hmm", "signature": "SIG"},
                {"type": "redacted_thinking", "data": "RED"},
            ],
            "tool_calls": [call],
        }
        result = from_chat(self.tool_round(assistant))
        self.assertEqual(result["thinking"]["type"], "enabled")
        self.assertEqual(
            result["messages"][1]["content"],
            [
                {"type": "thinking", "thinking": "hmm", "signature": "SIG"},
                {"type": "redacted_thinking", "data": "RED"},
                {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
            ],
        )

    def test_tool_round_without_signed_thinking(self) -> None:
        """
        A tool round whose assistant turn has no signed thinking (only
        C{reasoning_content}, or none) turns thinking off for that request,
        and unsigned reasoning is not sent.
        """
        call = {"id": "c1", "type": "function", "function": {"name": "f"}}
        for extra in ({}, {"reasoning_content": "unsigned"}):
            assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
            result = from_chat(self.tool_round({**assistant, **extra}))
            self.assertNotIn("thinking", result)
            self.assertEqual(
                result["messages"][1]["content"],
                [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}],
            )

    def test_no_reasoning_upstream(self) -> None:
        """
        An upstream model that cannot think gets no thinking.
        """
        req = chat.decode_request(
            {"model": "m", "messages": [USER], "reasoning_effort": "high"}
        )
        result = messages.encode_request(req, upstream_model="c", reasoning=False)
        self.assertNotIn("thinking", result)
        self.assertEqual(result["max_tokens"], 4096)

    def test_bad_effort(self) -> None:
        """
        An unknown effort is refused by name.
        """
        e = self.assertRaises(
            TranslationError,
            chat.decode_request,
            {"model": "m", "messages": [USER], "reasoning_effort": "extreme"},
        )
        self.assertEqual(e.param, "reasoning_effort")


class StructuredOutputTests(SynchronousTestCase):
    """
    C{response_format} <-> C{output_config.format}, and the forced-tool
    technique.
    """

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }

    def json_schema(self, **extra: Any) -> JSON:
        return {
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": self.schema, **extra},
        }

    def test_json_schema_native(self) -> None:
        """
        A C{json_schema} response format is C{output_config.format}.
        """
        result = from_chat({"messages": [USER], "response_format": self.json_schema()})
        self.assertEqual(
            result["output_config"],
            {"format": {"type": "json_schema", "schema": self.schema}},
        )
        self.assertNotIn("tools", result)

    def test_json_object_forced_tool(self) -> None:
        """
        C{json_object}, which Anthropic lacks, is the forced-tool technique:
        one tool taking any object, forced.
        """
        result = from_chat(
            {"messages": [USER], "response_format": {"type": "json_object"}}
        )
        self.assertNotIn("output_config", result)
        self.assertEqual(len(result["tools"]), 1)
        tool = result["tools"][0]
        self.assertEqual(tool["name"], STRUCTURED_OUTPUT_TOOL)
        self.assertEqual(tool["input_schema"], {"type": "object"})
        self.assertEqual(
            result["tool_choice"], {"type": "tool", "name": STRUCTURED_OUTPUT_TOOL}
        )

    def test_forced_tool_without_native_support(self) -> None:
        """
        On a model without native structured output the schema is the
        tool's; beside the client's own tools the choice is any tool; the
        forced tool turns translated thinking off.
        """
        own = {"type": "function", "function": {"name": "lookup"}}
        req = chat.decode_request(
            {
                "model": "m",
                "messages": [USER],
                "response_format": self.json_schema(),
                "tools": [own],
                "reasoning_effort": "high",
            }
        )
        result = messages.encode_request(
            req, upstream_model="c", native_structured_output=False
        )
        self.assertEqual(
            [t["name"] for t in result["tools"]], ["lookup", STRUCTURED_OUTPUT_TOOL]
        )
        self.assertEqual(result["tools"][1]["input_schema"], self.schema)
        self.assertEqual(result["tool_choice"], {"type": "any"})
        self.assertNotIn("output_config", result)
        self.assertNotIn("thinking", result)

    def test_name_clash(self) -> None:
        """
        A client tool with the technique's name is refused.
        """
        clash = {"type": "function", "function": {"name": STRUCTURED_OUTPUT_TOOL}}
        body = {
            "messages": [USER],
            "response_format": {"type": "json_object"},
            "tools": [clash],
        }
        e = self.assertRaises(TranslationError, from_chat, body)
        self.assertEqual(e.param, "tools")

    def test_to_chat_forced_tool(self) -> None:
        """
        Toward a Chat Completions model without C{response_format}, the
        output format is a forced function.
        """
        req = messages.decode_request(
            {
                "model": "c",
                "max_tokens": 50,
                "messages": [USER],
                "output_config": {
                    "format": {"type": "json_schema", "schema": self.schema}
                },
            }
        )
        result = chat.encode_request(
            req, upstream_model="g", native_structured_output=False
        )
        self.assertNotIn("response_format", result)
        self.assertEqual(
            result["tools"][0]["function"],
            {
                "name": STRUCTURED_OUTPUT_TOOL,
                "description": "Give your final answer by calling this tool; "
                "its input is the answer.",
                "parameters": self.schema,
            },
        )
        self.assertEqual(
            result["tool_choice"],
            {"type": "function", "function": {"name": STRUCTURED_OUTPUT_TOOL}},
        )

    def test_unwrap_reply(self) -> None:
        """
        The forced tool's call in the reply is the reply's text, and the
        reply ends with C{end_turn}.
        """
        reply = messages.decode_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t",
                        "name": STRUCTURED_OUTPUT_TOOL,
                        "input": {"city": "Paris"},
                    }
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 2},
            }
        )
        result = chat.encode_response(unwrap_structured_output(reply), created=1)
        choice = result["choices"][0]
        self.assertEqual(choice["message"]["content"], '{"city":"Paris"}')
        self.assertNotIn("tool_calls", choice["message"])
        self.assertEqual(choice["finish_reason"], "stop")

    def test_legacy_output_format(self) -> None:
        """
        The older beta C{output_format} field is read too.
        """
        req = messages.decode_request(
            {
                "model": "c",
                "max_tokens": 5,
                "messages": [USER],
                "output_format": {"type": "json_schema", "schema": self.schema},
            }
        )
        result = chat.encode_request(req, upstream_model="g")
        self.assertEqual(
            result["response_format"]["json_schema"]["schema"], self.schema
        )


class AdvisoryTests(SynchronousTestCase):
    """
    Cache hints, context management and the user id.
    """

    def test_cache_control_kept_same_format(self) -> None:
        """
        System blocks with cache control stay blocks toward Messages; without
        any they are one string.
        """
        body = {
            "model": "c",
            "max_tokens": 5,
            "messages": [USER],
            "system": [
                {"type": "text", "text": "A"},
                {"type": "text", "text": "B", "cache_control": CACHE},
            ],
        }
        req = messages.decode_request(body)
        self.assertEqual(
            req.system, (TextPart("A"), TextPart("B", cache_control=CACHE))
        )
        result = messages.encode_request(req, upstream_model=None)
        self.assertEqual(result["system"], body["system"])

    def test_user_from_chat(self) -> None:
        """
        C{user} is C{metadata.user_id}.
        """
        result = from_chat({"messages": [USER], "user": "u-7"})
        self.assertEqual(result["metadata"], {"user_id": "u-7"})

    def test_chat_extras_dropped_or_refused(self) -> None:
        """
        Chat-only advisory fields are dropped toward Messages; fields that
        change the reply are refused.
        """
        result = from_chat({"messages": [USER], "seed": 3, "store": True})
        self.assertEqual(set(result), {"model", "messages", "max_tokens"})
        e = self.assertRaises(
            TranslationError, from_chat, {"messages": [USER], "presence_penalty": 1}
        )
        self.assertEqual(e.param, "presence_penalty")


class ReplyTests(SynchronousTestCase):
    """
    Whole replies with thinking and cache usage.
    """

    reply = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Think.", "signature": "SIG=="},
            {"type": "redacted_thinking", "data": "ENC=="},
            {"type": "text", "text": "Answer."},
        ],
        "stop_reason": "stop_sequence",
        "stop_sequence": "###",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_input_tokens": 300,
            "cache_creation_input_tokens": 40,
        },
    }

    def test_decode(self) -> None:
        """
        Thinking with its signature, redacted thinking, the stop sequence and
        both cache counts are decoded.
        """
        reply = messages.decode_response(self.reply)
        self.assertEqual(
            reply.parts,
            (
                ReasoningPart("Think.", signature="SIG=="),
                RedactedReasoningPart("ENC=="),
                TextPart("Answer."),
            ),
        )
        self.assertEqual(reply.stop_sequence, "###")
        self.assertEqual(reply.usage.cache_read_tokens, 300)
        self.assertEqual(reply.usage.cache_creation_tokens, 40)
        self.assertEqual(reply.usage.prompt_tokens, 350)

    def test_round_trip(self) -> None:
        """
        Decoded and encoded again, the reply is the same, and a valid
        C{anthropic} Message.
        """
        from anthropic.types import Message

        result = messages.encode_response(messages.decode_response(self.reply))
        self.assertEqual(result, self.reply)
        Message.model_validate(result, strict=True)

    def test_to_chat(self) -> None:
        """
        Toward Chat Completions the thinking is C{reasoning_content} and
        C{thinking_blocks}; every prompt token counts, reads as cached.
        """
        from openai.types.chat import ChatCompletion

        result = chat.encode_response(messages.decode_response(self.reply), created=5)
        ChatCompletion.model_validate(result, strict=True)
        message = result["choices"][0]["message"]
        self.assertEqual(message["content"], "Answer.")
        self.assertEqual(message["reasoning_content"], "Think.")
        self.assertEqual(
            message["thinking_blocks"],
            [
                {"type": "thinking", "thinking": "Think.", "signature": "SIG=="},
                {"type": "redacted_thinking", "data": "ENC=="},
            ],
        )
        self.assertEqual(
            result["usage"],
            {
                "prompt_tokens": 350,
                "completion_tokens": 20,
                "total_tokens": 370,
                "prompt_tokens_details": {"cached_tokens": 300},
            },
        )

    def test_malformed_thinking(self) -> None:
        """
        A thinking block without its signature is malformed.
        """
        from pylon_ai.formats.errors import UpstreamFormatError

        bad = {**self.reply, "content": [{"type": "thinking", "thinking": "x"}]}
        self.assertRaises(UpstreamFormatError, messages.decode_response, bad)


class CanonicalTests(SynchronousTestCase):
    """
    What the decoder builds.
    """

    def test_reasoning(self) -> None:
        """
        C{thinking} and C{output_config.effort} are one L{Reasoning}.
        """
        req = messages.decode_request(claude_code_request())
        self.assertEqual(req.reasoning, Reasoning(mode="adaptive", effort="high"))
        self.assertEqual(req.user, "user_abc_account_def_session_123")
        self.assertEqual(
            [(x.key, x.advisory) for x in req.extras], [("context_management", True)]
        )


class SystemTurnTests(SynchronousTestCase):
    """
    C{role: system} messages between the turns (Claude Code sends them for
    model names it does not know) join the system prompt when translated.
    """

    def test_system_turns_join_the_system_prompt(self) -> None:
        body = {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": [{"type": "text", "text": "# Env"}]},
                {"role": "system", "content": "more"},
            ],
        }
        req = messages.decode_request(body)
        self.assertEqual([p.text for p in req.system], ["Be brief.", "# Env", "more"])
        self.assertEqual([m.role for m in req.messages], ["user"])
        out = chat.encode_request(req, upstream_model="gpt")
        self.assertEqual(out["messages"][0]["role"], "system")
        self.assertIn("# Env", str(out["messages"][0]["content"]))
        self.assertEqual(out["messages"][-1], {"role": "user", "content": "hi"})
