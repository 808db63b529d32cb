"""
Tests for L{pylon_ai.sse}: the WHATWG event-stream parser.

Three layers: the shared fixtures fed in every split, unit tests for each
parsing rule, and hypothesis properties against a small reference model of
the WHATWG "parsing an event stream" rules written here, independently of
the parser.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone

from pylon_ai.sse import DEFAULT_MAX_LINE_LENGTH, Event, LineTooLong, SSEProtocol

try:
    from tests._fixtures import fixture_names, load_fixture
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _fixtures import fixture_names, load_fixture  # type: ignore[no-redef]

BOM = b"\xef\xbb\xbf"

#: (type, data, lastEventId, retry): what the model and the parser compare on.
ModelEvent = tuple[str, str, str, int | None]

_HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the reference model ---------------------------------------------------
#
# A literal transcription of WHATWG HTML 9.2.5/9.2.6: decode the whole stream
# as UTF-8 (replacing errors, one leading BOM dropped), split it into lines at
# CRLF, CR or LF, drop the unterminated remainder, and interpret each line with
# a data buffer that gets "value\n" appended and loses its final "\n" on
# dispatch.


def _model_interpret(lines: Iterable[str]) -> list[ModelEvent]:
    events: list[ModelEvent] = []
    data = ""
    event_type = ""
    last_event_id = ""
    retry: int | None = None
    for line in lines:
        if line == "":
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append((event_type or "message", data, last_event_id, retry))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\x00" not in value:
                last_event_id = value
        elif field == "retry":
            if re.fullmatch("[0-9]+", value, re.ASCII):
                retry = int(value)
    return events


def reference_parse(stream: bytes) -> list[ModelEvent]:
    """
    The events a conforming parser dispatches for C{stream} (no line bound).
    """
    if stream.startswith(BOM):
        stream = stream[3:]
    text = stream.decode("utf-8", "replace")
    *lines, _unterminated = re.split("\r\n|\r|\n", text)
    return _model_interpret(lines)


def reference_parse_bounded(
    stream: bytes, max_line_length: int
) -> tuple[list[ModelEvent], bool]:
    """
    The events a parser with a line bound dispatches, and whether it must fail.

    Every event completed before the first over-long line (terminated or not)
    is dispatched, whatever the split into reads.
    """
    if stream.startswith(BOM):
        stream = stream[3:]
    pieces = re.split(b"\r\n|\r|\n", stream)
    for i, piece in enumerate(pieces):
        if len(piece) > max_line_length:
            lines = [p.decode("utf-8", "replace") for p in pieces[:i]]
            return _model_interpret(lines), True
    lines = [p.decode("utf-8", "replace") for p in pieces[:-1]]
    return _model_interpret(lines), False


# -- helpers ----------------------------------------------------------------


class _Run:
    """
    One parser fed by a test, with what it dispatched and how it ended.
    """

    def __init__(
        self,
        on_event: Callable[[Event], object] | None = None,
        max_line_length: int | None = None,
    ) -> None:
        self.events: list[Event] = []
        self.transport = StringTransport()
        callback = on_event if on_event is not None else self.events.append
        if max_line_length is None:
            self.proto = SSEProtocol(callback)
        else:
            self.proto = SSEProtocol(callback, max_line_length=max_line_length)
        self.proto.makeConnection(self.transport)
        self._outcome: list[object] = []
        # Consumes the result, so a failure is never logged as unhandled.
        self.proto.done.addBoth(self._outcome.append)

    def feed(self, chunks: Iterable[bytes]) -> _Run:
        for chunk in chunks:
            self.proto.dataReceived(chunk)
        return self

    def end(self, reason: Failure | None = None) -> _Run:
        self.proto.connectionLost(Failure(ResponseDone()) if reason is None else reason)
        return self

    @property
    def fired(self) -> bool:
        return bool(self._outcome)

    @property
    def outcome(self) -> BaseException | None:
        """
        L{None} if C{done} fired with L{None}, else the exception it failed
        with.
        """
        assert len(self._outcome) == 1, f"done fired {len(self._outcome)} times"
        result = self._outcome[0]
        if isinstance(result, Failure):
            return result.value
        assert result is None, f"done fired with {result!r}"
        return None

    @property
    def stopped(self) -> bool:
        return self.transport.producerState == "stopped"

    @property
    def buffered(self) -> int:
        return len(self.proto._buffer)


def _parse(
    chunks: Iterable[bytes], max_line_length: int | None = None
) -> list[ModelEvent]:
    """
    Feed C{chunks}, end the stream cleanly, check it ended cleanly, and
    return the events as model tuples.
    """
    run = _Run(max_line_length=max_line_length).feed(chunks).end()
    assert run.outcome is None, f"done failed with {run.outcome!r}"
    assert not run.stopped
    return [_tuple(e) for e in run.events]


def _tuple(event: Event) -> ModelEvent:
    return (event.type, event.data, event.id, event.retry)


def _triples(events: Iterable[Event | ModelEvent]) -> list[tuple[str, str, str]]:
    out = []
    for e in events:
        if isinstance(e, Event):
            out.append((e.type, e.data, e.id))
        else:
            out.append(e[:3])
    return out


def _chunks(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    """
    Cut C{stream} at C{cuts} (duplicates give empty reads).
    """
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def _bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def _expected_triples(expected: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["type"], e["data"], e["lastEventId"]) for e in expected["sse_events"]]


# -- the shared fixtures ----------------------------------------------------


class FixtureTests(SynchronousTestCase):
    """
    Every shared fixture, in every split, gives its C{sse_events}.
    """

    def _fixtures(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        out = []
        for name in fixture_names():
            raw, expected = load_fixture(name)
            out.append((name, raw, expected))
        return out

    def _check(
        self,
        name: str,
        how: str,
        chunks: Sequence[bytes],
        expected: dict[str, Any],
    ) -> list[Event]:
        run = _Run().feed(chunks).end()
        self.assertIsNone(run.outcome, f"{name} ({how})")
        self.assertEqual(
            _triples(run.events), _expected_triples(expected), f"{name} ({how})"
        )
        return run.events

    def test_fixtures_present(self) -> None:
        """
        The fixture set is there, with the SSE edge cases and the provider
        transcripts, and each C{.json} describes its C{.sse}.
        """
        names = fixture_names()
        for needed in [
            "sse_edge_cases",
            "anthropic_text_basic",
            "anthropic_tool_use",
            "openai_text_basic",
            "openai_tool_calls",
            "openai_with_usage",
        ]:
            self.assertIn(needed, names)
        for name, raw, expected in self._fixtures():
            self.assertTrue(expected["sse_events"], name)
            if "byte_length" in expected:
                self.assertEqual(len(raw), expected["byte_length"], name)
            reads = expected.get("transport", {}).get("reads")
            if reads:
                self.assertEqual(reads[0][0], 0, name)
                self.assertEqual(reads[-1][1], len(raw), name)
                for (_, end), (start, _) in itertools.pairwise(reads):
                    self.assertEqual(end, start, name)

    def test_whole(self) -> None:
        """
        Each fixture parsed as one read.
        """
        for name, raw, expected in self._fixtures():
            self._check(name, "whole", [raw], expected)

    def test_transport_reads(self) -> None:
        """
        Each fixture fed in its own C{transport.reads}, when it has them.
        """
        with_reads = 0
        for name, raw, expected in self._fixtures():
            reads = expected.get("transport", {}).get("reads")
            if not reads:
                continue
            with_reads += 1
            chunks = [raw[start:end] for start, end in reads]
            self._check(name, f"reads {reads}", chunks, expected)
        self.assertGreater(with_reads, 0)

    def test_every_two_way_split(self) -> None:
        """
        Each fixture cut into two reads at every position.
        """
        for name, raw, expected in self._fixtures():
            want = _expected_triples(expected)
            for cut in range(len(raw) + 1):
                run = _Run().feed([raw[:cut], raw[cut:]]).end()
                self.assertIsNone(run.outcome, f"{name} cut at {cut}")
                self.assertEqual(_triples(run.events), want, f"{name} cut at {cut}")

    def test_byte_at_a_time(self) -> None:
        """
        Each fixture fed one byte per read.
        """
        for name, raw, expected in self._fixtures():
            self._check(name, "byte at a time", _bytewise(raw), expected)

    def test_reference_model_agrees(self) -> None:
        """
        The reference model used by the property tests gives each fixture's
        C{sse_events} too, so it is a fair judge.
        """
        for name, raw, expected in self._fixtures():
            self.assertEqual(
                _triples(reference_parse(raw)), _expected_triples(expected), name
            )

    def test_edge_cases_retry_and_discard(self) -> None:
        """
        In C{sse_edge_cases} the reconnection time ends at
        C{final_reconnection_time_ms} (the bogus values are ignored), the
        unterminated last event is dropped, and the mid-stream BOM line is
        not a C{data} field.
        """
        raw, expected = load_fixture("sse_edge_cases")
        final = expected["expected"]["final_reconnection_time_ms"]
        discarded = expected["expected"]["discarded_at_eof"]
        splits = {
            "whole": [raw],
            "reads": [raw[a:b] for a, b in expected["transport"]["reads"]],
            "bytes": _bytewise(raw),
        }
        for how, chunks in splits.items():
            run = _Run().feed(chunks).end()
            self.assertIsNone(run.outcome, how)
            self.assertEqual(run.proto.retry, final, how)
            self.assertEqual(run.events[-1].retry, final, how)
            self.assertIsNone(run.events[0].retry, how)
            datas = [e.data for e in run.events]
            self.assertNotIn(discarded.partition(": ")[2], datas, how)
            self.assertNotIn("bom mid-stream", datas, how)


# -- the rules, one by one --------------------------------------------------


class RuleTests(SynchronousTestCase):
    """
    Each WHATWG event-stream rule, in small streams.
    """

    def assertEvents(
        self,
        chunks: Sequence[bytes],
        expected: Sequence[ModelEvent | tuple[str, str, str]],
    ) -> None:
        got = _parse(chunks)
        if all(len(e) == 3 for e in expected):
            self.assertEqual(_triples(got), list(expected))
        else:
            self.assertEqual(got, list(expected))
        # Every split agrees, and so does the model.
        stream = b"".join(chunks)
        self.assertEqual(_parse(_bytewise(stream)), got)
        self.assertEqual(reference_parse(stream), got)

    def test_event_is_public(self) -> None:
        """
        L{Event} is a value with C{type}, C{data}, C{id} and C{retry}, and the
        protocol is an L{IProtocol} (for C{deliverBody}).
        """
        self.assertEqual(Event("message", "x", "1", None), Event("message", "x", "1"))
        self.assertEqual(Event(), Event("message", "", "", None))
        self.assertTrue(verifyObject(IProtocol, SSEProtocol(lambda e: None)))

    def test_bom_stripped_once(self) -> None:
        """
        One leading BOM is dropped; a second one right after it is part of the
        first field name, which then is not C{data}.
        """
        self.assertEvents([BOM + b"data: a\n\n"], [("message", "a", "")])
        self.assertEvents([BOM + BOM + b"data: a\n\n"], [])
        self.assertEvents([BOM + BOM + b"\ndata: b\n\n"], [("message", "b", "")])

    def test_bom_split_across_reads(self) -> None:
        """
        A BOM cut across reads, even with empty reads between its bytes, is
        still stripped.
        """
        stream = BOM + b"data: a\n\n"
        for cut1 in range(4):
            for cut2 in range(cut1, 5):
                chunks = _chunks(stream, [cut1, cut2])
                self.assertEqual(_parse(chunks), [("message", "a", "", None)], chunks)
        self.assertEqual(
            _parse([b"", b"\xef", b"", b"\xbb", b"\xbf", b"data: a\n\n"]),
            [("message", "a", "", None)],
        )

    def test_bom_prefix_not_a_bom(self) -> None:
        """
        Bytes that start like a BOM but are not one are kept, whatever the
        split.
        """
        for stream in [b"\xef\xbbdata: a\n\n", b"\xefdata: a\n\n", b"\xef\n\n"]:
            self.assertEvents([stream], [])
        self.assertEvents([b"\xef\xbb\ndata: a\n\n"], [("message", "a", "")])

    def test_bom_mid_stream_not_stripped(self) -> None:
        """
        A BOM after the start of the stream is data, not a marker: here it
        makes the field name C{"\\ufeffdata"}, which is ignored.
        """
        self.assertEvents(
            [b"data: a\n\n" + BOM + b"data: b\n\n"], [("message", "a", "")]
        )
        self.assertEvents([b"\n" + BOM + b"data: b\n\n"], [])
        self.assertEvents([b"data: " + BOM + b"x\n\n"], [("message", "\ufeffx", "")])
        # After a first read that is not the BOM, a later BOM is not stripped.
        self.assertEqual(_parse([b":\n", BOM + b"data: b\n\n"]), [])

    def test_comments(self) -> None:
        """
        Lines starting with a colon are ignored, whatever follows.
        """
        self.assertEvents(
            [b": hello\ndata: a\n:\n::data: x\n:data: y\n\n"],
            [("message", "a", "")],
        )
        self.assertEvents([b":data: x\n\n"], [])

    def test_field_without_colon(self) -> None:
        """
        A line with no colon is a field name with an empty value.
        """
        self.assertEvents([b"data\n\n"], [("message", "", "")])
        self.assertEvents([b"data\ndata\n\n"], [("message", "\n", "")])
        self.assertEvents([b"event\ndata: x\n\n"], [("message", "x", "")])
        self.assertEvents(
            [b"id: 5\ndata: a\n\nid\ndata: b\n\n"],
            [("message", "a", "5"), ("message", "b", "")],
        )
        self.assertEvents([b"retry\ndata: x\n\n"], [("message", "x", "", None)])

    def test_one_space_stripped(self) -> None:
        """
        Exactly one space after the colon goes; other whitespace stays.
        """
        self.assertEvents(
            [
                b"data:x\n\n",
                b"data: x\n\n",
                b"data:  x\n\n",
                b"data: x \n\n",
                b"data:\tx\n\n",
                b"data: \n\n",
            ],
            [
                ("message", "x", ""),
                ("message", "x", ""),
                ("message", " x", ""),
                ("message", "x ", ""),
                ("message", "\tx", ""),
                ("message", "", ""),
            ],
        )
        self.assertEvents([b"event:  ping\ndata\n\n"], [(" ping", "", "")])
        self.assertEvents([b"id:  7\ndata\n\n"], [("message", "", " 7")])

    def test_value_split_at_first_colon(self) -> None:
        """
        Only the first colon separates name and value.
        """
        self.assertEvents([b"data:x:y: z\n\n"], [("message", "x:y: z", "")])
        self.assertEvents([b"event:a:b\ndata\n\n"], [("a:b", "", "")])

    def test_field_names_exact(self) -> None:
        """
        Field names are case-sensitive and matched whole; unknown fields are
        ignored.
        """
        self.assertEvents(
            [b"Data: a\nDATA: b\ndata : c\n data: d\ndatax: e\nfoo: f\n\n"], []
        )
        self.assertEvents(
            [b"Event: x\nID: 9\nRetry: 5\ndata: a\n\n"], [("message", "a", "", None)]
        )

    def test_data_joined(self) -> None:
        """
        C{data} lines are joined with C{\\n}; only the final newline of the
        buffer goes, so empty data lines count.
        """
        self.assertEvents([b"data: a\ndata: b\n\n"], [("message", "a\nb", "")])
        self.assertEvents([b"data: a\ndata: b\ndata:\n\n"], [("message", "a\nb\n", "")])
        self.assertEvents([b"data:\ndata: a\n\n"], [("message", "\na", "")])
        self.assertEvents([b"data:\ndata:\n\n"], [("message", "\n", "")])

    def test_empty_event_is_message(self) -> None:
        """
        An empty or absent C{event} gives type C{message}.
        """
        self.assertEvents([b"event:\ndata: x\n\n"], [("message", "x", "")])
        self.assertEvents([b"event: \ndata: x\n\n"], [("message", "x", "")])
        self.assertEvents([b"event: a\nevent:\ndata: x\n\n"], [("message", "x", "")])
        self.assertEvents([b"event: a\nevent: b\ndata: x\n\n"], [("b", "x", "")])

    def test_event_type_reset_after_dispatch(self) -> None:
        """
        The event type applies to one event only.
        """
        self.assertEvents(
            [b"event: a\ndata: 1\n\ndata: 2\n\n"],
            [("a", "1", ""), ("message", "2", "")],
        )

    def test_blank_line_without_data(self) -> None:
        """
        A blank line with no data dispatches nothing and resets the type.
        """
        self.assertEvents([b"event: foo\n\ndata: x\n\n"], [("message", "x", "")])
        self.assertEvents([b"\n\n\n\r\n\r"], [])
        self.assertEvents([b"event: foo\nid: 3\n\n"], [])

    def test_id_with_nul_ignored(self) -> None:
        """
        An C{id} containing NUL leaves the last event id unchanged.
        """
        self.assertEvents(
            [b"id: 1\n\nid: 2\x003\ndata: x\n\nid: \x00\ndata: y\n\n"],
            [("message", "x", "1"), ("message", "y", "1")],
        )
        # NUL elsewhere is kept.
        self.assertEvents([b"data: a\x00b\n\n"], [("message", "a\x00b", "")])

    def test_last_event_id_persists(self) -> None:
        """
        The last event id stays until another C{id} changes it, even through
        blocks that dispatch nothing.
        """
        run = _Run().feed([b"id: a\ndata: 1\n\ndata: 2\n\nid: z\n\ndata: 3\n\n"])
        run.end()
        self.assertEqual(
            _triples(run.events),
            [("message", "1", "a"), ("message", "2", "a"), ("message", "3", "z")],
        )
        self.assertEqual(run.proto.lastEventId, "z")
        self.assertIsNone(run.outcome)

    def test_id_applies_to_event_being_built(self) -> None:
        """
        An C{id} after the C{data} lines but before the blank line still
        belongs to that event.
        """
        self.assertEvents([b"data: x\nid: 7\n\n"], [("message", "x", "7")])

    def test_retry(self) -> None:
        """
        C{retry} takes only ASCII digits; it persists and rides on each event.
        """
        self.assertEvents(
            [b"data: a\n\nretry: 1500\n\ndata: b\n\nretry: 0\ndata: c\n\n"],
            [
                ("message", "a", "", None),
                ("message", "b", "", 1500),
                ("message", "c", "", 0),
            ],
        )
        for bogus in [
            b"12x",
            b"-5",
            b"+5",
            b"1.5",
            b"1e3",
            b" 15",
            b"15 ",
            b"",
            "\u0661\u0662".encode(),  # Arabic-Indic digits
            "\u00b2".encode(),  # superscript two
            b"\xff",
        ]:
            stream = b"retry: 700\n\nretry: " + bogus + b"\ndata: x\n\n"
            self.assertEvents([stream], [("message", "x", "", 700)])
        self.assertEvents([b"retry: 0042\ndata: x\n\n"], [("message", "x", "", 42)])
        run = _Run().feed([b"retry: 9\n\n"]).end()
        self.assertEqual(run.proto.retry, 9)

    def test_huge_retry(self) -> None:
        """
        A C{retry} of thousands of digits (past Python's int-string limit) is
        all digits: the parser must not raise from C{dataReceived}, and the
        stream goes on.
        """
        stream = b"retry: " + b"9" * 5000 + b"\ndata: x\n\n"
        run = _Run().feed([stream]).end()
        self.assertEqual(_triples(run.events), [("message", "x", "")])
        self.assertIsNone(run.outcome)

    def test_line_ends(self) -> None:
        """
        CR, LF and CRLF each end a line, mixed freely; CR LF CR is two line
        ends, LF CR is two.
        """
        expected = [("message", "a\nb", ""), ("message", "c", "")]
        for eol1 in [b"\r", b"\n", b"\r\n"]:
            for eol2 in [b"\r", b"\n", b"\r\n"]:
                if eol2 == b"\r" and eol1 == b"\n":
                    continue  # CR then LF would be one CRLF line end
                stream = b"data: a" + eol1 + b"data: b" + eol2 + eol1
                stream += b"data: c" + eol2 + eol2
                self.assertEvents([stream], expected)
        both = [("message", "a", ""), ("message", "b", "")]
        self.assertEvents([b"data: a\r\n\rdata: b\n\r"], both)
        self.assertEvents([b"data: a\n\rdata: b\r\r"], both)
        # CR LF LF: one line end, then a blank line.
        self.assertEvents([b"data: a\r\n\ndata: b\r\n\n"], both)
        # CR then LF is one line end, so no blank line here.
        self.assertEvents([b"data: a\r\ndata: b\r\n\r\n"], [("message", "a\nb", "")])

    def test_crlf_split_across_reads(self) -> None:
        """
        A CR at the end of one read and a LF at the start of the next are one
        line end, not two (two would dispatch C{a} on its own).
        """
        self.assertEqual(
            _parse([b"data: a\r", b"\ndata: b\r\n\r\n"]),
            [("message", "a\nb", "", None)],
        )
        # Empty reads in between change nothing.
        self.assertEqual(
            _parse([b"data: a\r", b"", b"", b"\ndata: b\r", b"\n\r", b"\n"]),
            [("message", "a\nb", "", None)],
        )
        # A read that is only the LF.
        self.assertEqual(
            _parse([b"data: a\r", b"\n", b"data: b\r", b"\n", b"\r", b"\n"]),
            [("message", "a\nb", "", None)],
        )
        # CR then CR across reads is two line ends.
        self.assertEqual(
            _parse([b"data: a\r", b"\rdata: b\r", b"\r"]),
            [("message", "a", "", None), ("message", "b", "", None)],
        )
        # The skipped LF belongs to that one CR: a later LF is a line end.
        self.assertEqual(
            _parse([b"data: a\r", b"\n", b"\n"]),
            [("message", "a", "", None)],
        )

    def test_lone_cr_at_end_of_stream(self) -> None:
        """
        A CR ends its line even when the stream stops right after it.
        """
        self.assertEvents([b"data: a\n\r"], [("message", "a", "")])
        self.assertEvents([b"data: a\r\r"], [("message", "a", "")])

    def test_unterminated_event_dropped(self) -> None:
        """
        An event without its blank line is dropped at the end of the stream,
        and so is an unterminated line.
        """
        self.assertEvents([b"data: a\n\ndata: b\n"], [("message", "a", "")])
        self.assertEvents([b"data: a\n\ndata: b"], [("message", "a", "")])
        self.assertEvents([b"data: a"], [])
        # A stream of nothing but the start of a BOM.
        self.assertEvents([b"\xef\xbb"], [])
        self.assertEvents([b""], [])

    def test_multibyte_split_across_reads(self) -> None:
        """
        UTF-8 characters cut across reads (at every byte) come out whole, in
        every field.
        """
        text = "é€😀"
        stream = f"event: {text}\nid: {text}\ndata: {text}\n\n".encode()
        want = [(text, text, text, None)]
        for cut in range(len(stream) + 1):
            self.assertEqual(_parse([stream[:cut], stream[cut:]]), want, cut)
        self.assertEqual(_parse(_bytewise(stream)), want)

    def test_invalid_utf8_replaced(self) -> None:
        """
        Invalid UTF-8 becomes U+FFFD (one per maximal bad subpart, as a
        whole-stream decode gives) and never raises.
        """
        r = "\ufffd"
        self.assertEvents([b"data: \xff\xfeok\n\n"], [("message", f"{r}{r}ok", "")])
        self.assertEvents([b"data: \xe2\x82\n\n"], [("message", r, "")])
        self.assertEvents([b"data: \xe2\x82x\n\n"], [("message", f"{r}x", "")])
        self.assertEvents([b"data: \xc0\xaf\n\n"], [("message", r + r, "")])
        self.assertEvents([b"data: \xed\xa0\x80\n\n"], [("message", r * 3, "")])
        self.assertEvents([b"event: \xc3\nid: \x80\ndata\n\n"], [(r, "", r)])
        # A truncated sequence before a colon does not swallow the colon.
        self.assertEvents([b"data:\xf0\x9f:x\n\n"], [("message", f"{r}:x", "")])
        # A truncated sequence at the end of a line does not swallow the line end.
        self.assertEvents(
            [b"data: \xf0\x9f\x98\ndata: b\n\n"], [("message", f"{r}\nb", "")]
        )

    def test_line_separators_not_line_ends(self) -> None:
        """
        Only CR and LF end lines: NEL, U+2028, VT and FF are data.
        """
        for sep in ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c"]:
            stream = f"data: a{sep}b\n\n".encode()
            self.assertEvents([stream], [("message", f"a{sep}b", "")])

    def test_empty_reads(self) -> None:
        """
        Empty reads anywhere change nothing.
        """
        self.assertEqual(
            _parse([b"", b"data: a", b"", b"\n", b"", b"\n", b""]),
            [("message", "a", "", None)],
        )

    def test_state_exposed(self) -> None:
        """
        C{lastEventId} and C{retry} on the protocol follow the stream.
        """
        run = _Run()
        self.assertEqual(run.proto.lastEventId, "")
        self.assertIsNone(run.proto.retry)
        run.feed([b"id: 4\nretry: 30\n"])
        self.assertEqual(run.proto.lastEventId, "4")
        self.assertEqual(run.proto.retry, 30)
        run.end()
        self.assertIsNone(run.outcome)

    def test_events_dispatched_as_they_arrive(self) -> None:
        """
        Each event is dispatched by the read that completes it, not later.
        """
        run = _Run()
        run.feed([b"data: a\n"])
        self.assertEqual(run.events, [])
        run.feed([b"\ndata: b"])
        self.assertEqual(_triples(run.events), [("message", "a", "")])
        run.feed([b"\n\r"])
        self.assertEqual(len(run.events), 2)
        self.assertFalse(run.fired)
        run.end()
        self.assertIsNone(run.outcome)


# -- the line bound ---------------------------------------------------------


class LineBoundTests(SynchronousTestCase):
    """
    Lines past C{max_line_length} fail the stream, and memory stays bounded.
    """

    def assertTooLong(self, run: _Run) -> None:
        self.assertIsInstance(run.outcome, LineTooLong)
        self.assertIn("16", str(run.outcome))
        self.assertTrue(run.stopped)

    def test_default_bound(self) -> None:
        """
        The default bound is at least 1 MiB: a 1 MiB - 1 byte line passes,
        whole or in 64 KiB reads.
        """
        self.assertGreaterEqual(DEFAULT_MAX_LINE_LENGTH, 1 << 20)
        payload = b"x" * ((1 << 20) - 1 - len(b"data: "))
        stream = b"data: " + payload + b"\n\n"
        step = 1 << 16
        for chunks in [
            [stream],
            [stream[i : i + step] for i in range(0, len(stream), step)],
        ]:
            run = _Run().feed(chunks).end()
            self.assertIsNone(run.outcome)
            self.assertEqual(len(run.events), 1)
            self.assertEqual(run.events[0].data, payload.decode())

    def test_default_bound_enforced(self) -> None:
        """
        The default bound is a bound: a line past it fails the stream.
        """
        run = _Run()
        run.feed([b"x" * (DEFAULT_MAX_LINE_LENGTH + 1)])
        self.assertIsInstance(run.outcome, LineTooLong)
        self.assertTrue(run.stopped)

    def test_line_at_bound_passes(self) -> None:
        """
        A line of exactly C{max_line_length} bytes is accepted, whatever its
        line end and split.
        """
        line = b"data: " + b"y" * 10  # 16 bytes
        for eol in [b"\n", b"\r", b"\r\n"]:
            stream = line + eol + eol
            for chunks in [[stream], _bytewise(stream)]:
                run = _Run(max_line_length=16).feed(chunks).end()
                self.assertIsNone(run.outcome)
                self.assertEqual(_triples(run.events), [("message", "y" * 10, "")])

    def test_too_long_in_one_read(self) -> None:
        """
        A line past the bound in one read fails C{done} with L{LineTooLong}
        and stops the transport, terminated or not.
        """
        for stream in [
            b"data: " + b"y" * 11 + b"\n\n",
            b"data: " + b"y" * 11 + b"\r\r",
            b"data: " + b"y" * 11,
            b": comment that is long\n",
        ]:
            run = _Run(max_line_length=16).feed([stream])
            self.assertTooLong(run)
            self.assertEqual(run.events, [])

    def test_too_long_over_many_reads(self) -> None:
        """
        A line that grows past the bound across reads without a line end
        fails as soon as it is past the bound; the buffer never holds more
        than the bound.
        """
        run = _Run(max_line_length=16)
        run.feed([b"data: "])
        for _ in range(10):
            run.feed([b"z"])
            self.assertFalse(run.fired)
            self.assertLessEqual(run.buffered, 16)
        run.feed([b"z"])
        self.assertTooLong(run)
        self.assertEqual(run.events, [])

    def test_nothing_after_failure(self) -> None:
        """
        After L{LineTooLong}, more bytes are dropped: nothing is dispatched,
        nothing is buffered, and the end of the stream changes nothing.
        """
        run = _Run(max_line_length=16)
        run.feed([b"data: ok\n\n", b"x" * 17])
        self.assertTooLong(run)
        self.assertEqual(_triples(run.events), [("message", "ok", "")])
        for _ in range(100):
            run.feed([b"\n\ndata: more\n\n" + b"x" * 1000])
            self.assertLessEqual(run.buffered, 16)
        run.feed([b"\n\ndata: more\n\n"])
        self.assertEqual(run.buffered, 0)
        run.end()
        run.end(Failure(ConnectionLost()))
        self.assertEqual(len(run.events), 1)
        self.assertTooLong(run)  # and done fired once only

    def test_events_before_long_line_dispatched(self) -> None:
        """
        Events completed before the over-long line are dispatched whatever
        the split: the same stream in one read or two gives the same events.
        """
        head = b"data: a\n\nid: 1\ndata: b\n\n"
        for tail in [b"x" * 17, b"x" * 17 + b"\n", b"data: " + b"x" * 11]:
            stream = head + tail
            for how, chunks in [
                ("whole", [stream]),
                ("two reads", [head, tail]),
                ("bytes", _bytewise(stream)),
            ]:
                run = _Run(max_line_length=16).feed(chunks)
                self.assertTooLong(run)
                self.assertEqual(
                    _triples(run.events),
                    [("message", "a", ""), ("message", "b", "1")],
                    f"{how}: {stream!r}",
                )

    def test_too_long_without_transport(self) -> None:
        """
        A parser fed directly, with no transport, still fails cleanly.
        """
        outcome: list[Failure] = []
        proto = SSEProtocol(lambda e: None, max_line_length=4)
        proto.done.addErrback(outcome.append)
        proto.dataReceived(b"data: long\n")
        self.assertEqual(len(outcome), 1)
        outcome[0].trap(LineTooLong)


# -- how the stream ends ----------------------------------------------------


class _Boom(Exception):
    pass


class EndTests(SynchronousTestCase):
    """
    C{done}, C{on_event} raising, and C{connectionLost}.
    """

    def test_clean_end(self) -> None:
        """
        L{ResponseDone} and L{ConnectionDone} (and the default reason) end the
        stream cleanly.
        """
        for reason in [Failure(ResponseDone()), Failure(ConnectionDone())]:
            run = _Run().feed([b"data: a\n\n"])
            self.assertFalse(run.fired)
            run.end(reason)
            self.assertIsNone(run.outcome)
            self.assertFalse(run.stopped)
        run = _Run()
        run.proto.connectionLost()
        self.assertIsNone(run.outcome)

    def test_other_reason_fails(self) -> None:
        """
        Any other reason fails C{done} with it, and drops the partial event.
        """
        reason = Failure(ConnectionLost("gone"))
        run = _Run().feed([b"data: a\n\ndata: b\n"]).end(reason)
        self.assertIsInstance(run.outcome, ConnectionLost)
        self.assertIs(run.outcome, reason.value)
        self.assertEqual(_triples(run.events), [("message", "a", "")])
        run = _Run().end(Failure(_Boom("x")))
        self.assertIsInstance(run.outcome, _Boom)

    def test_end_is_final(self) -> None:
        """
        After the end, more bytes and a second C{connectionLost} do nothing.
        """
        run = _Run().feed([b"data: a\n"]).end()
        run.feed([b"\ndata: b\n\n"])
        run.end(Failure(ConnectionLost()))
        self.assertEqual(run.events, [])
        self.assertIsNone(run.outcome)

    def test_on_event_raises(self) -> None:
        """
        An exception from C{on_event} fails C{done} with it, stops the
        transport, and no more events come, in this read or later ones.
        """
        stream = b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
        for chunks in [[stream], _bytewise(stream)]:
            seen: list[Event] = []
            error = _Boom("no")

            def on_event(
                event: Event, seen: list[Event] = seen, error: _Boom = error
            ) -> None:
                seen.append(event)
                if len(seen) == 2:
                    raise error

            run = _Run(on_event=on_event).feed(chunks)
            self.assertIs(run.outcome, error)
            self.assertTrue(run.stopped)
            self.assertEqual([e.data for e in seen], ["1", "2"])
            run.feed([b"data: 4\n\n"])
            run.end()
            self.assertEqual(len(seen), 2)
            self.assertIs(run.outcome, error)
            self.assertEqual(run.buffered, 0)


# -- properties -------------------------------------------------------------

_EOL = st.sampled_from(["\r", "\n", "\r\n"])
_SPACE = st.sampled_from(["", " ", "  "])
_VALUE = st.text(
    st.one_of(
        st.sampled_from(list("ab :é€😀\x00\ufeff\x85\u2028\t")),
        st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
    ),
    max_size=8,
)
_RETRY_VALUE = st.one_of(st.from_regex(r"[0-9]{1,6}", fullmatch=True), _VALUE)


def _field(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda sp, v: f"{name}:{sp}{v}", _SPACE, values)


_LINE = st.one_of(
    _field("data", _VALUE),
    _field("data", _VALUE),
    _field("event", _VALUE),
    _field("id", _VALUE),
    _field("retry", _RETRY_VALUE),
    st.builds(lambda v: ":" + v, _VALUE),
    st.sampled_from(
        ["data", "event", "id", "retry", "Data: x", "other: y", "\ufeffdata: z"]
    ),
)


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    """
    Valid event streams: blocks of field lines each closed by a blank line,
    maybe an unterminated last event, random line ends, maybe a BOM.
    """
    lines: list[str] = []
    for block in draw(st.lists(st.lists(_LINE, max_size=5), max_size=6)):
        lines += [*block, ""]
    lines += draw(st.lists(_LINE, max_size=2))
    ends = draw(st.lists(_EOL, min_size=len(lines), max_size=len(lines)))
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):
        text += draw(_LINE)
    return (BOM if draw(st.booleans()) else b"") + text.encode("utf-8")


#: Arbitrary bytes, biased towards the ones that mean something.
_NOISE = st.lists(
    st.one_of(
        st.binary(max_size=6),
        st.sampled_from(
            [
                b"\r",
                b"\n",
                b"\r\n",
                b":",
                b" ",
                b"data",
                b"event",
                b"id",
                b"retry",
                b"123",
                BOM,
                b"\xef",
                b"\x00",
                b"\xe2\x82",
                b"\xac",
                b"\xff",
            ]
        ),
    ),
    max_size=40,
).map(b"".join)


def _draw_chunks(data: st.DataObject, stream: bytes) -> list[bytes]:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    return _chunks(stream, cuts)


class PropertyTests(SynchronousTestCase):
    """
    Hypothesis: the parser against itself, in any split, and against the
    reference model.
    """

    @_HYPOTHESIS
    @given(stream=_streams(), data=st.data())
    def test_valid_streams_any_split(self, stream: bytes, data: st.DataObject) -> None:
        """
        A valid stream gives the model's events, in one read or in any split.
        """
        whole = _parse([stream])
        self.assertEqual(whole, reference_parse(stream))
        self.assertEqual(_parse(_draw_chunks(data, stream)), whole)

    @_HYPOTHESIS
    @given(stream=_NOISE, data=st.data())
    def test_arbitrary_bytes_match_model(
        self, stream: bytes, data: st.DataObject
    ) -> None:
        """
        Any bytes at all (no line bound in reach) give the model's events,
        in any split.
        """
        self.assertEqual(_parse(_draw_chunks(data, stream)), reference_parse(stream))

    @_HYPOTHESIS
    @given(
        stream=st.one_of(_NOISE, st.binary(max_size=200)),
        max_line_length=st.integers(1, 40),
        data=st.data(),
    )
    def test_arbitrary_bytes_never_raise(
        self, stream: bytes, max_line_length: int, data: st.DataObject
    ) -> None:
        """
        Any bytes, any split, a small bound: nothing raises, and C{done} ends
        with L{None} or L{LineTooLong} (after stopping the transport).
        """
        run = _Run(max_line_length=max_line_length)
        for chunk in _draw_chunks(data, stream):
            run.feed([chunk])
            # At most the bound (or the two bytes of a possible BOM start).
            self.assertLessEqual(run.buffered, max(max_line_length, 2))
        run.end()
        outcome = run.outcome
        if outcome is None:
            self.assertFalse(run.stopped)
        else:
            self.assertIsInstance(outcome, LineTooLong)
            self.assertTrue(run.stopped)

    @_HYPOTHESIS
    @given(
        stream=st.one_of(_NOISE, _streams()),
        max_line_length=st.integers(3, 40),
        data=st.data(),
    )
    def test_bounded_matches_model(
        self, stream: bytes, max_line_length: int, data: st.DataObject
    ) -> None:
        """
        With a small bound, the parser fails iff some line is past it, and
        dispatches exactly the events completed before that line, whatever
        the split.
        """
        want, too_long = reference_parse_bounded(stream, max_line_length)
        for chunks in [[stream], _draw_chunks(data, stream)]:
            run = _Run(max_line_length=max_line_length).feed(chunks).end()
            if too_long:
                self.assertIsInstance(run.outcome, LineTooLong)
            else:
                self.assertIsNone(run.outcome)
            self.assertEqual([_tuple(e) for e in run.events], want, chunks)


class FactoryTests(TestCase):
    """
    L{SSEFactory} parses event streams read straight off sockets, one parser
    per connection.
    """

    async def test_two_connections(self) -> None:
        """
        Two connections feeding interleaved halves of events each give their
        own events, in order, through the factory's callback.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
        from twisted.internet.protocol import Protocol, ServerFactory

        from pylon_ai.sse import SSEFactory

        got: list[Event] = []
        servers: list[Protocol] = []
        connected: Deferred[None] = Deferred()

        class Sender(Protocol):
            def connectionMade(self) -> None:
                servers.append(self)
                if len(servers) == 2:
                    connected.callback(None)

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            ServerFactory.forProtocol(Sender)
        )
        self.addCleanup(port.stopListening)
        factory = SSEFactory(got.append)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        clients = [await endpoint.connect(factory) for _ in range(2)]
        await connected
        servers[0].transport.write(b"data: one-")
        servers[1].transport.write(b"event: b\ndata: two\n\n")
        servers[0].transport.write(b"a\n\n")
        for server in servers:
            server.transport.loseConnection()
        for client in clients:
            self.assertIsInstance(client, SSEProtocol)
            await client.done
        self.assertEqual(
            sorted((e.type, e.data) for e in got), [("b", "two"), ("message", "one-a")]
        )
