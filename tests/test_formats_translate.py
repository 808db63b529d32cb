"""
The translation cases of the pairwise translators, ported to the canonical
model: each runs as C{decode} of the client's format then C{encode} of the
upstream's (L{pylon_ai.formats.chat}, L{pylon_ai.formats.messages}).

Where issue 9 changed a behaviour (reasoning, structured output, the user
id, reasoning in whole replies), the case says so and expects the new one.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai._errors import ProviderError
from pylon_ai.formats import chat, messages
from pylon_ai.formats.chat import TOOL_ERROR_PREFIX
from pylon_ai.formats.errors import TranslationError, UpstreamFormatError

JSON = dict[str, Any]


def openai_request_to_anthropic(
    body: Any, *, upstream_model: str | None, default_max_tokens: int = 4096
) -> JSON:
    """
    Chat Completions -> Anthropic Messages through the canonical request.
    """
    return messages.encode_request(
        chat.decode_request(body),
        upstream_model=upstream_model,
        default_max_tokens=default_max_tokens,
    )


def anthropic_request_to_openai(
    body: Any, *, upstream_model: str | None, max_tokens_field: str = "max_tokens"
) -> JSON:
    """
    Anthropic Messages -> Chat Completions through the canonical request.
    """
    return chat.encode_request(
        messages.decode_request(body),
        upstream_model=upstream_model,
        max_tokens_field=max_tokens_field,
    )


def openai_response_to_anthropic(resp: Any, *, model: str | None = None) -> JSON:
    """
    A C{chat.completion} -> an Anthropic message through the canonical reply.
    """
    return messages.encode_response(chat.decode_response(resp), model=model)


def anthropic_response_to_openai(resp: Any, *, created: int | None = None) -> JSON:
    """
    An Anthropic message -> a C{chat.completion} through the canonical reply.
    """
    return chat.encode_response(messages.decode_response(resp), created=created)


def to_anthropic(body: JSON, **kw: Any) -> JSON:
    """
    L{openai_request_to_anthropic} with a model and a check that the input
    is left untouched.
    """
    body = {"model": "gpt", **body}
    before = copy.deepcopy(body)
    kw.setdefault("upstream_model", "claude")
    result = openai_request_to_anthropic(body, **kw)
    assert body == before, "the input was mutated"
    return result


def to_openai(body: JSON, **kw: Any) -> JSON:
    """
    L{anthropic_request_to_openai} with a model and a check that the input is
    left untouched.
    """
    body = {"model": "claude", "max_tokens": 100, **body}
    before = copy.deepcopy(body)
    kw.setdefault("upstream_model", "gpt")
    result = anthropic_request_to_openai(body, **kw)
    assert body == before, "the input was mutated"
    return result


def call(id: str, name: str, arguments: str) -> JSON:
    return {
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


USER = {"role": "user", "content": "hi"}


def openai_completion(message: JSON, finish: str | None = "stop", **extra: Any) -> JSON:
    """
    An OpenAI C{chat.completion} with one choice.
    """
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 5, "total_tokens": 24},
        **extra,
    }


def anthropic_message(
    content: list[JSON], stop: Any = "end_turn", **extra: Any
) -> JSON:
    """
    An Anthropic message response.
    """
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 89},
        **extra,
    }


class OpenAIRequestSystemTests(SynchronousTestCase):
    """
    C{system} and C{developer} messages go to the top-level C{system}.
    """

    def test_system_in_the_middle(self) -> None:
        """
        A system message between two turns leaves the messages and joins
        C{system}; the others keep their order.
        """
        result = to_anthropic(
            {
                "messages": [
                    {"role": "user", "content": "one"},
                    {"role": "assistant", "content": "two"},
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "three"},
                ]
            }
        )
        self.assertEqual(result["system"], "be brief")
        self.assertEqual(
            result["messages"],
            [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": "three"},
            ],
        )

    def test_several_system_and_developer_messages(self) -> None:
        """
        Every system and developer message joins, in order, with a blank line;
        a list of text parts is one prompt.
        """
        result = to_anthropic(
            {
                "messages": [
                    {"role": "system", "content": "A"},
                    {"role": "user", "content": "u1"},
                    {"role": "developer", "content": "B"},
                    {"role": "assistant", "content": "a1"},
                    {"role": "system", "content": [{"type": "text", "text": "C"}]},
                    {"role": "user", "content": "u2"},
                ]
            }
        )
        self.assertEqual(result["system"], "A\n\nB\n\nC")
        self.assertEqual([m["content"] for m in result["messages"]], ["u1", "a1", "u2"])

    def test_system_removed_between_user_turns_merges_them(self) -> None:
        """
        Two user messages made adjacent by removing a system message are one
        Anthropic message, their contents concatenated.
        """
        result = to_anthropic(
            {
                "messages": [
                    {"role": "user", "content": "one"},
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": [{"type": "text", "text": "two"}]},
                ]
            }
        )
        self.assertEqual(
            result["messages"],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "one"},
                        {"type": "text", "text": "two"},
                    ],
                }
            ],
        )

    def test_no_system(self) -> None:
        """
        Without system messages there is no C{system} field.
        """
        self.assertNotIn("system", to_anthropic({"messages": [USER]}))

    def test_system_part_not_text(self) -> None:
        """
        A system message with an image part is refused, naming the part.
        """
        part = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
        e = self.assertRaises(
            TranslationError,
            to_anthropic,
            {"messages": [{"role": "system", "content": [part]}, USER]},
        )
        self.assertEqual(e.param, "messages[0].content[0]")


class OpenAIRequestContentTests(SynchronousTestCase):
    """
    Message content, tool calls and tool results.
    """

    def test_images(self) -> None:
        """
        A base64 C{data:} URL becomes a base64 source, an https URL a url
        source; text parts stay in place.
        """
        result = to_anthropic(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {
                                "type": "image_url",
                                "image_url": {
                                    "url": "data:image/png;base64,iVBORw0KGgo=",
                                    "detail": "high",
                                },
                            },
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/cat.jpg"},
                            },
                        ],
                    }
                ]
            }
        )
        self.assertEqual(
            result["messages"][0]["content"],
            [
                {"type": "text", "text": "look"},
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": "iVBORw0KGgo=",
                    },
                },
                {
                    "type": "image",
                    "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                },
            ],
        )

    def test_bad_image_urls(self) -> None:
        """
        A data URL that is not base64, or another scheme, is refused.
        """
        for url in ("data:image/png,rawbytes", "ftp://example.com/a.png", "data:"):
            part = {"type": "image_url", "image_url": {"url": url}}
            e = self.assertRaises(
                TranslationError,
                to_anthropic,
                {"messages": [{"role": "user", "content": [part]}]},
            )
            self.assertEqual(e.param, "messages[0].content[0].image_url.url")

    def test_audio_part_refused(self) -> None:
        """
        An C{input_audio} part cannot be translated and is named.
        """
        part = {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
        e = self.assertRaises(
            TranslationError,
            to_anthropic,
            {"messages": [USER, {"role": "user", "content": [part]}]},
        )
        self.assertEqual(e.param, "messages[1].content[0]")

    def test_parallel_tool_calls_and_results(self) -> None:
        """
        An assistant message's text comes before its C{tool_use} blocks, whose
        C{input} is the parsed arguments; consecutive tool messages and the
        next user text form one user message, results first.
        """
        result = to_anthropic(
            {
                "messages": [
                    {"role": "user", "content": "weather and time in Paris?"},
                    {
                        "role": "assistant",
                        "content": "Checking.",
                        "tool_calls": [
                            call("call_1", "get_weather", '{"location":"Paris"}'),
                            call("call_2", "get_time", '{"tz": "Europe/Paris"}'),
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                    {
                        "role": "tool",
                        "tool_call_id": "call_2",
                        "content": [{"type": "text", "text": "12:00"}],
                    },
                    {"role": "user", "content": "thanks"},
                ]
            }
        )
        self.assertEqual(
            result["messages"][1:],
            [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"location": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_2",
                            "name": "get_time",
                            "input": {"tz": "Europe/Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_1",
                            "content": "18C",
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_2",
                            "content": [{"type": "text", "text": "12:00"}],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
        )

    def test_null_and_empty_content_with_tool_calls(self) -> None:
        """
        C{content} null or C{""} beside tool calls adds no empty text block;
        empty arguments are an empty object.
        """
        for content in (None, ""):
            result = to_anthropic(
                {
                    "messages": [
                        USER,
                        {
                            "role": "assistant",
                            "content": content,
                            "tool_calls": [call("c", "now", "")],
                        },
                    ]
                }
            )
            self.assertEqual(
                result["messages"][1]["content"],
                [{"type": "tool_use", "id": "c", "name": "now", "input": {}}],
            )

    def test_invalid_arguments(self) -> None:
        """
        Arguments that are not a JSON object are a L{TranslationError} naming
        them.
        """
        for arguments in ('{"a": ', "[1, 2]", "null"):
            msg = {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("c", "f", "{}"), call("d", "f", arguments)],
            }
            e = self.assertRaises(
                TranslationError, to_anthropic, {"messages": [USER, msg]}
            )
            self.assertEqual(e.param, "messages[1].tool_calls[1].function.arguments")

    def test_wrong_types(self) -> None:
        """
        Client input of the wrong shape is a L{TranslationError} naming the
        field, never a C{KeyError} or C{TypeError}.
        """
        cases: list[tuple[Any, str | None]] = [
            ({"messages": "hi"}, "messages"),
            ({"messages": ["hi"]}, "messages[0]"),
            ({"messages": [{"content": "hi"}]}, "messages[0].role"),
            ({"messages": [{"role": 3, "content": "hi"}]}, "messages[0].role"),
            ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
            (
                {"messages": [{"role": "user", "content": [7]}]},
                "messages[0].content[0]",
            ),
            ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
            (
                {"messages": [{"role": "tool", "content": "x"}]},
                "messages[0].tool_call_id",
            ),
            (
                {"messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]},
                "messages[0].tool_calls",
            ),
            (
                {"messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]},
                "messages[0].tool_calls[0].function",
            ),
            ({"messages": [USER], "max_tokens": "10"}, "max_tokens"),
            ({"messages": [USER], "max_tokens": True}, "max_tokens"),
            ({"messages": [USER], "max_tokens": 0}, "max_tokens"),
            ({"messages": [USER], "temperature": "hot"}, "temperature"),
            ({"messages": [USER], "stop": [1]}, "stop[0]"),
            ({"messages": [USER], "tools": {"a": 1}}, "tools"),
            (
                {"messages": [USER], "tools": [{"type": "function"}]},
                "tools[0].function",
            ),
            ({"messages": [USER], "tool_choice": 5}, "tool_choice"),
        ]
        for body, param in cases:
            e = self.assertRaises(TranslationError, to_anthropic, body)
            self.assertEqual(e.param, param, body)
            self.assertIsInstance(e, ValueError)
            self.assertIn(param, e.message)
        self.assertRaises(
            TranslationError, openai_request_to_anthropic, [], upstream_model=None
        )
        e = self.assertRaises(
            TranslationError,
            openai_request_to_anthropic,
            {"messages": [USER]},
            upstream_model=None,
        )
        self.assertEqual(e.param, "model")


class OpenAIRequestFieldTests(SynchronousTestCase):
    """
    Top-level fields: translated, dropped or refused.
    """

    def test_basic_fields(self) -> None:
        """
        Sampling, stop and stream fields carry over; the model is the
        upstream's, or the body's when none is configured.
        """
        body = {
            "messages": [USER],
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END", "STOP"],
            "stream": True,
            "max_tokens": 50,
        }
        self.assertEqual(
            to_anthropic(body),
            {
                "model": "claude",
                "messages": [USER],
                "max_tokens": 50,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop_sequences": ["END", "STOP"],
                "stream": True,
            },
        )
        result = to_anthropic({"messages": [USER], "stop": "END"}, upstream_model=None)
        self.assertEqual(result["stop_sequences"], ["END"])
        self.assertEqual(result["model"], "gpt")

    def test_max_tokens(self) -> None:
        """
        C{max_completion_tokens} wins over C{max_tokens}; the default fills
        in when neither is set.
        """
        self.assertEqual(to_anthropic({"messages": [USER]})["max_tokens"], 4096)
        self.assertEqual(
            to_anthropic({"messages": [USER]}, default_max_tokens=7)["max_tokens"], 7
        )
        both = {"messages": [USER], "max_tokens": 5, "max_completion_tokens": 9}
        self.assertEqual(to_anthropic(both)["max_tokens"], 9)

    def test_temperature_out_of_range(self) -> None:
        """
        OpenAI allows a temperature up to 2, Anthropic up to 1: refused.
        """
        e = self.assertRaises(
            TranslationError, to_anthropic, {"messages": [USER], "temperature": 1.5}
        )
        self.assertEqual(e.param, "temperature")

    def test_tools(self) -> None:
        """
        Function tools become Anthropic tools; missing parameters are an empty
        object schema.
        """
        params = {"type": "object", "properties": {"q": {"type": "string"}}}
        result = to_anthropic(
            {
                "messages": [USER],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "search",
                            "description": "Search.",
                            "parameters": params,
                            "strict": True,
                        },
                    },
                    {"type": "function", "function": {"name": "now"}},
                ],
            }
        )
        self.assertEqual(
            result["tools"],
            [
                {"name": "search", "description": "Search.", "input_schema": params},
                {
                    "name": "now",
                    "input_schema": {"type": "object", "properties": {}},
                },
            ],
        )

    def test_tool_choice(self) -> None:
        """
        Each C{tool_choice} maps to Anthropic's, and
        C{parallel_tool_calls: false} to C{disable_parallel_tool_use}.
        """
        tools = [{"type": "function", "function": {"name": "f"}}]
        named = {"type": "function", "function": {"name": "f"}}
        cases: list[tuple[Any, Any, Any]] = [
            ("auto", None, {"type": "auto"}),
            ("none", None, {"type": "none"}),
            ("required", None, {"type": "any"}),
            (named, None, {"type": "tool", "name": "f"}),
            (None, None, None),
            (None, True, None),
            (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
            ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
            (
                named,
                False,
                {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            ),
            ("none", False, {"type": "none"}),
        ]
        for choice, parallel, expected in cases:
            body: JSON = {"messages": [USER], "tools": tools}
            if choice is not None:
                body["tool_choice"] = choice
            if parallel is not None:
                body["parallel_tool_calls"] = parallel
            self.assertEqual(
                to_anthropic(body).get("tool_choice"), expected, (choice, parallel)
            )

    def test_tool_choice_without_tools(self) -> None:
        """
        C{auto} or C{none} without tools is moot and dropped; C{required}
        without tools is refused.
        """
        for choice in ("auto", "none"):
            result = to_anthropic({"messages": [USER], "tool_choice": choice})
            self.assertNotIn("tool_choice", result)
        e = self.assertRaises(
            TranslationError,
            to_anthropic,
            {"messages": [USER], "tool_choice": "required"},
        )
        self.assertEqual(e.param, "tool_choice")

    def test_non_function_tool(self) -> None:
        """
        A tool of another type is refused, naming it.
        """
        e = self.assertRaises(
            TranslationError,
            to_anthropic,
            {"messages": [USER], "tools": [{"type": "custom", "custom": {}}]},
        )
        self.assertEqual(e.param, "tools[0]")

    def test_advisory_fields_dropped(self) -> None:
        """
        Advisory fields, and refusable fields holding their default, vanish.
        """
        plain = to_anthropic({"messages": [USER]})
        advisory = {
            "user": "u-1",
            "seed": 42,
            "service_tier": "auto",
            "store": False,
            "metadata": {"k": "v"},
            "stream_options": {"include_usage": True},
            "safety_identifier": "s",
            "prompt_cache_key": "p",
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0,
            "frequency_penalty": 0.0,
            "logit_bias": {},
            "response_format": {"type": "text"},
            "modalities": ["text"],
            "audio": None,
            "functions": None,
        }
        # Issue 9: the end-user id travels as Anthropic's metadata.user_id.
        plain["metadata"] = {"user_id": "u-1"}
        self.assertEqual(to_anthropic({"messages": [USER], **advisory}), plain)

    def test_untranslatable_fields_refused(self) -> None:
        """
        A field that would change the reply and cannot be translated is a
        L{TranslationError} naming it.
        """
        refused = {
            "n": 2,
            "logprobs": True,
            "top_logprobs": 3,
            "presence_penalty": 0.5,
            "frequency_penalty": -1,
            "logit_bias": {"50256": -100},
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
            "functions": [{"name": "f"}],
            "function_call": "auto",
            "prediction": {"type": "content", "content": "x"},
        }
        for key, value in refused.items():
            e = self.assertRaises(
                TranslationError, to_anthropic, {"messages": [USER], key: value}
            )
            self.assertEqual(e.param, key)
            self.assertIn(repr(key), e.message)
        e = self.assertRaises(
            TranslationError, to_anthropic, {"messages": [USER], "n": True}
        )
        self.assertEqual(e.param, "n")

    def test_reasoning_and_structured_output_translate(self) -> None:
        """
        Issue 9: C{reasoning_effort} and C{response_format} C{json_schema},
        refused by the pairwise translator, now translate.
        """
        result = to_anthropic({"messages": [USER], "reasoning_effort": "low"})
        self.assertEqual(result["thinking"], {"type": "enabled", "budget_tokens": 2048})
        schema = {"type": "object", "properties": {"a": {"type": "string"}}}
        result = to_anthropic(
            {
                "messages": [USER],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "r", "schema": schema},
                },
            }
        )
        self.assertEqual(
            result["output_config"],
            {"format": {"type": "json_schema", "schema": schema}},
        )

    def test_unknown_field(self) -> None:
        """
        An unknown field is refused by name.
        """
        e = self.assertRaises(
            TranslationError, to_anthropic, {"messages": [USER], "frobnicate": 1}
        )
        self.assertEqual(e.param, "frobnicate")
        self.assertEqual(e.message, "Unknown parameter 'frobnicate'.")
        self.assertEqual(str(e), e.message)

    def test_legacy_function_call_in_message(self) -> None:
        """
        A legacy C{function_call} in an assistant message is refused.
        """
        msg = {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}
        e = self.assertRaises(TranslationError, to_anthropic, {"messages": [USER, msg]})
        self.assertEqual(e.param, "messages[1].function_call")


class AnthropicRequestTests(SynchronousTestCase):
    """
    L{anthropic_request_to_openai}.
    """

    def test_basic_fields(self) -> None:
        """
        C{system} is the first message; sampling and stop fields carry over;
        C{max_tokens} goes to the named field; a stream asks for usage.
        """
        body = {
            "system": "be brief",
            "messages": [USER],
            "temperature": 0.5,
            "top_p": 0.8,
            "stop_sequences": ["END"],
            "stream": True,
            "metadata": {"user_id": "u"},
            "service_tier": "auto",
            "thinking": {"type": "disabled"},
        }
        self.assertEqual(
            to_openai(body, max_tokens_field="max_completion_tokens"),
            {
                "model": "gpt",
                "messages": [{"role": "system", "content": "be brief"}, USER],
                "max_completion_tokens": 100,
                "temperature": 0.5,
                "top_p": 0.8,
                "stop": ["END"],
                "stream": True,
                "stream_options": {"include_usage": True},
                # Issue 9: metadata.user_id is the user.
                "user": "u",
            },
        )
        result = to_openai({"messages": [USER], "stream": False}, upstream_model=None)
        self.assertEqual(result["max_tokens"], 100)
        self.assertEqual(result["model"], "claude")
        self.assertNotIn("stream_options", result)

    def test_system_blocks(self) -> None:
        """
        A C{system} list of text blocks is one system message.
        """
        system = [
            {"type": "text", "text": "A"},
            {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}},
        ]
        result = to_openai({"system": system, "messages": [USER]})
        self.assertEqual(result["messages"][0], {"role": "system", "content": "A\n\nB"})

    def test_tool_use_and_results(self) -> None:
        """
        C{tool_use} blocks are C{tool_calls} with compact JSON arguments;
        C{tool_result} blocks are C{tool} messages before the rest of their
        user message; an error result is marked.
        """
        result = to_openai(
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": "hmm", "signature": "s"},
                            {"type": "text", "text": "Checking."},
                            {
                                "type": "tool_use",
                                "id": "toolu_1",
                                "name": "get_weather",
                                "input": {"location": "Paris, FR", "unit": "°C"},
                            },
                            {
                                "type": "tool_use",
                                "id": "toolu_2",
                                "name": "get_time",
                                "input": {},
                            },
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_1",
                                "content": [
                                    {"type": "text", "text": "18"},
                                    {"type": "text", "text": "sunny"},
                                ],
                            },
                            {"type": "text", "text": "and?"},
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_2",
                                "content": "no clock",
                                "is_error": True,
                            },
                        ],
                    },
                ]
            }
        )
        self.assertEqual(
            result["messages"][1:],
            [
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        call(
                            "toolu_1",
                            "get_weather",
                            '{"location":"Paris, FR","unit":"°C"}',
                        ),
                        call("toolu_2", "get_time", "{}"),
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18\n\nsunny"},
                {
                    "role": "tool",
                    "tool_call_id": "toolu_2",
                    "content": TOOL_ERROR_PREFIX + "no clock",
                },
                {"role": "user", "content": "and?"},
            ],
        )

    def test_only_tool_use(self) -> None:
        """
        An assistant turn of tool calls only has null content; a user turn of
        tool results only has no user message.
        """
        result = to_openai(
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "t", "name": "f", "input": {}}
                        ],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t"}],
                    },
                ]
            }
        )
        self.assertIsNone(result["messages"][1]["content"])
        self.assertEqual(
            result["messages"][2:],
            [{"role": "tool", "tool_call_id": "t", "content": ""}],
        )

    def test_images(self) -> None:
        """
        Image blocks are C{image_url} parts: base64 as a C{data:} URL.
        """
        result = to_openai(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/jpeg",
                                    "data": "/9j/4AAQ",
                                },
                            },
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x/y.png"},
                            },
                            {"type": "text", "text": "what?"},
                        ],
                    }
                ]
            }
        )
        self.assertEqual(
            result["messages"][0]["content"],
            [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"},
                },
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "text", "text": "what?"},
            ],
        )

    def test_tools_and_choice(self) -> None:
        """
        Tools become functions; each C{tool_choice} maps back, and
        C{disable_parallel_tool_use} to C{parallel_tool_calls: false}.
        """
        schema = {"type": "object", "properties": {}}
        tools = [{"name": "f", "description": "F.", "input_schema": schema}]
        cases: list[tuple[JSON, Any, Any]] = [
            ({"type": "auto"}, "auto", None),
            ({"type": "none"}, "none", None),
            ({"type": "any"}, "required", None),
            (
                {"type": "tool", "name": "f"},
                {"type": "function", "function": {"name": "f"}},
                None,
            ),
            ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
            ({"type": "any", "disable_parallel_tool_use": False}, "required", None),
        ]
        for choice, expected, parallel in cases:
            result = to_openai(
                {"messages": [USER], "tools": tools, "tool_choice": choice}
            )
            self.assertEqual(
                result["tools"],
                [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "description": "F.",
                            "parameters": schema,
                        },
                    }
                ],
            )
            self.assertEqual(result["tool_choice"], expected)
            self.assertEqual(result.get("parallel_tool_calls"), parallel)

    def test_refused(self) -> None:
        """
        Fields, tools and blocks OpenAI cannot express are refused by name.
        """
        cases: list[tuple[JSON, str]] = [
            ({"top_k": 5}, "top_k"),
            ({"mcp_servers": []}, "mcp_servers"),
            ({"frobnicate": True}, "frobnicate"),
            (
                {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
                "tools[0]",
            ),
            ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
            ({"tool_choice": {"type": "any"}}, "tool_choice"),
            ({"tool_choice": {"type": "magic"}}, "tool_choice"),
            ({"system": [{"type": "image"}]}, "system[0]"),
            ({"system": 3}, "system"),
        ]
        for extra, param in cases:
            e = self.assertRaises(
                TranslationError, to_openai, {"messages": [USER], **extra}
            )
            self.assertEqual(e.param, param, extra)
        # Issue 9: thinking translates to an effort level.
        result = to_openai(
            {"messages": [USER], "thinking": {"type": "enabled", "budget_tokens": 2000}}
        )
        self.assertEqual(result["reasoning_effort"], "low")
        doc = {"type": "document", "source": {"type": "text", "data": "x"}}
        e = self.assertRaises(
            TranslationError,
            to_openai,
            {"messages": [{"role": "user", "content": [doc]}]},
        )
        self.assertEqual(e.param, "messages[0].content[0]")

    def test_wrong_types(self) -> None:
        """
        Malformed client input is a L{TranslationError}, never a C{KeyError}.
        """
        cases: list[tuple[Any, str]] = [
            ({"messages": None}, "messages"),
            ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
            ({"messages": [{"role": "system", "content": 5}]}, "messages[0].content"),
            ({"messages": [{"role": "user"}]}, "messages[0].content"),
            (
                {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
                "messages[0].content[0].text",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "assistant",
                            "content": [{"type": "tool_use", "name": "f"}],
                        }
                    ]
                },
                "messages[0].content[0].id",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image", "source": {"type": "file"}}],
                        }
                    ]
                },
                "messages[0].content[0].source",
            ),
            ({"messages": [USER], "stop_sequences": "END"}, "stop_sequences"),
            ({"messages": [USER], "max_tokens": -1}, "max_tokens"),
        ]
        for body, param in cases:
            e = self.assertRaises(TranslationError, to_openai, body)
            self.assertEqual(e.param, param, body)


class OpenAIResponseTests(SynchronousTestCase):
    """
    L{openai_response_to_anthropic}.
    """

    def test_text(self) -> None:
        """
        Text, id, the upstream's model, stop reason and usage map over.
        """
        resp = openai_completion({"role": "assistant", "content": "Hello!"})
        self.assertEqual(
            openai_response_to_anthropic(resp, model="ignored"),
            {
                "id": "chatcmpl-1",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o-2024-08-06",
                "content": [{"type": "text", "text": "Hello!"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 19, "output_tokens": 5},
            },
        )

    def test_tool_calls(self) -> None:
        """
        Tool calls are C{tool_use} blocks with parsed input.
        """
        resp = openai_completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    call("call_a", "get_weather", '{"location":"Paris, France"}'),
                    call("call_b", "get_time", ""),
                ],
            },
            "tool_calls",
        )
        result = openai_response_to_anthropic(resp)
        self.assertEqual(
            result["content"],
            [
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "get_weather",
                    "input": {"location": "Paris, France"},
                },
                {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}},
            ],
        )
        self.assertEqual(result["stop_reason"], "tool_use")

    def test_stop_reasons(self) -> None:
        """
        C{finish_reason} maps per the event model.
        """
        for finish, expected in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
            ("something_new", "end_turn"),
        ]:
            resp = openai_completion({"role": "assistant", "content": "x"}, finish)
            self.assertEqual(
                openai_response_to_anthropic(resp)["stop_reason"], expected
            )

    def test_usage_cached_and_missing(self) -> None:
        """
        Cached prompt tokens are reported as cache reads; no usage is zero;
        no model falls back to the given one.
        """
        resp = openai_completion({"role": "assistant", "content": "x"})
        resp["usage"]["prompt_tokens_details"] = {"cached_tokens": 15}
        self.assertEqual(
            openai_response_to_anthropic(resp)["usage"],
            {"input_tokens": 4, "output_tokens": 5, "cache_read_input_tokens": 15},
        )
        del resp["usage"], resp["model"]
        result = openai_response_to_anthropic(resp, model="local")
        self.assertEqual(result["usage"], {"input_tokens": 0, "output_tokens": 0})
        self.assertEqual(result["model"], "local")

    def test_refusal(self) -> None:
        """
        A refusal without text is the text of the reply.
        """
        resp = openai_completion(
            {"role": "assistant", "content": None, "refusal": "No."}
        )
        self.assertEqual(
            openai_response_to_anthropic(resp)["content"],
            [{"type": "text", "text": "No."}],
        )

    def test_malformed(self) -> None:
        """
        A malformed upstream response is an L{UpstreamFormatError}, which is a
        L{ProviderError} and a C{ValueError}.
        """
        good = {"role": "assistant", "content": "x"}
        bad: list[Any] = [
            [],
            {},
            {"choices": []},
            {"choices": ["x"]},
            {"choices": [{"message": None}]},
            openai_completion({"role": "assistant", "content": 5}),
            openai_completion({"role": "assistant", "tool_calls": "x"}),
            openai_completion({"role": "assistant", "tool_calls": [{"id": "c"}]}),
            openai_completion(
                {"role": "assistant", "tool_calls": [call("c", "f", "{")]}
            ),
            openai_completion(
                {"role": "assistant", "tool_calls": [call("c", "f", "[]")]}
            ),
            openai_completion(good, usage={"prompt_tokens": "many"}),
            openai_completion(good, usage=[1]),
        ]
        for resp in bad:
            e = self.assertRaises(
                UpstreamFormatError, openai_response_to_anthropic, resp
            )
            self.assertIsInstance(e, ProviderError)
            self.assertIsInstance(e, ValueError)
            self.assertIsNone(e.status)


class AnthropicResponseTests(SynchronousTestCase):
    """
    L{anthropic_response_to_openai}.
    """

    def test_text_and_tool_use(self) -> None:
        """
        Text blocks join into the content, thinking is C{reasoning_content}
        and C{thinking_blocks}, tool uses are tool calls; id, model, stop
        reason and usage map over.
        """
        resp = anthropic_message(
            [
                {"type": "thinking", "thinking": "...", "signature": "sig"},
                {"type": "text", "text": "Okay, let's check "},
                {"type": "text", "text": "the weather:"},
                {
                    "type": "tool_use",
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA", "unit": "fahrenheit"},
                },
            ],
            "tool_use",
        )
        self.assertEqual(
            anthropic_response_to_openai(resp, created=1700000000),
            {
                "id": "msg_1",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "claude-sonnet-4-20250514",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "Okay, let's check the weather:",
                            "refusal": None,
                            "tool_calls": [
                                call(
                                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                                    "get_weather",
                                    '{"location":"San Francisco, CA",'
                                    '"unit":"fahrenheit"}',
                                )
                            ],
                            # Issue 9: thinking reaches Chat Completions
                            # clients, signed blocks ready to come back.
                            "reasoning_content": "...",
                            "thinking_blocks": [
                                {
                                    "type": "thinking",
                                    "thinking": "...",
                                    "signature": "sig",
                                }
                            ],
                        },
                        "logprobs": None,
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {
                    "prompt_tokens": 472,
                    "completion_tokens": 89,
                    "total_tokens": 561,
                },
            },
        )

    def test_stop_reasons(self) -> None:
        """
        C{stop_reason} maps per the event model.
        """
        for stop, expected in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            (None, "stop"),
        ]:
            resp = anthropic_message([{"type": "text", "text": "x"}], stop)
            choice = anthropic_response_to_openai(resp)["choices"][0]
            self.assertEqual(choice["finish_reason"], expected)

    def test_only_tool_use_and_cache_usage(self) -> None:
        """
        Tool calls alone leave the content null; cache reads and writes count
        as prompt tokens, reads as cached.
        """
        resp = anthropic_message(
            [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            "tool_use",
            usage={
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
            },
        )
        result = anthropic_response_to_openai(resp)
        self.assertIsNone(result["choices"][0]["message"]["content"])
        self.assertIsInstance(result["created"], int)
        self.assertEqual(
            result["usage"],
            {
                "prompt_tokens": 1110,
                "completion_tokens": 3,
                "total_tokens": 1113,
                "prompt_tokens_details": {"cached_tokens": 1000},
            },
        )

    def test_malformed(self) -> None:
        """
        A malformed upstream message is an L{UpstreamFormatError}.
        """
        text = [{"type": "text", "text": "x"}]
        bad: list[Any] = [
            None,
            {},
            anthropic_message([{"text": "x"}]),
            anthropic_message([{"type": "text"}]),
            anthropic_message(
                [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]
            ),
            anthropic_message(text, stop=3),
            anthropic_message(text, usage=None),
            anthropic_message(text, usage={"input_tokens": -1}),
            anthropic_message(text, id=None),
            anthropic_message(text, model=7),
        ]
        for resp in bad:
            self.assertRaises(UpstreamFormatError, anthropic_response_to_openai, resp)


# -- round trip ---------------------------------------------------------------

_text = st.text(min_size=1, max_size=20)
_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_inputs = st.dictionaries(st.text(max_size=8), _json_value, max_size=4)


@st.composite
def _conversation(draw: st.DrawFn) -> JSON:
    """
    An Anthropic conversation of alternating turns: user turns of tool
    results (answering the previous turn's calls) then text, assistant turns
    of text then tool uses.
    """
    messages: list[JSON] = []
    pending: list[str] = []
    for turn in range(draw(st.integers(1, 6))):
        if turn % 2 == 0:
            content: list[JSON] = [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_id,
                    "content": draw(st.text(max_size=20)),
                }
                for tool_id in pending
            ]
            content += [
                {"type": "text", "text": t} for t in draw(st.lists(_text, max_size=3))
            ]
            if not content:
                content = [{"type": "text", "text": draw(_text)}]
            messages.append({"role": "user", "content": content})
            pending = []
        else:
            content = [
                {"type": "text", "text": t} for t in draw(st.lists(_text, max_size=2))
            ]
            pending = draw(st.lists(_ids, max_size=3, unique=True))
            content += [
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": draw(_ids),
                    "input": draw(_inputs),
                }
                for tool_id in pending
            ]
            if not content:
                content = [{"type": "text", "text": draw(_text)}]
            messages.append({"role": "assistant", "content": content})
    body: JSON = {"model": "m", "max_tokens": 64, "messages": messages}
    system = draw(st.none() | st.text(max_size=20))
    if system is not None:
        body["system"] = system
    return body


def _normalise(messages: list[JSON]) -> list[JSON]:
    """
    Messages with list content, and an assistant's text blocks joined (as
    OpenAI has one assistant text).
    """
    result = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if msg["role"] == "assistant":
            text = "".join(b["text"] for b in content if b["type"] == "text")
            rest = [b for b in content if b["type"] != "text"]
            content = ([{"type": "text", "text": text}] if text else []) + rest
        result.append({"role": msg["role"], "content": content})
    return result


class RoundTripTests(SynchronousTestCase):
    """
    Anthropic -> OpenAI -> Anthropic keeps a conversation.
    """

    @settings(max_examples=300, deadline=None)
    @given(_conversation())
    def test_round_trip(self, body: JSON) -> None:
        """
        Messages, tool uses (ids, names, inputs), tool results and the system
        prompt survive the round trip.
        """
        openai = anthropic_request_to_openai(body, upstream_model=None)
        json.dumps(openai)
        back = openai_request_to_anthropic(openai, upstream_model=None)
        self.assertEqual(_normalise(back["messages"]), _normalise(body["messages"]))
        self.assertEqual(back.get("system"), body.get("system"))
        self.assertEqual(back["max_tokens"], body["max_tokens"])


class SDKShapeTests(SynchronousTestCase):
    """
    The translated responses validate against the official SDKs' types, as
    an SDK pointed at the gateway parses them.
    """

    def test_anthropic_message(self) -> None:
        """
        L{openai_response_to_anthropic} gives a valid C{anthropic} Message.
        """
        from anthropic.types import Message

        resp = openai_completion(
            {
                "role": "assistant",
                "content": "Hi",
                "tool_calls": [call("c", "f", '{"a": [1]}')],
            },
            "tool_calls",
        )
        resp["usage"]["prompt_tokens_details"] = {"cached_tokens": 3}
        message = Message.model_validate(
            openai_response_to_anthropic(resp), strict=True
        )
        self.assertEqual(message.stop_reason, "tool_use")
        self.assertEqual(message.usage.cache_read_input_tokens, 3)

    def test_openai_completion(self) -> None:
        """
        L{anthropic_response_to_openai} gives a valid C{openai} ChatCompletion.
        """
        from openai.types.chat import ChatCompletion

        resp = anthropic_message(
            [
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
            ],
            "tool_use",
        )
        completion = ChatCompletion.model_validate(
            anthropic_response_to_openai(resp), strict=True
        )
        self.assertEqual(completion.choices[0].finish_reason, "tool_calls")
        calls = completion.choices[0].message.tool_calls
        assert calls is not None
        self.assertEqual(calls[0].model_dump()["function"]["arguments"], '{"a":1}')


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "type",
                    "text",
                    "tool_calls",
                    "function",
                    "arguments",
                    "name",
                    "id",
                    "input",
                    "tool_call_id",
                    "tool_use_id",
                    "image_url",
                    "url",
                    "source",
                    "choices",
                    "message",
                    "usage",
                    "model",
                    "finish_reason",
                    "stop_reason",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


class MalformedInputTests(SynchronousTestCase):
    """
    Arbitrary JSON never escapes as anything but the documented errors.
    """

    @settings(max_examples=300, deadline=None)
    @given(_junk, _junk, _junk)
    def test_requests(self, messages: Any, tools: Any, choice: Any) -> None:
        """
        Requests either translate or raise L{TranslationError}.
        """
        body = {"model": "m", "messages": messages, "tools": tools}
        for translate in (openai_request_to_anthropic, anthropic_request_to_openai):
            for extra in ({}, {"tool_choice": choice}, {"system": choice}):
                try:
                    translate({**body, **extra}, upstream_model=None)
                except TranslationError:
                    pass

    @settings(max_examples=300, deadline=None)
    @given(_junk)
    def test_responses(self, resp: Any) -> None:
        """
        Responses either translate or raise L{UpstreamFormatError}.
        """
        for translate in (openai_response_to_anthropic, anthropic_response_to_openai):
            try:
                translate(resp)
            except UpstreamFormatError:
                pass
