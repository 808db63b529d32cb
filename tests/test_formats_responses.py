"""
Tests for L{pylon_ai.formats.responses}: the OpenAI Responses API to and from
the canonical model: what Codex sends, whole responses, and the event stream
as the official SDK parses it.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pylon_ai._errors import ProviderStreamError
from pylon_ai.formats import chat, messages, responses
from pylon_ai.formats.canonical import (
    HostedTool,
    ImagePart,
    Message,
    OutputFormat,
    Reasoning,
    ReasoningPart,
    RedactedReasoningPart,
    Reply,
    ReplyUsage,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Stop,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from pylon_ai.formats.responses import (
    THINKING_PREFIX,
    ResponsesStreamDecoder,
    ResponsesStreamEncoder,
    ToolNames,
    adapt_request,
    pack_thinking,
    unpack_thinking,
)
from pylon_ai.formats.responses._tools import flat_name
from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall

JSON = dict[str, Any]

_EVENT = TypeAdapter(ResponseStreamEvent)

_CODEX_TOOLS = (
    "exec_command",
    "write_stdin",
    "update_plan",
    "apply_patch",
    "view_image",
    "list_mcp_resources",
    "list_mcp_resource_templates",
    "read_mcp_resource",
    "request_user_input",
)


def _function(name: str) -> JSON:
    return {
        "type": "function",
        "name": name,
        "description": f"The {name} tool.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"cmd": {"type": "string"}},
            "required": ["cmd"],
            "additionalProperties": False,
        },
    }


def codex_request(*, last: str = "user", **extra: Any) -> JSON:
    """
    A request shaped as Codex CLI 0.17x sends it (codex-rs
    C{ResponsesApiRequest}): instructions, a developer message, user
    messages of C{input_text} parts, an earlier tool round with reasoning,
    nine flat function tools, a namespace tool, C{web_search}, and the
    reasoning, include, store, cache key and client metadata fields.

    @param last: C{"user"} ends with a new user message; C{"output"} ends
        with a function call output (a tool round in progress).
    """
    items: list[JSON] = [
        {
            "type": "message",
            "role": "developer",
            "content": [
                {"type": "input_text", "text": "<permissions>ask</permissions>"}
            ],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {
                    "type": "input_text",
                    "text": "<environment_context>/w</environment_context>",
                }
            ],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "List the files."}],
        },
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "I should run ls."}],
            "content": None,
            "encrypted_content": "gAAAAB-opaque",
        },
        {
            "type": "function_call",
            "name": "exec_command",
            "arguments": '{"cmd":"ls"}',
            "call_id": "call_1",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\nb.txt"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Two files."}],
        },
    ]
    if last == "user":
        items.append(
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Spawn a helper."}],
            }
        )
    else:
        items += [
            {
                "type": "function_call",
                "name": "spawn_agent",
                "namespace": "multi_agent_v1",
                "arguments": '{"cmd":"help"}',
                "call_id": "call_2",
            },
            {"type": "function_call_output", "call_id": "call_2", "output": "spawned"},
        ]
    body: JSON = {
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent.",
        "input": items,
        "tools": [
            *(_function(name) for name in _CODEX_TOOLS),
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "Work with other agents.",
                "tools": [_function("spawn_agent"), _function("send_input")],
            },
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0198-thread",
        "client_metadata": {"x-codex-installation-id": "abc"},
    }
    body.update(extra)
    return body


def parse_sse(data: bytes) -> list[tuple[str, JSON]]:
    """
    The events of an SSE stream: (event name, decoded data).
    """
    events = []
    for block in data.decode("utf-8").split("\n\n"):
        if not block:
            continue
        name, payload = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                payload.append(line[len("data: ") :])
        assert name is not None, block
        events.append((name, json.loads("\n".join(payload))))
    return events


def coalesce(events: list[ModelEvent]) -> list[ModelEvent]:
    """
    C{events} with the fragments of each tool call joined (where the split
    falls is not part of the contract).
    """
    out: list[ModelEvent] = []
    calls: dict[int, int] = {}
    for event in events:
        if isinstance(event, ToolCallDelta) and event.index in calls:
            at = calls[event.index]
            first = out[at]
            assert isinstance(first, ToolCallDelta)
            out[at] = ToolCallDelta(
                first.index, first.id, first.name, first.arguments + event.arguments
            )
            continue
        if isinstance(event, ToolCallDelta):
            calls[event.index] = len(out)
        out.append(event)
    return out


def run_encoder(
    events: list[ModelEvent], *, fail: bool = False, **kwargs: Any
) -> bytes:
    encoder = ResponsesStreamEncoder(model="up-model", **kwargs)
    out = b"".join(encoder.encode(e) for e in events)
    return out if fail else out + encoder.finish()


class CodexRequestTests(SynchronousTestCase):
    """
    Codex's request decodes, adapts, and encodes to the other formats.
    """

    def test_decode(self) -> None:
        """
        Instructions and developer messages are the system prompt; items of
        one side are one turn; the tools are nine functions, two namespaced
        functions and a hosted C{web_search}; reasoning, tool choice and
        the stream flags are kept; Codex's advisory fields are extras.
        """
        req = responses.decode_request(codex_request())
        self.assertEqual(req.source, "responses")
        self.assertEqual(
            [p.text for p in req.system],
            ["You are Codex, a coding agent.", "<permissions>ask</permissions>"],
        )
        self.assertEqual(
            [m.role for m in req.messages],
            ["user", "assistant", "user", "assistant", "user"],
        )
        self.assertEqual(
            req.messages[0].parts,
            (
                TextPart("<environment_context>/w</environment_context>"),
                TextPart("List the files."),
            ),
        )
        reasoning, call = req.messages[1].parts
        self.assertEqual(
            reasoning,
            ReasoningPart(
                "I should run ls.",
                encrypted_content="gAAAAB-opaque",
                summary=("I should run ls.",),
            ),
        )
        self.assertEqual(call, ToolCallPart("call_1", "exec_command", {"cmd": "ls"}))
        self.assertEqual(
            req.messages[2].parts, (ToolResultPart("call_1", "a.txt\nb.txt"),)
        )
        functions = [t for t in req.tools if isinstance(t, Tool)]
        self.assertEqual(len(functions), 11)
        self.assertEqual(
            [(t.namespace, t.name) for t in functions[9:]],
            [("multi_agent_v1", "spawn_agent"), ("multi_agent_v1", "send_input")],
        )
        self.assertIs(functions[0].strict, False)
        hosted = [t for t in req.tools if isinstance(t, HostedTool)]
        self.assertEqual(
            [(t.format, t.kind) for t in hosted], [("responses", "web_search")]
        )
        self.assertEqual(req.tool_choice, ToolChoice("auto"))
        self.assertIs(req.parallel_tool_calls, True)
        self.assertEqual(req.reasoning, Reasoning(effort="medium", summary="auto"))
        self.assertIs(req.stream, True)
        self.assertIs(req.include_usage, True)
        self.assertEqual(
            {(e.key, e.advisory) for e in req.extras},
            {
                ("store", True),
                ("include", True),
                ("prompt_cache_key", True),
                ("client_metadata", True),
            },
        )

    def test_to_chat(self) -> None:
        """
        For a Chat Completions upstream the namespace tools are flattened,
        C{web_search} is dropped (and reported), the advisory fields are
        dropped and the effort is C{reasoning_effort}.
        """
        adapted = adapt_request(responses.decode_request(codex_request()))
        self.assertEqual(adapted.dropped, ("web_search",))
        body = chat.encode_request(adapted.request, upstream_model="gpt-4.1")
        names = [t["function"]["name"] for t in body["tools"]]
        self.assertEqual(
            names,
            [
                *_CODEX_TOOLS,
                "multi_agent_v1__spawn_agent",
                "multi_agent_v1__send_input",
            ],
        )
        self.assertEqual(body["tool_choice"], "auto")
        self.assertIs(body["parallel_tool_calls"], True)
        self.assertEqual(body["reasoning_effort"], "medium")
        self.assertEqual(body["messages"][0]["role"], "system")
        self.assertEqual(
            [m["role"] for m in body["messages"]],
            ["system", "user", "assistant", "tool", "assistant", "user"],
        )
        for key in ("store", "include", "prompt_cache_key", "client_metadata"):
            self.assertNotIn(key, body)
        self.assertEqual(
            adapted.names.client_name("multi_agent_v1__spawn_agent"),
            ("multi_agent_v1", "spawn_agent"),
        )
        self.assertEqual(
            adapted.names.client_name("exec_command"), (None, "exec_command")
        )

    def test_to_messages(self) -> None:
        """
        For a Messages upstream: the system prompt, tools with input
        schemas under flat names, thinking from the effort (a new user turn
        allows it), and the OpenAI reasoning item (unsigned) left out.
        """
        adapted = adapt_request(responses.decode_request(codex_request()))
        body = messages.encode_request(adapted.request, upstream_model="claude-x")
        self.assertEqual(
            body["system"],
            "You are Codex, a coding agent.\n\n<permissions>ask</permissions>",
        )
        self.assertEqual(len(body["tools"]), 11)
        self.assertEqual(body["tools"][9]["name"], "multi_agent_v1__spawn_agent")
        self.assertIn("input_schema", body["tools"][0])
        self.assertEqual(body["thinking"], {"type": "enabled", "budget_tokens": 8192})
        assistant = body["messages"][1]
        self.assertEqual(
            assistant["content"],
            [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "exec_command",
                    "input": {"cmd": "ls"},
                }
            ],
        )

    def test_history_namespaced_call_flattened(self) -> None:
        """
        A namespaced call in the history gets the flat name its tool has.
        """
        adapted = adapt_request(responses.decode_request(codex_request(last="output")))
        body = chat.encode_request(adapted.request, upstream_model="m")
        calls = [
            c["function"]["name"]
            for m in body["messages"]
            for c in m.get("tool_calls", ())
        ]
        self.assertEqual(calls, ["exec_command", "multi_agent_v1__spawn_agent"])

    def test_strict_tools(self) -> None:
        """
        With C{strict_tools}, hosted tools are a 400 naming them.
        """
        req = responses.decode_request(codex_request())
        with self.assertRaises(TranslationError) as caught:
            adapt_request(req, strict_tools=True)
        self.assertIn("'web_search'", caught.exception.message)
        self.assertEqual(caught.exception.param, "tools[10]")

    def test_hosted_tools_unadapted_refused(self) -> None:
        """
        Without L{adapt_request}, the other formats refuse a hosted tool.
        """
        req = responses.decode_request(codex_request())
        with self.assertRaises(TranslationError):
            chat.encode_request(req, upstream_model="m")

    def test_tool_choice_of_hosted_only(self) -> None:
        """
        A required tool choice with only hosted tools is dropped with them.
        """
        body = {
            "model": "m",
            "input": "hi",
            "tools": [{"type": "web_search"}],
            "tool_choice": "required",
        }
        adapted = adapt_request(responses.decode_request(body))
        self.assertIsNone(adapted.request.tool_choice)
        self.assertNotIn(
            "tools", chat.encode_request(adapted.request, upstream_model="m")
        )

    def test_to_responses(self) -> None:
        """
        Encoding back for a Responses upstream regroups the namespace, keeps
        hosted tools and the OpenAI reasoning item, and asks for no storage.
        """
        req = responses.decode_request(codex_request(last="output"))
        body = responses.encode_request(req, upstream_model="gpt-5")
        self.assertIs(body["store"], False)
        self.assertEqual(
            body["instructions"].split("\n\n")[0], "You are Codex, a coding agent."
        )
        self.assertEqual(body["tools"][9]["type"], "namespace")
        self.assertEqual(
            [t["name"] for t in body["tools"][9]["tools"]],
            ["spawn_agent", "send_input"],
        )
        self.assertEqual(
            body["tools"][10], {"type": "web_search", "external_web_access": False}
        )
        kinds = [item["type"] for item in body["input"]]
        self.assertEqual(
            kinds,
            [
                "message",
                "reasoning",
                "function_call",
                "function_call_output",
                "message",
                "function_call",
                "function_call_output",
            ],
        )
        self.assertEqual(body["input"][1]["encrypted_content"], "gAAAAB-opaque")
        self.assertEqual(body["input"][5]["namespace"], "multi_agent_v1")
        self.assertEqual(body["reasoning"], {"effort": "medium", "summary": "auto"})
        self.assertEqual(body["prompt_cache_key"], "0198-thread")


class RequestTests(SynchronousTestCase):
    """
    The other request fields.
    """

    def test_string_input(self) -> None:
        """
        A string input is one user message.
        """
        req = responses.decode_request({"model": "m", "input": "hello"})
        self.assertEqual(req.messages, (Message("user", (TextPart("hello"),)),))

    def test_item_reference_left_out(self) -> None:
        """
        An item reference (the AI SDK's default) is left out: nothing is
        stored to resolve it, and the items sent whole carry the turn.
        """
        body = {
            "model": "m",
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "item_reference", "id": "msg_1"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "f",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        }
        req = responses.decode_request(body)
        self.assertEqual([m.role for m in req.messages], ["user", "assistant", "user"])
        self.assertEqual(len(req.messages[1].parts), 1)

    def test_stateless(self) -> None:
        """
        C{previous_response_id} and C{conversation} are a 400 that says the
        gateway is stateless.
        """
        for extra in (
            {"previous_response_id": "resp_1"},
            {"conversation": "conv_1"},
        ):
            body = {"model": "m", "input": "hi", **extra}
            with self.assertRaises(TranslationError) as caught:
                responses.decode_request(body)
            self.assertIn("stateless", caught.exception.message)

    def test_stateful_upstream(self) -> None:
        """
        For an upstream that keeps state, C{previous_response_id} is kept for
        it, and refused by the other formats.
        """
        body = {"model": "m", "input": "hi", "previous_response_id": "resp_1"}
        req = responses.decode_request(body, stateful=True)
        out = responses.encode_request(req, upstream_model=None)
        self.assertEqual(out["previous_response_id"], "resp_1")
        with self.assertRaises(TranslationError):
            chat.encode_request(req, upstream_model="m")

    def test_store_ignored(self) -> None:
        """
        C{store: true} is accepted; translated, it is dropped.
        """
        req = responses.decode_request({"model": "m", "input": "hi", "store": True})
        self.assertNotIn("store", chat.encode_request(req, upstream_model="m"))

    def test_text_format(self) -> None:
        """
        C{text.format} C{json_schema} and C{json_object} are output formats.
        """
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        spec = {
            "type": "json_schema",
            "name": "answer",
            "schema": schema,
            "strict": True,
        }
        req = responses.decode_request(
            {"model": "m", "input": "x", "text": {"format": spec}}
        )
        self.assertEqual(
            req.output_format,
            OutputFormat("json_schema", schema=schema, name="answer", strict=True),
        )
        self.assertEqual(
            chat.encode_request(req, upstream_model="m")["response_format"],
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            },
        )
        self.assertEqual(
            messages.encode_request(req, upstream_model="m")["output_config"],
            {"format": {"type": "json_schema", "schema": schema}},
        )
        self.assertEqual(
            responses.encode_request(req, upstream_model="m")["text"]["format"], spec
        )
        req = responses.decode_request(
            {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}
        )
        self.assertEqual(req.output_format, OutputFormat("json_object"))

    def test_sampling_and_limits(self) -> None:
        """
        C{max_output_tokens}, C{temperature}, C{top_p}, C{user} and a
        function tool choice have canonical slots.
        """
        body = {
            "model": "m",
            "input": "x",
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u1",
            "metadata": {"k": "v"},
            "tools": [_function("f")],
            "tool_choice": {"type": "function", "name": "f"},
        }
        req = responses.decode_request(body)
        out = chat.encode_request(
            req, upstream_model="m", max_tokens_field="max_completion_tokens"
        )
        self.assertEqual(out["max_completion_tokens"], 100)
        self.assertEqual(
            (out["temperature"], out["top_p"], out["user"]), (0.5, 0.9, "u1")
        )
        self.assertEqual(
            out["tool_choice"], {"type": "function", "function": {"name": "f"}}
        )
        self.assertNotIn("metadata", out)

    def test_unknown_and_refused(self) -> None:
        """
        An unknown field is a 400; C{background: true} too.
        """
        for extra in ({"frobnicate": 1}, {"background": True}):
            req = responses.decode_request
            body = {"model": "m", "input": "x", **extra}
            with self.assertRaises(TranslationError):
                chat.encode_request(req(body), upstream_model="m")

    def test_images_and_outputs(self) -> None:
        """
        Input images (data and http URLs), and function call outputs made of
        parts.
        """
        body = {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_image",
                            "image_url": "data:image/png;base64,AAA",
                        },
                        {
                            "type": "input_image",
                            "image_url": "https://x/y.png",
                            "detail": "low",
                        },
                    ],
                },
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_text", "text": "done"}],
                },
            ],
        }
        req = responses.decode_request(body)
        self.assertEqual(
            req.messages[0].parts[:2],
            (
                ImagePart(media_type="image/png", data="AAA"),
                ImagePart(url="https://x/y.png", detail="low"),
            ),
        )
        self.assertEqual(
            req.messages[0].parts[2], ToolResultPart("c", (TextPart("done"),))
        )

    def test_malformed(self) -> None:
        """
        Malformed items are a 400 naming the field.
        """
        cases: list[tuple[Any, str]] = [
            ({"model": "m", "input": 3}, "input"),
            (
                {"model": "m", "input": [{"type": "function_call", "name": "f"}]},
                "input[0].call_id",
            ),
            (
                {
                    "model": "m",
                    "input": [
                        {
                            "type": "function_call",
                            "name": "f",
                            "call_id": "c",
                            "arguments": "[1]",
                        }
                    ],
                },
                "input[0].arguments",
            ),
            (
                {"model": "m", "input": "x", "reasoning": {"effort": "huge"}},
                "reasoning.effort",
            ),
            ({"model": "m", "input": [{"type": "mystery"}]}, "input[0].type"),
        ]
        for body, param in cases:
            with self.assertRaises(TranslationError) as caught:
                responses.decode_request(body)
            self.assertEqual(caught.exception.param, param)


class ThinkingTests(SynchronousTestCase):
    """
    Anthropic's signed thinking goes to the client in C{encrypted_content}
    and comes back signed.
    """

    def test_pack_unpack(self) -> None:
        """
        Signed and redacted blocks survive the trip; unsigned reasoning is
        not packed; other or damaged content is not packed thinking.
        """
        signed = ReasoningPart("Let me think.", signature="sig==")
        packed = pack_thinking(signed)
        assert packed is not None
        self.assertTrue(packed.startswith(THINKING_PREFIX))
        self.assertEqual(unpack_thinking(packed), signed)
        redacted = RedactedReasoningPart("opaque")
        packed = pack_thinking(redacted)
        assert packed is not None
        self.assertEqual(unpack_thinking(packed), redacted)
        self.assertIsNone(pack_thinking(ReasoningPart("plain")))
        self.assertIsNone(unpack_thinking("gAAAAB-opaque"))
        self.assertIsNone(unpack_thinking(THINKING_PREFIX + "!!!"))

    def test_multi_turn_with_anthropic(self) -> None:
        """
        An Anthropic reply with thinking and a tool call, encoded for the
        client, sent back as input items, reaches Anthropic again with the
        thinking block signed first in the assistant turn, so thinking stays
        on for the tool round.
        """
        upstream = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "Need ls.", "signature": "SIG"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "exec_command",
                    "input": {"cmd": "ls"},
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
        body = responses.encode_response(messages.decode_response(upstream))
        Response.model_validate(body)
        self.assertEqual(
            body["output"][0]["summary"], [{"type": "summary_text", "text": "Need ls."}]
        )
        client = codex_request(
            input=[
                {"role": "user", "content": "List the files."},
                *body["output"],
                {
                    "type": "function_call_output",
                    "call_id": "toolu_1",
                    "output": "a.txt",
                },
            ]
        )
        req = adapt_request(responses.decode_request(client)).request
        out = messages.encode_request(req, upstream_model="claude-x")
        self.assertEqual(
            out["messages"][1]["content"][0],
            {"type": "thinking", "thinking": "Need ls.", "signature": "SIG"},
        )
        self.assertEqual(out["thinking"], {"type": "enabled", "budget_tokens": 8192})


class ReplyTests(SynchronousTestCase):
    """
    Whole C{response} objects both ways.
    """

    def reply(self) -> Reply:
        return Reply(
            id="msg_1",
            model="claude-x",
            parts=(
                ReasoningPart("Hmm.", signature="S"),
                RedactedReasoningPart("R"),
                TextPart("Calling "),
                TextPart("now."),
                ToolCallPart("call_1", "multi_agent_v1__spawn_agent", {"cmd": "x"}),
            ),
            stop=Stop("tool_use"),
            usage=ReplyUsage(
                10, 5, cache_read_tokens=3, cache_creation_tokens=2, reasoning_tokens=4
            ),
        )

    def test_encode(self) -> None:
        """
        Reasoning items, one message for the text run, a function call
        under the client's namespace and name, and usage counting the whole
        prompt; the SDK's C{Response} model takes it.
        """
        names = ToolNames(
            {"multi_agent_v1__spawn_agent": ("multi_agent_v1", "spawn_agent")}
        )
        echo = responses.response_echo(codex_request())
        body = responses.encode_response(
            self.reply(), echo=echo, names=names, created_at=7
        )
        parsed = Response.model_validate(body)
        self.assertEqual(parsed.status, "completed")
        self.assertEqual(parsed.output_text, "Calling now.")
        self.assertEqual(
            [i.type for i in parsed.output],
            ["reasoning", "reasoning", "message", "function_call"],
        )
        call = body["output"][3]
        self.assertEqual(
            (call["call_id"], call["namespace"], call["name"], call["arguments"]),
            ("call_1", "multi_agent_v1", "spawn_agent", '{"cmd":"x"}'),
        )
        self.assertEqual(
            body["usage"],
            {
                "input_tokens": 15,
                "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 4},
                "total_tokens": 20,
            },
        )
        self.assertTrue(body["id"].startswith("resp_"))
        self.assertEqual((body["created_at"], body["model"]), (7, "claude-x"))
        self.assertIs(body["store"], False)
        self.assertEqual(body["tools"], codex_request()["tools"])

    def test_round_trip(self) -> None:
        """
        Decoding the encoded response gives the parts back (the thinking
        signed, the text joined, the call namespaced), the stop and usage.
        """
        names = ToolNames(
            {"multi_agent_v1__spawn_agent": ("multi_agent_v1", "spawn_agent")}
        )
        reply = responses.decode_response(
            responses.encode_response(self.reply(), names=names)
        )
        self.assertEqual(
            reply.parts,
            (
                ReasoningPart("Hmm.", signature="S"),
                RedactedReasoningPart("R"),
                TextPart("Calling now."),
                ToolCallPart(
                    "call_1", "spawn_agent", {"cmd": "x"}, namespace="multi_agent_v1"
                ),
            ),
        )
        self.assertEqual(reply.stop.reason, "tool_use")
        self.assertEqual(reply.usage, self.reply().usage)

    def test_incomplete(self) -> None:
        """
        A reply cut by its length limit is C{incomplete} with
        C{max_output_tokens}, and decodes back to C{max_tokens}.
        """
        reply = Reply(
            id=None, model="m", parts=(TextPart("abc"),), stop=Stop("max_tokens")
        )
        body = responses.encode_response(reply)
        Response.model_validate(body)
        self.assertEqual(
            (body["status"], body["incomplete_details"]),
            ("incomplete", {"reason": "max_output_tokens"}),
        )
        self.assertEqual(responses.decode_response(body).stop.reason, "max_tokens")

    def test_to_chat_client(self) -> None:
        """
        An OpenAI response (with its own encrypted reasoning and cached
        tokens) decodes for a Chat Completions client.
        """
        upstream = {
            "id": "resp_9",
            "object": "response",
            "status": "completed",
            "model": "gpt-5",
            "output": [
                {
                    "id": "rs_1",
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": "Thinking."}],
                    "encrypted_content": "gAAAA",
                },
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "Hi.", "annotations": []}
                    ],
                },
            ],
            "usage": {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 60},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 12},
                "total_tokens": 120,
            },
        }
        reply = responses.decode_response(upstream)
        self.assertEqual(
            reply.parts,
            (
                ReasoningPart(
                    "Thinking.",
                    encrypted_content="gAAAA",
                    summary=("Thinking.",),
                    id="rs_1",
                ),
                TextPart("Hi."),
            ),
        )
        self.assertEqual(
            reply.usage, ReplyUsage(40, 20, cache_read_tokens=60, reasoning_tokens=12)
        )
        body = chat.encode_response(reply)
        self.assertEqual(body["choices"][0]["message"]["content"], "Hi.")
        self.assertEqual(body["usage"]["prompt_tokens"], 100)

    def test_failed_response(self) -> None:
        """
        A failed or malformed response is an upstream format error.
        """
        body: Any
        for body in (
            {
                "status": "failed",
                "error": {"code": "server_error", "message": "x"},
                "output": [],
            },
            {
                "status": "completed",
                "output": [{"type": "function_call", "arguments": "[]"}],
            },
            [],
        ):
            self.assertRaises(ValueError, responses.decode_response, body)


class StreamEncoderTests(SynchronousTestCase):
    """
    The stream encoder's events, as the official SDK parses them.
    """

    def check(
        self, data: bytes
    ) -> tuple[list[tuple[str, JSON]], ResponseStreamState[Any]]:
        """
        Validate every event with the SDK's event types, check the SSE
        names and sequence numbers, and feed the SDK's stream state.
        """
        events = parse_sse(data)
        state: ResponseStreamState[Any] = ResponseStreamState(
            input_tools=omit, text_format=omit
        )
        for i, (name, body) in enumerate(events):
            self.assertEqual(name, body["type"])
            self.assertEqual(body["sequence_number"], i)
            state.handle_event(_EVENT.validate_python(body))
        return events, state

    def test_text(self) -> None:
        """
        A text reply: created, in progress, a message item with one
        C{output_text} part, its deltas and done events, and completed with
        the usage (the whole prompt in C{input_tokens}).
        """
        data = run_encoder(
            [
                MessageStart("msg_1", "claude-x"),
                Usage(10, 1, cache_read_tokens=5),
                TextDelta("Hel"),
                TextDelta("lo"),
                Usage(output_tokens=7),
                Stop("end_turn"),
            ]
        )
        events, state = self.check(data)
        self.assertEqual(
            [name for name, _ in events],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ],
        )
        final = events[-1][1]["response"]
        self.assertEqual(final["status"], "completed")
        self.assertEqual(final["model"], "claude-x")
        self.assertEqual(final["usage"]["input_tokens"], 15)
        self.assertEqual(final["usage"]["input_tokens_details"]["cached_tokens"], 5)
        self.assertEqual(final["usage"]["output_tokens"], 7)
        self.assertEqual(final["usage"]["total_tokens"], 22)
        self.assertEqual(events[6][1]["text"], "Hello")
        completed = state._completed_response
        assert completed is not None
        self.assertEqual(completed.output_text, "Hello")

    def test_function_calls(self) -> None:
        """
        Interleaved parallel tool calls are one C{function_call} item each,
        with argument deltas and done events, under the client's namespace
        and name; text before them is closed first.
        """
        names = ToolNames({"ns__spawn": ("ns", "spawn")})
        data = run_encoder(
            [
                TextDelta("Running."),
                ToolCallDelta(0, "call_a", "exec_command", '{"cmd":'),
                ToolCallDelta(1, "call_b", "ns__spawn", ""),
                ToolCallDelta(0, arguments='"ls"}'),
                ToolCallDelta(1, arguments="{}"),
                Stop("tool_use"),
            ],
            names=names,
        )
        events, state = self.check(data)
        done = [b["item"] for n, b in events if n == "response.output_item.done"]
        self.assertEqual(
            [i["type"] for i in done], ["message", "function_call", "function_call"]
        )
        self.assertEqual(
            [
                (i.get("namespace"), i["name"], i["call_id"], i["arguments"])
                for i in done[1:]
            ],
            [
                (None, "exec_command", "call_a", '{"cmd":"ls"}'),
                ("ns", "spawn", "call_b", "{}"),
            ],
        )
        final = events[-1][1]["response"]
        self.assertEqual(
            [i["type"] for i in final["output"]],
            ["message", "function_call", "function_call"],
        )
        completed = state._completed_response
        assert completed is not None
        self.assertEqual(len(completed.output), 3)

    def test_reasoning(self) -> None:
        """
        Anthropic thinking: a reasoning item with summary deltas whose done
        item carries the signed block in C{encrypted_content}; a redacted
        block is a reasoning item of its own.
        """
        data = run_encoder(
            [
                ReasoningDelta("Let me "),
                ReasoningDelta("think."),
                ReasoningSignature("SIG"),
                RedactedReasoning("RED"),
                TextDelta("Done."),
                Stop("end_turn"),
            ]
        )
        events, _ = self.check(data)
        names = [n for n, _ in events]
        self.assertIn("response.reasoning_summary_part.added", names)
        self.assertEqual(names.count("response.reasoning_summary_text.delta"), 2)
        done = [b["item"] for n, b in events if n == "response.output_item.done"]
        self.assertEqual(
            done[0]["summary"], [{"type": "summary_text", "text": "Let me think."}]
        )
        self.assertEqual(
            unpack_thinking(done[0]["encrypted_content"]),
            ReasoningPart("Let me think.", signature="SIG"),
        )
        self.assertEqual(
            unpack_thinking(done[1]["encrypted_content"]), RedactedReasoningPart("RED")
        )
        self.assertEqual(done[2]["type"], "message")

    def test_failure(self) -> None:
        """
        A failure after the start: an C{error} event, then
        C{response.failed} with the items done so far; nothing after.
        """
        encoder = ResponsesStreamEncoder(model="m")
        data = encoder.encode(TextDelta("par"))
        data += encoder.encode(Stop("end_turn"))
        data += encoder.encode(StreamError(529, "overloaded_error", "Overloaded"))
        self.assertEqual(encoder.finish(), b"")
        events, _ = self.check(data)
        self.assertEqual(events[-2][1]["type"], "error")
        self.assertEqual(events[-2][1]["message"], "Overloaded")
        failed = events[-1][1]
        self.assertEqual(failed["type"], "response.failed")
        self.assertEqual(failed["response"]["status"], "failed")
        self.assertEqual(
            failed["response"]["error"],
            {"code": "server_error", "message": "Overloaded"},
        )
        self.assertEqual(len(failed["response"]["output"]), 1)

    def test_failure_before_anything(self) -> None:
        """
        A failure before any event still begins with C{response.created};
        a rate limit is C{rate_limit_exceeded}.
        """
        encoder = ResponsesStreamEncoder(model="m")
        events, _ = self.check(encoder.error("slow down", "rate_limit_error"))
        self.assertEqual(
            [n for n, _ in events],
            ["response.created", "response.in_progress", "error", "response.failed"],
        )
        self.assertEqual(
            events[-1][1]["response"]["error"]["code"], "rate_limit_exceeded"
        )

    def test_incomplete(self) -> None:
        """
        A reply cut by its limit ends with C{response.incomplete}.
        """
        events, _ = self.check(run_encoder([TextDelta("a"), Stop("max_tokens")]))
        self.assertEqual(events[-1][0], "response.incomplete")
        self.assertEqual(
            events[-1][1]["response"]["incomplete_details"],
            {"reason": "max_output_tokens"},
        )

    def test_echo(self) -> None:
        """
        The response repeats the client's request fields.
        """
        echo = responses.response_echo(codex_request())
        events, _ = self.check(run_encoder([TextDelta("a")], echo=echo))
        response = events[0][1]["response"]
        self.assertEqual(response["instructions"], "You are Codex, a coding agent.")
        self.assertEqual(response["reasoning"], {"effort": "medium", "summary": "auto"})
        self.assertEqual(response["status"], "in_progress")

    def test_after_end(self) -> None:
        """
        Events after the end are a programming error.
        """
        encoder = ResponsesStreamEncoder(model="m")
        encoder.finish()
        self.assertRaises(ValueError, encoder.encode, TextDelta("x"))


class StreamDecoderTests(SynchronousTestCase):
    """
    The stream decoder reads what a Responses upstream sends.
    """

    def decode(self, data: bytes, light: bool = False) -> list[ModelEvent]:
        decoder = ResponsesStreamDecoder(light=light)
        out: list[ModelEvent] = []
        for name, body in parse_sse(data):
            out.extend(decoder.feed(name, json.dumps(body)))
        out.extend(decoder.finish())
        return out

    def test_round_trip(self) -> None:
        """
        The decoder gives back the events the encoder was given.
        """
        given: list[ModelEvent] = [
            ReasoningDelta("Hmm."),
            ReasoningSignature("SIG"),
            RedactedReasoning("RED"),
            TextDelta("Hi "),
            TextDelta("there."),
            ToolCallDelta(0, "call_a", "f", '{"a":'),
            ToolCallDelta(0, arguments="1}"),
            ToolCallDelta(1, "call_b", "g", "{}"),
        ]
        data = run_encoder([*given, Usage(10, 4, 2, 1), Stop("tool_use")])
        got = self.decode(data)
        self.assertIsInstance(got[0], MessageStart)
        self.assertEqual(coalesce(got[1:-2]), coalesce(given))
        self.assertEqual(got[-2:], [Usage(10, 4, 2, 1), Stop("tool_use", "completed")])

    def test_incomplete_and_failed(self) -> None:
        """
        C{response.incomplete} is a C{max_tokens} stop; a failure a
        L{StreamError}.
        """
        got = self.decode(run_encoder([TextDelta("a"), Stop("max_tokens")]))
        self.assertEqual(got[-1], Stop("max_tokens", "max_output_tokens"))
        encoder = ResponsesStreamEncoder(model="m")
        data = encoder.encode(TextDelta("a")) + encoder.error("boom", "api_error")
        errors = [e for e in self.decode(data) if isinstance(e, StreamError)]
        self.assertEqual(errors[0].message, "boom")
        self.assertEqual(errors[-1].status, 500)

    def test_light(self) -> None:
        """
        A light decoder skips the deltas but keeps the books.
        """
        data = run_encoder([TextDelta("a"), Usage(1, 2), Stop("end_turn")])
        got = self.decode(data, light=True)
        self.assertFalse(any(isinstance(e, TextDelta) for e in got))
        self.assertEqual(got[-2:], [Usage(1, 2, 0, 0), Stop("end_turn", "completed")])

    def test_truncated(self) -> None:
        """
        A stream that ends before C{response.completed}, or that is not
        JSON, is a L{ProviderStreamError}.
        """
        encoder = ResponsesStreamEncoder(model="m")
        self.assertRaises(
            ProviderStreamError, self.decode, encoder.encode(TextDelta("a"))
        )
        decoder = ResponsesStreamDecoder()
        self.assertRaises(ProviderStreamError, decoder.feed, "x", "{nope")
        self.assertRaises(
            ProviderStreamError,
            decoder.feed,
            "response.function_call_arguments.delta",
            json.dumps(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": "?",
                    "delta": "x",
                }
            ),
        )

    def test_call_only_done(self) -> None:
        """
        A call announced only by its done item is decoded whole.
        """
        decoder = ResponsesStreamDecoder()
        item = {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "c",
            "name": "f",
            "arguments": "{}",
        }
        got = list(
            decoder.feed(
                "e", json.dumps({"type": "response.output_item.done", "item": item})
            )
        )
        self.assertEqual(got, [ToolCallDelta(0, "c", "f", "{}")])


class ToolNameTests(SynchronousTestCase):
    """
    Flat names for namespaced tools.
    """

    def test_flat_names(self) -> None:
        """
        C{NAMESPACE__NAME} when valid and free, else a sanitised, shortened
        name with a hash, at most 64 characters.
        """
        self.assertEqual(flat_name("ns", "f"), "ns__f")
        taken = flat_name("ns", "f", frozenset({"ns__f"}))
        self.assertNotEqual(taken, "ns__f")
        long = flat_name("mcp.server" * 8, "tool")
        self.assertLessEqual(len(long), 64)
        self.assertRegex(long, r"^[A-Za-z0-9_-]+$")
        self.assertNotEqual(long, flat_name("mcp.server" * 8, "tool2"))

    def test_adapt_keeps_request(self) -> None:
        """
        A request without namespaces or hosted tools is unchanged.
        """
        req = responses.decode_request(
            {
                "model": "m",
                "input": "x",
                "tools": [_function("f")],
                "tool_choice": "required",
            }
        )
        adapted = adapt_request(req)
        self.assertEqual(adapted.request, req)
        self.assertEqual(adapted.dropped, ())

    def test_choice_of_namespaced(self) -> None:
        """
        A function tool choice that names a namespaced tool gets its flat
        name.
        """
        body = codex_request(tool_choice={"type": "function", "name": "spawn_agent"})
        adapted = adapt_request(responses.decode_request(body))
        self.assertEqual(
            adapted.request.tool_choice,
            ToolChoice("tool", "multi_agent_v1__spawn_agent"),
        )


class FakeProviderTests(TestCase):
    """
    The fake provider answers C{/v1/responses} in the Responses format, from
    the same scripts, as the official SDK reads it.
    """

    timeout = 15

    async def start(self) -> openai.OpenAI:
        from twisted.internet import reactor

        fake = FakeProvider(reactor)
        await fake.start()
        self.addCleanup(fake.stop)
        self.fake = fake
        return openai.OpenAI(
            base_url=fake.base_url + "/v1", api_key="sk-test", max_retries=0
        )

    async def test_whole(self) -> None:
        """
        C{responses.create} gets reasoning (the signed thinking packed), the
        text, a call and the usage.
        """
        client = await self.start()
        self.fake.enqueue(
            FakeReply(
                ["Hel", "lo"],
                thinking=["Hmm."],
                signature="SIG",
                tool_calls=[FakeToolCall("call_1", "f", ['{"a":', "1}"])],
                usage=(10, 4),
            )
        )
        response = await deferToThread(
            client.responses.create, model="fake", input="hi", store=False
        )
        self.assertEqual(response.status, "completed")
        self.assertEqual(response.output_text, "Hello")
        reasoning, _, call = response.output
        assert reasoning.type == "reasoning" and call.type == "function_call"
        assert reasoning.encrypted_content is not None
        self.assertEqual(
            unpack_thinking(reasoning.encrypted_content),
            ReasoningPart("Hmm.", signature="SIG"),
        )
        self.assertEqual(
            (call.call_id, call.name, call.arguments), ("call_1", "f", '{"a":1}')
        )
        assert response.usage is not None
        self.assertEqual(
            (response.usage.input_tokens, response.usage.output_tokens), (10, 4)
        )
        self.assertEqual(self.fake.requests[0].path, "/v1/responses")

    async def test_stream(self) -> None:
        """
        C{responses.stream} reads the fake's event stream to its final
        response.
        """
        client = await self.start()
        self.fake.enqueue(FakeReply(["Hel", "lo"], thinking=["Hmm."], usage=(3, 2)))

        def run() -> tuple[list[str], Any]:
            with client.responses.stream(model="fake", input="hi") as stream:
                kinds: list[str] = [event.type for event in stream]
                return kinds, stream.get_final_response()

        kinds, final = await deferToThread(run)
        self.assertEqual(kinds[0], "response.created")
        self.assertIn("response.reasoning_summary_text.delta", kinds)
        self.assertEqual(kinds[-1], "response.completed")
        self.assertEqual(final.output_text, "Hello")
        self.assertEqual(final.usage.total_tokens, 5)

    async def test_stream_error(self) -> None:
        """
        A scripted stream error ends the stream with C{error} and
        C{response.failed}.
        """
        client = await self.start()
        self.fake.enqueue(FakeReply(["a"], stream_error=True, message="Overloaded"))

        def run() -> list[Any]:
            return list(client.responses.create(model="fake", input="hi", stream=True))

        events = await deferToThread(run)
        self.assertEqual([e.type for e in events][-2:], ["error", "response.failed"])
        self.assertEqual(events[-1].response.error.message, "Overloaded")
