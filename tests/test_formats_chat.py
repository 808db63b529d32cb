"""
Tests for L{pylon_ai.formats.chat}: Chat Completions bodies to and from the
canonical model, beyond the ported translation cases.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.formats import chat, messages
from pylon_ai.formats.canonical import (
    DocumentPart,
    Extra,
    OutputFormat,
    ReasoningPart,
    TextPart,
    ToolCallPart,
)
from pylon_ai.formats.errors import TranslationError, UpstreamFormatError

JSON = dict[str, Any]

USER = {"role": "user", "content": "hi"}


def completion(message: JSON, **extra: Any) -> JSON:
    """
    A C{chat.completion} with one choice.
    """
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "deepseek-reasoner",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
        **extra,
    }


class RequestTests(SynchronousTestCase):
    """
    Requests.
    """

    def test_same_format_round_trip(self) -> None:
        """
        Decoded and encoded again as Chat Completions, a request keeps its
        fields, advisory ones and those other formats refuse included.
        """
        body = {
            "model": "gpt",
            "messages": [
                {"role": "system", "content": "S"},
                USER,
                {
                    "role": "assistant",
                    "content": "x",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "r"},
            ],
            "max_completion_tokens": 70,
            "temperature": 1.5,
            "stop": ["X"],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {}, "strict": True},
                },
                {"type": "custom", "custom": {"name": "grammar"}},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": True,
            "reasoning_effort": "minimal",
            "response_format": {"type": "json_object"},
            "user": "u",
            "seed": 7,
            "n": 2,
            "logprobs": True,
        }
        req = chat.decode_request(body)
        self.assertIn(Extra("chat", "n", 2, advisory=False), req.extras)
        result = chat.encode_request(
            req, upstream_model=None, max_tokens_field="max_completion_tokens"
        )
        self.assertEqual(result, body)

    def test_reasoning_in_history(self) -> None:
        """
        An assistant message's C{reasoning_content} or C{reasoning} (as
        OpenRouter names it) is unsigned reasoning, first in the turn;
        C{thinking_blocks} win over both.
        """
        for key in ("reasoning_content", "reasoning"):
            body = {
                "model": "m",
                "messages": [USER, {"role": "assistant", "content": "a", key: "r"}],
            }
            parts = chat.decode_request(body).messages[1].parts
            self.assertEqual(parts, (ReasoningPart("r"), TextPart("a")))
        body["messages"][1]["thinking_blocks"] = [
            {"type": "thinking", "thinking": "signed", "signature": "S"}
        ]
        parts = chat.decode_request(body).messages[1].parts
        self.assertEqual(parts, (ReasoningPart("signed", signature="S"), TextPart("a")))

    def test_bad_thinking_block(self) -> None:
        """
        A thinking block of an unknown type is refused by name.
        """
        msg = {"role": "assistant", "content": "a", "thinking_blocks": [{"type": "x"}]}
        e = self.assertRaises(
            TranslationError,
            chat.decode_request,
            {"model": "m", "messages": [USER, msg]},
        )
        self.assertEqual(e.param, "messages[1].thinking_blocks[0]")

    def test_file_parts(self) -> None:
        """
        A C{file} part with inline data is a base64 document, which
        Anthropic takes; one given by file id is refused toward Anthropic.
        """
        part = {
            "type": "file",
            "file": {
                "file_data": "data:application/pdf;base64,JVBERi0=",
                "filename": "a.pdf",
            },
        }
        body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
        req = chat.decode_request(body)
        self.assertEqual(
            req.messages[0].parts,
            (
                DocumentPart(
                    "base64",
                    media_type="application/pdf",
                    data="JVBERi0=",
                    title="a.pdf",
                ),
            ),
        )
        result = messages.encode_request(req, upstream_model="c")
        self.assertEqual(
            result["messages"][0]["content"],
            [
                {
                    "type": "document",
                    "source": {
                        "type": "base64",
                        "media_type": "application/pdf",
                        "data": "JVBERi0=",
                    },
                    "title": "a.pdf",
                }
            ],
        )
        self.assertEqual(
            chat.encode_request(req, upstream_model=None)["messages"],
            [{"role": "user", "content": [part]}],
        )
        by_id = {"type": "file", "file": {"file_id": "file-1"}}
        body = {"model": "m", "messages": [{"role": "user", "content": [by_id]}]}
        e = self.assertRaises(
            TranslationError,
            messages.encode_request,
            chat.decode_request(body),
            upstream_model="c",
        )
        self.assertEqual(e.param, "messages[0].content[0]")

    def test_response_formats(self) -> None:
        """
        Each C{response_format} is decoded; a schema-less C{json_schema} is
        a JSON object; other types are refused.
        """
        cases: list[tuple[Any, Any]] = [
            ({"type": "text"}, None),
            ({"type": "json_object"}, OutputFormat("json_object")),
            (
                {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "n",
                        "schema": {"type": "object"},
                        "strict": True,
                    },
                },
                OutputFormat("json_schema", {"type": "object"}, name="n", strict=True),
            ),
            (
                {"type": "json_schema", "json_schema": {"name": "n"}},
                OutputFormat("json_object", name="n"),
            ),
        ]
        for value, expected in cases:
            req = chat.decode_request(
                {"model": "m", "messages": [USER], "response_format": value}
            )
            self.assertEqual(req.output_format, expected)
        for value, param in [
            ({"type": "grammar"}, "response_format.type"),
            ("json", "response_format"),
            ({"type": "json_schema"}, "response_format.json_schema"),
        ]:
            e = self.assertRaises(
                TranslationError,
                chat.decode_request,
                {"model": "m", "messages": [USER], "response_format": value},
            )
            self.assertEqual(e.param, param)

    def test_native_structured_output_to_chat(self) -> None:
        """
        A Messages output format becomes C{response_format} with a default
        name and no strict flag (Anthropic's schemas need not meet OpenAI's
        strict rules).
        """
        schema = {"type": "object", "properties": {}}
        req = messages.decode_request(
            {
                "model": "c",
                "max_tokens": 5,
                "messages": [USER],
                "output_config": {"format": {"type": "json_schema", "schema": schema}},
            }
        )
        self.assertEqual(
            chat.encode_request(req, upstream_model="g")["response_format"],
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            },
        )


class ReplyTests(SynchronousTestCase):
    """
    Whole replies.
    """

    def test_reasoning_content(self) -> None:
        """
        An upstream's C{reasoning_content} (DeepSeek, vLLM) or C{reasoning}
        (OpenRouter) is unsigned reasoning before the text; toward Anthropic
        it is a thinking block with an empty signature.
        """
        for key in ("reasoning_content", "reasoning"):
            resp = completion({"role": "assistant", "content": "4", key: "2+2"})
            reply = chat.decode_response(resp)
            self.assertEqual(reply.parts, (ReasoningPart("2+2"), TextPart("4")))
            self.assertEqual(
                messages.encode_response(reply)["content"],
                [
                    {"type": "thinking", "thinking": "2+2", "signature": ""},
                    {"type": "text", "text": "4"},
                ],
            )

    def test_reasoning_tokens(self) -> None:
        """
        Reasoning tokens are kept and reported back to Chat Completions.
        """
        resp = completion({"role": "assistant", "content": "4"})
        resp["usage"]["completion_tokens_details"] = {"reasoning_tokens": 25}
        reply = chat.decode_response(resp)
        self.assertEqual(reply.usage.reasoning_tokens, 25)
        out = chat.encode_response(reply, created=1)
        self.assertEqual(
            out["usage"]["completion_tokens_details"], {"reasoning_tokens": 25}
        )
        self.assertEqual(out["usage"]["prompt_tokens"], 12)

    def test_round_trip(self) -> None:
        """
        Decoded and encoded again, a reply with reasoning and a tool call
        keeps its shape and is a valid C{openai} ChatCompletion.
        """
        from openai.types.chat import ChatCompletion

        resp = completion(
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":[1]}'},
                    }
                ],
                "reasoning_content": "think",
            }
        )
        resp["choices"][0]["finish_reason"] = "tool_calls"
        reply = chat.decode_response(resp)
        self.assertEqual(reply.parts[1], ToolCallPart("c", "f", {"a": [1]}))
        out = chat.encode_response(reply, created=1)
        self.assertEqual(out, resp)
        ChatCompletion.model_validate(out, strict=True)

    def test_missing_id(self) -> None:
        """
        A reply without an id gets one.
        """
        resp = completion({"role": "assistant", "content": "x"})
        del resp["id"]
        out = chat.encode_response(chat.decode_response(resp))
        self.assertTrue(out["id"].startswith("chatcmpl-"))

    def test_malformed_reasoning(self) -> None:
        """
        Malformed reasoning in a reply is an L{UpstreamFormatError}.
        """
        for message in (
            {"role": "assistant", "content": "x", "reasoning_content": 5},
            {"role": "assistant", "content": "x", "thinking_blocks": [{"type": 1}]},
        ):
            self.assertRaises(
                UpstreamFormatError, chat.decode_response, completion(message)
            )
