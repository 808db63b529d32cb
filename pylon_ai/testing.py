"""
Test helpers: a scripted fake LLM provider that speaks the Anthropic Messages
and OpenAI Chat Completions wire formats over real HTTP (or HTTPS with a
throwaway test CA), so code that calls LLMs is tested without network.

In a Trial test::

    from twisted.internet import reactor
    from twisted.trial.unittest import TestCase

    from pylon_ai.testing import FakeProvider, FakeReply

    class MyTests(TestCase):
        async def test_hello(self) -> None:
            fake = FakeProvider(reactor)
            await fake.start()
            self.addCleanup(fake.stop)
            fake.enqueue(FakeReply(chunks=["Hel", "lo"], usage=(10, 2)))
            ...  # point the code under test at fake.base_url
            self.assertEqual(fake.requests[0].json["model"], "my-model")

C{FakeProvider(reactor, tls=True)} serves HTTPS; L{FakeProvider.http_client}
gives a C{treq} client that trusts it, and L{FakeProvider.ca} is the
C{trustme} CA (C{trustme} is needed only then: C{pip install pylon_ai[test]}).
"""

from pylon_ai._fake import FakeProvider, FakeReply, FakeToolCall, RecordedRequest

__all__ = ["FakeProvider", "FakeReply", "FakeToolCall", "RecordedRequest"]
