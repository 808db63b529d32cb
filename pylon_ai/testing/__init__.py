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
C{trustme} CA (C{trustme} is needed only then: C{pip install
'pylon_ai[test]'}).  C{port=} and C{host=} choose where it listens (by
default a free port on C{127.0.0.1}).

From the command line, for a program that is not a test (a demo, a manual
check, another language's tests)::

    python -m pylon_ai.testing --port 9000 [--host 127.0.0.1]
                               [--tls [--ca-file PEM]] [--script FILE]

serves both formats (C{POST /v1/chat/completions} and any other path:
OpenAI's; C{POST /v1/messages}: Anthropic's) until Ctrl-C or SIGTERM.  It
prints one line saying where it listens (C{--port 0} picks a free port and
prints it) and, with C{--tls}, the file holding the CA certificate that
clients must trust (a temporary file, removed at exit, unless C{--ca-file}
names one).  Each request is noted on standard error.  Bad arguments or a
bad script exit with status 2 and one line.

The script file (C{--script}, or L{FakeScript.from_file} in a test) is JSON:
an object whose C{replies} are served in order, one per request, and whose
C{default} is served after them (without one, a friendly "Hello from the
fake."); a bare list is the same as C{{"replies": [...]}}.  For example::

    {
      "replies": [
        {"chunks": ["Hel", "lo"], "usage": [10, 2]},
        {"tool_calls": [
          {"id": "call_1", "name": "lookup", "arguments": {"q": "weather"}}
        ]},
        {"status": 429, "retry_after": 1, "message": "slow down"},
        {"chunks": ["a", "b", "c"], "chunk_delay": 0.5, "drop_after": 2}
      ],
      "default": {"chunks": ["Out of script."]}
    }

Each reply takes the fields of L{FakeReply} (all optional)::

  chunks            list of strings: the text, one stream event each
  tool_calls        list of {"id", "name", "arguments"}: arguments is a JSON
                    object or a string; or "arguments_fragments", a list of
                    strings streamed one event each
  usage             [input_tokens, output_tokens], or null for none
  stop_reason       end_turn, max_tokens, stop_sequence, tool_use, refusal
                    or pause_turn (default: tool_use with tool calls, else
                    end_turn); mapped for the OpenAI format
  model             the model the reply names (default: the request's)
  status            the HTTP status (default 200); any other answers with
                    an error body in the format of the API called
  error_type        e.g. rate_limit_error (default: picked from the status)
  message           the text of an error body or stream error
  retry_after       number or string: the retry-after header
  headers           {"name": "value"}: extra response headers
  first_byte_delay  seconds before the response headers
  chunk_delay       seconds before each chunk
  drop_after        cut the connection after this many chunks
  stall_after       send nothing more after this many chunks
  stream_error      true: end the stream with the provider's error event
  raw_body          a string sent as the body (UTF-8) instead of the reply
  thinking          list of strings: reasoning streamed before the text
  signature         the signature of that thinking block
  input_tokens      the count a token-counting request answers
  embeddings        list of vectors (lists of numbers) embeddings answer
"""

from pylon_ai.testing._fake import FakeProvider
from pylon_ai.testing._reply import FakeReply, FakeToolCall, RecordedRequest
from pylon_ai.testing._script import FakeScript, ScriptError

__all__ = [
    "FakeProvider",
    "FakeReply",
    "FakeScript",
    "FakeToolCall",
    "RecordedRequest",
    "ScriptError",
]
