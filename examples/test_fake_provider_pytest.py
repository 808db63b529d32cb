"""
Testing code that calls an LLM, under pytest with pytest-twisted, against
pylon_ai's fake provider (no network, no key).

Run it with::

    pip install 'pylon_ai[test]'        # pytest, pytest-twisted, trustme...
    python -m pytest examples/test_fake_provider_pytest.py

pytest-twisted loads itself as a pytest plugin once installed (with
C{PYTEST_DISABLE_PLUGIN_AUTOLOAD=1}, add C{-p pytest_twisted}); it runs the
reactor and turns the Deferreds of C{@pytest_twisted.ensureDeferred} tests
and async fixtures into results.  Keep such tests in a pytest run of their
own, apart from Trial C{TestCase} classes that use the reactor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_twisted

from twisted.internet import reactor

from pylon_ai import AiMessage, AiProxyPlugin, ProviderError
from pylon_ai.testing import FakeProvider, FakeReply


@pytest_twisted.async_yield_fixture(params=["http", "https"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeProvider]:
    """
    A started fake provider, over HTTP and over HTTPS with a test CA; its
    port, connections and the pools of its http_client() are closed after
    the test.
    """
    provider = FakeProvider(reactor, tls=request.param == "https")
    await provider.start()
    yield provider
    await provider.stop()


@pytest_twisted.ensureDeferred
async def test_custom_endpoint(fake: FakeProvider) -> None:
    """
    With nothing queued, the fake answers its default reply.
    """
    plugin = AiProxyPlugin.custom(
        fake.base_url, "sk-test", http_client=fake.http_client()
    )

    text = await plugin.completion([AiMessage.user("Hi")])

    assert text == "Hello from the fake."
    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json["messages"] == [{"role": "user", "content": "Hi"}]


@pytest_twisted.ensureDeferred
async def test_openai_streams_chunks(fake: FakeProvider) -> None:
    """
    Scripted chunks arrive one by one, in order.
    """
    fake.enqueue(FakeReply(chunks=["Hel", "lo"], usage=(10, 2)))
    plugin = AiProxyPlugin.openai(
        "sk-test", "gpt-x", base_url=fake.base_url, http_client=fake.http_client()
    )
    chunks: list[str] = []

    text = await plugin.stream_completion([AiMessage.user("Hi")], chunks.append)

    assert (text, chunks) == ("Hello", ["Hel", "lo"])
    assert fake.requests[0].json["model"] == "gpt-x"
    assert fake.requests[0].stream


@pytest_twisted.ensureDeferred
async def test_anthropic_system_prompt(fake: FakeProvider) -> None:
    """
    The Anthropic request carries the system prompt in its own field.
    """
    fake.enqueue(FakeReply(chunks=["Bonjour"]))
    plugin = AiProxyPlugin.anthropic(
        "sk-test", "claude-x", base_url=fake.base_url, http_client=fake.http_client()
    )

    text = await plugin.completion(
        [AiMessage.system("Answer in French."), AiMessage.user("Hi")]
    )

    assert text == "Bonjour"
    [request] = fake.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-test"
    assert request.json["system"] == "Answer in French."
    assert request.json["messages"] == [{"role": "user", "content": "Hi"}]


@pytest_twisted.ensureDeferred
async def test_rate_limited(fake: FakeProvider) -> None:
    """
    An HTTP error from the provider is a ProviderError with its status.
    """
    fake.enqueue(FakeReply(status=429, retry_after=1, message="slow down"))
    plugin = AiProxyPlugin.openai(
        "sk-test", "gpt-x", base_url=fake.base_url, http_client=fake.http_client()
    )

    with pytest.raises(ProviderError) as caught:
        await plugin.completion([AiMessage.user("Hi")])

    assert caught.value.status == 429
    assert caught.value.error_type == "rate_limit_error"
    assert "slow down" in caught.value.message


@pytest_twisted.ensureDeferred
async def test_stream_dropped(fake: FakeProvider) -> None:
    """
    A connection cut mid-stream fails the call; the text delivered before
    stays delivered.
    """
    fake.enqueue(FakeReply(chunks=["partial", " never"], drop_after=1))
    plugin = AiProxyPlugin.anthropic(
        "sk-test", "claude-x", base_url=fake.base_url, http_client=fake.http_client()
    )
    chunks: list[str] = []

    with pytest.raises(ProviderError):
        await plugin.stream_completion([AiMessage.user("Hi")], chunks.append)

    assert chunks == ["partial"]
