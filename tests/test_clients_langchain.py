"""
LangChain's chat models as the gateway's clients: C{with_structured_output}
across formats, with the methods LangChain defaults to and the other one,
in front of a L{FakeProvider}.

C{langchain-openai} and C{langchain-anthropic} come with the test extra
(C{pip install '.[test]'}); without them the tests skip, except in CI
(C{CI=true}), where a missing install is a failure.

LangChain's C{invoke} is synchronous: each call runs in a thread
(L{deferToThread}) so that the reactor keeps serving it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pydantic

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall

try:
    from tests._service import CLIENT_KEY, Service, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import (  # type: ignore[no-redef]
        CLIENT_KEY,
        Service,
        start_service,
    )


class Person(pydantic.BaseModel):
    """
    A person, as the model is asked to describe one.
    """

    name: str = pydantic.Field(description="The person's name")
    age: int = pydantic.Field(description="Age in years")


PERSON = Person(name="Ada", age=36)
PERSON_CHUNKS = ('{"name": ', '"Ada", "age"', ": 36}")


def require(module: str) -> ModuleType:
    """
    Import C{module}.

    @raise SkipTest: It is not installed, outside CI.
    @raise RuntimeError: It is not installed, in CI (C{CI=true}).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = (
            f"{module} is not installed: pip install '.[test]'"
            " (or pip install langchain-openai langchain-anthropic)"
        )
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(message) from e
        raise SkipTest(message) from e


def property_types(schema: dict[str, Any]) -> dict[str, str]:
    """
    The type of each property of an object schema.
    """
    return {name: p["type"] for name, p in schema["properties"].items()}


class _LangChain:
    """
    A mixin for L{TestCase}: a gateway in front of a fake.
    """

    service: Service

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)

    @property
    def fake(self) -> FakeProvider:
        return self.service.fake

    def sent(self, number: int = -1) -> dict[str, Any]:
        """
        The JSON body of a request the upstream got (the last by default).
        """
        body: dict[str, Any] = self.fake.requests[number].json
        return body


class ChatOpenAITests(_LangChain, TestCase):
    """
    C{ChatOpenAI} (Chat Completions) on a model whose upstream speaks
    Anthropic's format.
    """

    def chat(self) -> Any:
        module = require("langchain_openai")
        return module.ChatOpenAI(
            model="claude",
            base_url=f"{self.service.url}/v1",
            api_key=CLIENT_KEY,
            max_retries=0,
        )

    async def test_json_schema(self) -> None:
        """
        The default method, C{json_schema}: C{response_format} becomes
        C{output_config.format}; the JSON text comes back parsed.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(30, 12)))
        structured = self.chat().with_structured_output(Person)
        person = await deferToThread(structured.invoke, "Describe Ada Lovelace.")
        self.assertEqual(person, PERSON)
        output_format = self.sent().get("output_config", {}).get("format")
        self.assertIsInstance(output_format, dict, self.sent())
        self.assertEqual(output_format["type"], "json_schema")
        self.assertEqual(
            property_types(output_format["schema"]),
            {"name": "string", "age": "integer"},
        )

    async def test_json_schema_stream(self) -> None:
        """
        The same, streamed: the last partial object is the whole one.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(30, 12)))
        structured = self.chat().with_structured_output(Person)
        parts = await deferToThread(
            lambda: list(structured.stream("Describe Ada Lovelace."))
        )
        self.assertEqual(parts[-1], PERSON)
        self.assertTrue(self.sent()["stream"])

    async def test_function_calling(self) -> None:
        """
        C{method="function_calling"}: a forced tool call, answered by the
        upstream's C{tool_use}.
        """
        call = FakeToolCall("toolu_p1", "Person", [PERSON.model_dump_json()])
        self.fake.enqueue(FakeReply(tool_calls=[call], usage=(30, 12)))
        structured = self.chat().with_structured_output(
            Person, method="function_calling"
        )
        person = await deferToThread(structured.invoke, "Describe Ada Lovelace.")
        self.assertEqual(person, PERSON)
        sent = self.sent()
        self.assertEqual([t["name"] for t in sent["tools"]], ["Person"])
        choice = sent["tool_choice"]
        self.assertEqual((choice["type"], choice["name"]), ("tool", "Person"))


class ChatAnthropicTests(_LangChain, TestCase):
    """
    C{ChatAnthropic} (Messages) on a model whose upstream speaks Chat
    Completions.
    """

    def chat(self) -> Any:
        module = require("langchain_anthropic")
        return module.ChatAnthropic(
            model="gpt",
            base_url=self.service.url,
            api_key=CLIENT_KEY,
            max_retries=0,
        )

    async def test_function_calling(self) -> None:
        """
        The default method, C{function_calling}: a forced tool becomes a
        forced function; the upstream's tool call comes back parsed.
        """
        call = FakeToolCall("call_p1", "Person", ['{"name": "Ada",', ' "age": 36}'])
        self.fake.enqueue(FakeReply(tool_calls=[call], usage=(30, 12)))
        structured = self.chat().with_structured_output(Person)
        person = await deferToThread(structured.invoke, "Describe Ada Lovelace.")
        self.assertEqual(person, PERSON)
        sent = self.sent()
        self.assertEqual([t["function"]["name"] for t in sent["tools"]], ["Person"])
        self.assertEqual(
            sent["tool_choice"], {"type": "function", "function": {"name": "Person"}}
        )

    async def test_function_calling_stream(self) -> None:
        """
        The same, streamed.
        """
        call = FakeToolCall("call_p1", "Person", ['{"name": "Ada",', ' "age": 36}'])
        self.fake.enqueue(FakeReply(tool_calls=[call], usage=(30, 12)))
        structured = self.chat().with_structured_output(Person)
        parts = await deferToThread(
            lambda: list(structured.stream("Describe Ada Lovelace."))
        )
        self.assertEqual(parts[-1], PERSON)
        self.assertTrue(self.sent()["stream"])

    async def test_json_schema(self) -> None:
        """
        C{method="json_schema"}: C{output_config.format} becomes
        C{response_format}; the JSON text comes back parsed.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(30, 12)))
        structured = self.chat().with_structured_output(Person, method="json_schema")
        person = await deferToThread(structured.invoke, "Describe Ada Lovelace.")
        self.assertEqual(person, PERSON)
        response_format = self.sent().get("response_format")
        self.assertIsInstance(response_format, dict, self.sent())
        self.assertEqual(response_format["type"], "json_schema")
        self.assertEqual(
            property_types(response_format["json_schema"]["schema"]),
            {"name": "string", "age": "integer"},
        )
