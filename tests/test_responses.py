"""
C{POST /v1/responses} (issue 10): the official C{openai} SDK's
C{responses.create} and C{responses.stream} against the gateway, with the
fake provider as the upstream: translated to Chat Completions (model
C{local}), to Messages (model C{claude}), and passed through to an upstream
that speaks Responses (model C{gpt}, provider C{openai}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import openai
import treq
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai.formats import responses
from pylon_ai.formats.canonical import STRUCTURED_OUTPUT_TOOL
from pylon_ai.gateway._config import ConfigError, parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.gateway._translation import Translation
from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall

try:
    from tests._service import CLIENT_KEY, models, sse_events
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import CLIENT_KEY, models, sse_events  # type: ignore[no-redef]

T = TypeVar("T")

THINKING = ("Paris is ", "in France.")
SIGNATURE = "sig-EqQBCkgIAxABGAIiQL"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}
JSON_FORMAT = {
    "format": {
        "type": "json_schema",
        "name": "person",
        "schema": SCHEMA,
        "strict": True,
    }
}
NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Agents.",
    "tools": [
        {
            "type": "function",
            "name": "spawn",
            "description": "Start an agent.",
            "parameters": {
                "type": "object",
                "properties": {"task": {"type": "string"}},
            },
        }
    ],
}
WEB_SEARCH = {"type": "web_search", "external_web_access": False}
#: A Responses stream as an upstream might write it, by hand: pass-through
#: must hand these very bytes on.
RAW_STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":'
    b'{"id":"resp_raw1","object":"response","created_at":1700000000,'
    b'"status":"in_progress","model":"gpt-up-raw","output":[],"x_new":1}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":1,'
    b'"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}\n\n'
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":2,"response":'
    b'{"id":"resp_raw1","object":"response","created_at":1700000000,'
    b'"status":"completed","model":"gpt-up-raw","output":[],'
    b'"usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9}}}\n\n'
)
#: A whole Responses object with odd spacing and unknown fields.
RAW_BODY = (
    b'{"id":"resp_whole1","object":"response","created_at":1700000000,'
    b'"status":"completed",  "model":"gpt-up-2025","output":[{"id":"msg_1",'
    b'"type":"message","role":"assistant","status":"completed","content":'
    b'[{"type":"output_text","text":"Hello!","annotations":[]}]}],'
    b'"usage":{"input_tokens":11,"output_tokens":5,"total_tokens":16},'
    b'"x_future_field":{"nested":[1,2.50]}}'
)
WAIT = 10.0


def in_thread(f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run a blocking SDK call off the reactor thread.
    """
    return deferToThread(f, *args, **kwargs)


class _Gateway(TestCase):
    """
    A gateway in front of a fake upstream, with the models of
    L{tests._service.models} and two more: C{strict} (Chat Completions,
    C{strict_tools}) and C{first} (Responses, falling back to C{claude}).
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)
        base = self.fake.base_url
        extra = [
            {
                "name": "strict",
                "provider": "custom",
                "base_url": base,
                "api_key": "",
                "strict_tools": True,
                "retries": 0,
            },
            {
                "name": "vllm",
                "provider": "custom",
                "base_url": base,
                "api_key": "",
                "responses": True,
                "retries": 0,
            },
            {
                "name": "first",
                "provider": "openai",
                "model": "first-up",
                "api_key": "sk-up-first",
                "base_url": base,
                "retries": 0,
                "fallbacks": ["claude"],
            },
        ]
        config = parse_config(
            {
                "server": {"api_keys": [CLIENT_KEY]},
                "models": [*models(base), *extra],
            },
            {},
        )
        self.gateway = Gateway(config, reactor)
        self.addCleanup(self.gateway.close)
        site = make_site(self.gateway)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=CLIENT_KEY, max_retries=0
        )

    def create(self, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("input", "Paris?")
        return in_thread(self.client().responses.create, **kwargs)

    def stream(self, **kwargs: Any) -> Deferred[tuple[list[Any], Any]]:
        """
        C{responses.stream}: its events and its final response.
        """
        client = self.client()
        kwargs.setdefault("input", "Paris?")

        def run() -> tuple[list[Any], Any]:
            with client.responses.stream(**kwargs) as stream:
                events = list(stream)
                return events, stream.get_final_response()

        return in_thread(run)

    async def post(self, body: dict[str, Any]) -> tuple[int, bytes]:
        response = await self.http.post(
            self.url + "/v1/responses",
            data=json.dumps(body).encode(),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {CLIENT_KEY}",
            },
        )
        content = await treq.content(response)
        return response.code, content

    def sent(self, number: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = self.fake.requests[number].json
        return body

    def path(self, number: int = -1) -> str:
        return self.fake.requests[number].path

    def tokens(self, model: str, direction: str) -> float | None:
        value = self.gateway.metrics.registry.get_sample_value(
            "pylon_tokens_total", {"model": model, "direction": direction}
        )
        return value

    def requests_total(self, model: str, status: str) -> float | None:
        value = self.gateway.metrics.registry.get_sample_value(
            "pylon_requests_total",
            {"route": "/v1/responses", "model": model, "status": status},
        )
        return value


if TYPE_CHECKING:
    _Mixin = _Gateway
else:
    _Mixin = object


class _Translated(_Mixin):
    """
    What every translated model does; C{model} and C{upstream_path} say
    which (a mixin: not collected on its own).
    """

    model = ""
    upstream_path = ""

    def tool_calls_sent(self) -> list[tuple[str, str, dict[str, Any]]]:
        """
        The (id, name, arguments) of the assistant's tool calls in the last
        upstream request.
        """
        raise NotImplementedError

    def tool_results_sent(self) -> list[tuple[str, str]]:
        """
        The (call id, output) of the tool results in the last upstream
        request.
        """
        raise NotImplementedError

    async def test_create_text(self) -> None:
        """
        C{responses.create}: the upstream gets its own format; the client a
        response object with the text, the model and the usage.
        """
        self.fake.enqueue(FakeReply(["Hello", " there."], usage=(12, 3)))
        reply = await self.create(model=self.model, instructions="Be brief.")
        self.assertEqual(self.path(), self.upstream_path)
        self.assertEqual(reply.output_text, "Hello there.")
        self.assertEqual(reply.status, "completed")
        self.assertTrue(reply.id.startswith("resp_"))
        self.assertEqual(reply.usage.input_tokens, 12)
        self.assertEqual(reply.usage.output_tokens, 3)
        self.assertEqual(reply.instructions, "Be brief.")
        self.assertEqual(self.tokens(self.model, "in"), 12)
        self.assertEqual(self.tokens(self.model, "out"), 3)
        self.assertEqual(self.requests_total(self.model, "200"), 1)

    async def test_stream_text(self) -> None:
        """
        C{responses.stream}: the event sequence the SDK parses, text deltas
        as the upstream sent them, the usage from C{response.completed}.
        """
        self.fake.enqueue(FakeReply(["Hello", " there."], usage=(12, 3)))
        events, final = await self.stream(model=self.model)
        kinds = [e.type for e in events]
        self.assertEqual(kinds[:2], ["response.created", "response.in_progress"])
        self.assertEqual(kinds[-1], "response.completed")
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        self.assertEqual(deltas, ["Hello", " there."])
        self.assertEqual(final.output_text, "Hello there.")
        self.assertEqual(final.usage.input_tokens, 12)
        self.assertEqual(self.tokens(self.model, "out"), 3)
        sequence = [e.sequence_number for e in events]
        self.assertEqual(sequence, list(range(len(events))))

    async def test_tool_round(self) -> None:
        """
        A function call arrives as a C{function_call} item; the next request
        sends it back with its output, and the upstream gets the call and
        its result in its own format.
        """
        self.fake.enqueue(
            FakeReply(
                tool_calls=[
                    FakeToolCall("call_w1", "get_weather", ['{"city": ', '"Paris"}'])
                ]
            )
        )
        events, final = await self.stream(model=self.model, tools=[WEATHER])
        calls = [item for item in final.output if item.type == "function_call"]
        self.assertEqual(len(calls), 1)
        call = calls[0]
        self.assertEqual(call.name, "get_weather")
        self.assertEqual(call.call_id, "call_w1")
        self.assertEqual(json.loads(call.arguments), {"city": "Paris"})
        self.assertIn("response.function_call_arguments.done", [e.type for e in events])

        self.fake.enqueue(FakeReply(["Sunny."]))
        reply = await self.create(
            model=self.model,
            tools=[WEATHER],
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": "22 C",
                },
            ],
        )
        self.assertEqual(reply.output_text, "Sunny.")
        self.assertEqual(
            self.tool_calls_sent(), [("call_w1", "get_weather", {"city": "Paris"})]
        )
        self.assertEqual(self.tool_results_sent(), [("call_w1", "22 C")])

    async def test_json_schema(self) -> None:
        """
        C{text.format} json_schema reaches the upstream as its structured
        output, and the JSON comes back as the response's text, streamed
        and not.
        """
        self.fake.enqueue(FakeReply(['{"name"', ': "Ada"}']))
        reply = await self.create(model=self.model, text=JSON_FORMAT)
        self.assertEqual(json.loads(reply.output_text), {"name": "Ada"})
        self.assert_schema_sent()
        self.fake.enqueue(FakeReply(['{"name"', ': "Ada"}']))
        _, final = await self.stream(model=self.model, text=JSON_FORMAT)
        self.assertEqual(json.loads(final.output_text), {"name": "Ada"})

    def assert_schema_sent(self) -> None:
        raise NotImplementedError

    async def test_namespace_call_mapped_back(self) -> None:
        """
        A namespace tool reaches the upstream as a flat function; a call of
        it comes back under the client's namespace and name.
        """
        flat = "multi_agent_v1__spawn"
        for _ in range(2):
            self.fake.enqueue(
                FakeReply(tool_calls=[FakeToolCall("call_n1", flat, ['{"task":"x"}'])])
            )
        reply = await self.create(model=self.model, tools=[NAMESPACE, WEATHER])
        self.assertIn(flat, json.dumps(self.sent()))
        call = reply.output[0].to_dict()
        self.assertEqual((call["name"], call["namespace"]), ("spawn", "multi_agent_v1"))
        _, final = await self.stream(model=self.model, tools=[NAMESPACE])
        call = final.output[0].to_dict()
        self.assertEqual((call["name"], call["namespace"]), ("spawn", "multi_agent_v1"))

    async def test_web_search_dropped(self) -> None:
        """
        A hosted tool the upstream cannot run is dropped: the request
        succeeds with the other tools.
        """
        self.fake.enqueue(FakeReply(["ok"]))
        reply = await self.create(model=self.model, tools=[WEB_SEARCH, WEATHER])
        self.assertEqual(reply.output_text, "ok")
        sent = json.dumps(self.sent()["tools"])
        self.assertIn("get_weather", sent)
        self.assertNotIn("web_search", sent)

    async def test_dropped_tools_logged(self) -> None:
        """
        The dropped hosted tools are logged once, by type, with no prompt.
        """
        logged: list[dict[str, Any]] = []
        self.patch(Translation, "log", Logger(observer=logged.append))
        self.fake.enqueue(FakeReply(["ok"]))
        await self.create(
            model=self.model, input="secret prompt", tools=[WEB_SEARCH, WEATHER]
        )
        self.assertEqual(len(logged), 1)
        text = formatEvent(logged[0])
        self.assertIn("web_search", text)
        self.assertIn(self.model, text)
        self.assertNotIn("secret prompt", repr(logged[0]))

    async def test_previous_response_id_refused(self) -> None:
        """
        The gateway keeps no state: C{previous_response_id} is a 400 that
        says so, in OpenAI's error shape; nothing goes upstream.
        """
        status, body = await self.post(
            {"model": self.model, "input": "hi", "previous_response_id": "resp_1"}
        )
        self.assertEqual(status, 400)
        error = json.loads(body)["error"]
        self.assertIn("stateless", error["message"])
        self.assertEqual(error["param"], "previous_response_id")
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertEqual(self.fake.requests, [])

    async def test_store_ignored(self) -> None:
        """
        C{store: true} is accepted (and nothing is stored: the response
        says C{store: false}).
        """
        self.fake.enqueue(FakeReply(["ok"]))
        reply = await self.create(model=self.model, store=True)
        self.assertEqual(reply.output_text, "ok")
        self.assertFalse(reply.store)

    async def test_failure_after_start(self) -> None:
        """
        An upstream that breaks off mid-stream ends the client's stream with
        an C{error} event and C{response.failed}.
        """
        self.fake.enqueue(FakeReply(["a", "b", "c"], drop_after=1))
        status, body = await self.post(
            {"model": self.model, "input": "hi", "stream": True}
        )
        self.assertEqual(status, 200)
        names = [name for name, _ in sse_events(body)]
        self.assertIn("response.output_text.delta", names)
        self.assertEqual(names[-2:], ["error", "response.failed"])
        failed = json.loads(sse_events(body)[-1][1])
        self.assertEqual(failed["response"]["status"], "failed")

    async def test_upstream_error_before_start(self) -> None:
        """
        An upstream refusal before anything was sent is an error body in
        OpenAI's shape, with the upstream's status for a client mistake.
        """
        self.fake.enqueue(FakeReply(status=400, message="bad thing"))
        status, body = await self.post(
            {"model": self.model, "input": "hi", "stream": True}
        )
        self.assertEqual(status, 400)
        self.assertIn("bad thing", json.loads(body)["error"]["message"])


class ChatUpstreamTests(_Translated, _Gateway):
    """
    Model C{local}: a custom endpoint that speaks Chat Completions.
    """

    model = "local"
    upstream_path = "/v1/chat/completions"

    def tool_calls_sent(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for m in self.sent()["messages"]
            for c in m.get("tool_calls") or ()
        ]

    def tool_results_sent(self) -> list[tuple[str, str]]:
        return [
            (m["tool_call_id"], m["content"])
            for m in self.sent()["messages"]
            if m["role"] == "tool"
        ]

    def assert_schema_sent(self) -> None:
        sent = self.sent(-1)["response_format"]
        self.assertEqual(sent["type"], "json_schema")
        self.assertEqual(sent["json_schema"]["schema"], SCHEMA)

    async def test_strict_tools(self) -> None:
        """
        On a model with C{strict_tools}, a hosted tool is a 400 naming it,
        and nothing goes upstream.
        """
        status, body = await self.post(
            {"model": "strict", "input": "hi", "tools": [WEB_SEARCH]}
        )
        self.assertEqual(status, 400)
        self.assertIn("web_search", json.loads(body)["error"]["message"])
        self.assertEqual(self.fake.requests, [])


class AnthropicUpstreamTests(_Translated, _Gateway):
    """
    Model C{claude}: Anthropic's Messages.
    """

    model = "claude"
    upstream_path = "/v1/messages"

    def _blocks(self, kind: str) -> list[dict[str, Any]]:
        return [
            block
            for m in self.sent()["messages"]
            if isinstance(m["content"], list)
            for block in m["content"]
            if block["type"] == kind
        ]

    def tool_calls_sent(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(b["id"], b["name"], b["input"]) for b in self._blocks("tool_use")]

    def tool_results_sent(self) -> list[tuple[str, str]]:
        out = []
        for b in self._blocks("tool_result"):
            content = b["content"]
            if isinstance(content, list):
                content = "".join(c["text"] for c in content)
            out.append((b["tool_use_id"], content))
        return out

    def assert_schema_sent(self) -> None:
        self.assertIn("output_config", self.sent(-1))

    async def test_reasoning_round(self) -> None:
        """
        Scripted thinking arrives as a reasoning item with its summary and
        the signed block in C{encrypted_content}; sent back on the next
        turn, it reaches the upstream as the signed thinking block.
        """
        self.fake.enqueue(
            FakeReply(
                thinking=THINKING,
                signature=SIGNATURE,
                tool_calls=[
                    FakeToolCall("toolu_1", "get_weather", ['{"city":"Paris"}'])
                ],
            )
        )
        events, final = await self.stream(
            model=self.model,
            tools=[WEATHER],
            reasoning={"effort": "medium", "summary": "auto"},
            include=["reasoning.encrypted_content"],
            max_output_tokens=16000,
        )
        self.assertIn("thinking", self.sent())
        reasoning = final.output[0]
        self.assertEqual(reasoning.type, "reasoning")
        self.assertEqual("".join(s.text for s in reasoning.summary), "".join(THINKING))
        self.assertTrue(reasoning.encrypted_content)
        self.assertIn("response.reasoning_summary_text.delta", [e.type for e in events])
        call = final.output[1]

        self.fake.enqueue(FakeReply(["Sunny."]))
        await self.create(
            model=self.model,
            tools=[WEATHER],
            reasoning={"effort": "medium"},
            max_output_tokens=16000,
            input=[
                {"role": "user", "content": "Weather?"},
                reasoning.to_dict(),
                call.to_dict(),
                {
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": "22",
                },
            ],
        )
        self.assertEqual(
            self._blocks("thinking"),
            [
                {
                    "type": "thinking",
                    "thinking": "".join(THINKING),
                    "signature": SIGNATURE,
                }
            ],
        )

    async def test_json_object(self) -> None:
        """
        C{text.format} json_object, which Anthropic lacks, goes up as the
        forced structured-output tool; its call comes back as the text.
        """
        for _ in range(2):
            self.fake.enqueue(
                FakeReply(
                    tool_calls=[
                        FakeToolCall(
                            "toolu_s", STRUCTURED_OUTPUT_TOOL, ['{"name":', '"Ada"}']
                        )
                    ]
                )
            )
        text = {"format": {"type": "json_object"}}
        reply = await self.create(model=self.model, text=text, input="JSON please")
        self.assertEqual(self.sent()["tool_choice"]["name"], STRUCTURED_OUTPUT_TOOL)
        self.assertEqual(json.loads(reply.output_text), {"name": "Ada"})
        self.assertEqual([item.type for item in reply.output], ["message"])
        _, final = await self.stream(model=self.model, text=text, input="JSON please")
        self.assertEqual(json.loads(final.output_text), {"name": "Ada"})

    async def test_whole_reasoning(self) -> None:
        """
        Non-streaming, the reasoning item carries the signed block too.
        """
        self.fake.enqueue(FakeReply(["Yes."], thinking=THINKING, signature=SIGNATURE))
        reply = await self.create(
            model=self.model, reasoning={"effort": "low"}, max_output_tokens=16000
        )
        item = reply.output[0]
        self.assertEqual(item.type, "reasoning")
        part = responses.unpack_thinking(item.encrypted_content, "x")
        self.assertEqual(getattr(part, "signature", None), SIGNATURE)
        self.assertEqual(reply.output_text, "Yes.")


class PassThroughTests(_Gateway):
    """
    Model C{gpt}: provider C{openai}, whose upstream speaks Responses.
    """

    async def test_body_forwarded(self) -> None:
        """
        The client's body goes upstream as it is, but for the model, to
        C{/v1/responses}: hosted tools, namespaces and
        C{previous_response_id} included.
        """
        body = {
            "model": "gpt",
            "input": "hi",
            "tools": [WEB_SEARCH, NAMESPACE],
            "previous_response_id": "resp_earlier",
            "store": True,
            "x_unknown": {"a": 1},
        }
        status, _ = await self.post(body)
        self.assertEqual(status, 200)
        self.assertEqual(self.path(), "/v1/responses")
        self.assertEqual(self.sent(), {**body, "model": "gpt-up", "stream": False})
        self.assertEqual(
            self.fake.requests[-1].headers["authorization"], "Bearer sk-up-openai"
        )

    async def test_whole_byte_equal(self) -> None:
        """
        A non-streaming reply is the upstream's body, byte for byte; its
        usage is counted.
        """
        self.fake.enqueue(
            FakeReply(raw_body=RAW_BODY, headers={"content-type": "application/json"})
        )
        status, body = await self.post({"model": "gpt", "input": "hi"})
        self.assertEqual((status, body), (200, RAW_BODY))
        self.assertEqual(self.tokens("gpt", "in"), 11)
        self.assertEqual(self.tokens("gpt", "out"), 5)

    async def test_stream_untouched(self) -> None:
        """
        A stream goes to the client as the upstream sent it; its usage is
        counted from C{response.completed}.
        """
        self.fake.enqueue(
            FakeReply(
                raw_body=RAW_STREAM, headers={"content-type": "text/event-stream"}
            )
        )
        status, body = await self.post({"model": "gpt", "input": "hi", "stream": True})
        self.assertEqual((status, body), (200, RAW_STREAM))
        self.assertTrue(self.sent()["stream"])
        self.assertEqual(self.tokens("gpt", "in"), 7)
        self.assertEqual(self.tokens("gpt", "out"), 2)

    async def test_sdk(self) -> None:
        """
        The SDK, streaming and not, with a tool and reasoning, through the
        fake's own Responses replies.
        """
        self.fake.enqueue(FakeReply(["Hi", "!"], usage=(5, 2)))
        reply = await self.create(model="gpt")
        self.assertEqual(reply.output_text, "Hi!")
        self.fake.enqueue(
            FakeReply(tool_calls=[FakeToolCall("call_1", "get_weather", ['{"a":1}'])])
        )
        _, final = await self.stream(model="gpt", tools=[WEATHER])
        self.assertEqual(final.output[0].name, "get_weather")
        self.assertEqual(self.sent()["tools"], [WEATHER])

    async def test_custom_responses(self) -> None:
        """
        A custom model with C{responses = true} passes through to the
        Responses URL beside its base URL.
        """
        body = {"model": "vllm", "input": "hi", "tools": [WEB_SEARCH]}
        reply = await self.create(**body)
        self.assertEqual(reply.output_text, "Hello from the fake.")
        self.assertEqual(self.path(), "/v1/responses")
        self.assertEqual(self.sent()["tools"], [WEB_SEARCH])

    async def test_failure_after_start(self) -> None:
        """
        A pass-through stream that breaks off ends with an C{error} event
        and C{response.failed}, numbered after the upstream's events.
        """
        self.fake.enqueue(FakeReply(["a", "b", "c"], drop_after=1))
        status, body = await self.post({"model": "gpt", "input": "hi", "stream": True})
        self.assertEqual(status, 200)
        events = sse_events(body)
        self.assertEqual([n for n, _ in events][-2:], ["error", "response.failed"])
        numbers = [json.loads(data)["sequence_number"] for _, data in events]
        self.assertEqual(numbers, list(range(len(events))))
        self.assertEqual(json.loads(events[-1][1])["response"]["status"], "failed")

    async def test_fallback_to_other_format(self) -> None:
        """
        A Responses model that fails falls back to an Anthropic model, which
        gets the translated request.
        """
        self.fake.enqueue(FakeReply(status=500))
        self.fake.enqueue(FakeReply(["From claude."]))
        _, final = await self.stream(model="first")
        self.assertEqual(final.output_text, "From claude.")
        self.assertEqual(
            [r.path for r in self.fake.requests], ["/v1/responses", "/v1/messages"]
        )
        self.assertEqual(self.sent()["model"], "claude-up")


class RouteTests(_Gateway):
    """
    The route itself.
    """

    async def test_unknown_model(self) -> None:
        """
        An unknown model is a 404 in OpenAI's shape.
        """
        status, body = await self.post({"model": "nope", "input": "hi"})
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "model_not_found")

    async def test_bad_body(self) -> None:
        """
        A body without a model, or with a bad input, is a 400 naming the
        field.
        """
        status, body = await self.post({"input": "hi"})
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["error"]["param"], "model")
        status, body = await self.post({"model": "local", "input": 5})
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["error"]["param"], "input")

    async def test_mock(self) -> None:
        """
        The built-in mock answers through the Responses route too.
        """
        reply = await self.create(model="mock")
        self.assertTrue(reply.output_text)
        _, final = await self.stream(model="mock")
        self.assertTrue(final.output_text)


class ConfigTests(SynchronousTestCase):
    """
    The per-model keys C{responses} and C{strict_tools}.
    """

    def config(self, **model: Any) -> Any:
        entry = {"name": "m", "provider": "custom", "base_url": "http://h:1"}
        return parse_config({"models": [{**entry, **model}]}, {})

    def test_defaults(self) -> None:
        """
        Provider C{openai} speaks Responses by default; the others do not;
        C{strict_tools} is off.
        """
        custom = self.config().models[0]
        self.assertFalse(custom.responses)
        self.assertFalse(custom.strict_tools)
        openai_model = self.config(
            provider="openai", model="g", api_key="k", base_url="https://x"
        ).models[0]
        self.assertTrue(openai_model.responses)

    def test_set(self) -> None:
        """
        Both keys take booleans.
        """
        model = self.config(responses=True, strict_tools=True).models[0]
        self.assertTrue(model.responses)
        self.assertTrue(model.strict_tools)
        with self.assertRaises(ConfigError) as e:
            self.config(responses="yes")
        self.assertIn("responses", str(e.exception))

    def test_responses_needs_openai_format(self) -> None:
        """
        C{responses = true} on an Anthropic model is refused.
        """
        with self.assertRaises(ConfigError) as e:
            self.config(provider="anthropic", model="c", api_key="k", responses=True)
        self.assertIn("responses", str(e.exception))
