"""
Tests for L{pylon_ai.formats.canonical}: the effort/budget table and the
forced-tool helpers.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.formats.canonical import (
    EFFORTS,
    MIN_BUDGET,
    STRUCTURED_OUTPUT_TOOL,
    OutputFormat,
    Reasoning,
    Reply,
    TextPart,
    ToolCallPart,
    budget_for_effort,
    effort_for_budget,
    structured_output_tool,
    unwrap_structured_output,
)
from pylon_ai.formats.events import Stop


class EffortTableTests(SynchronousTestCase):
    """
    L{budget_for_effort} and L{effort_for_budget}.
    """

    def test_round_trip(self) -> None:
        """
        Each level Anthropic budgets can express lands back on itself; every
        budget is at least Anthropic's minimum and grows with the level.
        """
        for effort in ("low", "medium", "high"):
            budget = budget_for_effort(effort)
            assert budget is not None
            self.assertEqual(effort_for_budget(budget), effort)
        budgets = [budget_for_effort(e) for e in EFFORTS[1:]]
        self.assertEqual(budgets, sorted(budgets))  # type: ignore[type-var]
        self.assertEqual(budgets[0], MIN_BUDGET)
        self.assertIsNone(budget_for_effort("none"))

    def test_requested_effort(self) -> None:
        """
        The explicit effort wins; an enabled budget maps per the table;
        disabled, between_tools and a bare adaptive ask for none.
        """
        cases = [
            (Reasoning(effort="low"), "low"),
            (Reasoning(mode="enabled", budget_tokens=9000), "high"),
            (Reasoning(mode="enabled", budget_tokens=9000, effort="low"), "low"),
            (Reasoning(mode="adaptive"), None),
            (Reasoning(mode="adaptive", effort="max"), "max"),
            (Reasoning(mode="disabled", effort="high"), None),
            (Reasoning(mode="between_tools"), None),
        ]
        for reasoning, expected in cases:
            self.assertEqual(reasoning.requested_effort(), expected, reasoning)


class StructuredOutputToolTests(SynchronousTestCase):
    """
    The forced-tool technique's helpers.
    """

    def test_tool(self) -> None:
        """
        The tool takes the schema, or any object for C{json_object}.
        """
        schema = {"type": "object", "properties": {"a": {"type": "number"}}}
        tool = structured_output_tool(OutputFormat("json_schema", schema))
        self.assertEqual((tool.name, tool.parameters), (STRUCTURED_OUTPUT_TOOL, schema))
        tool = structured_output_tool(OutputFormat("json_object"))
        self.assertEqual(tool.parameters, {"type": "object"})

    def test_unwrap_keeps_other_calls(self) -> None:
        """
        Beside a call of another tool, the stop reason stays C{tool_use};
        a reply without the forced call is returned as it is.
        """
        reply = Reply(
            id="1",
            model="m",
            parts=(
                ToolCallPart("a", "lookup", {}),
                ToolCallPart("b", STRUCTURED_OUTPUT_TOOL, {"x": "é"}),
            ),
            stop=Stop("tool_use", "tool_use"),
        )
        result = unwrap_structured_output(reply)
        self.assertEqual(result.parts[1], TextPart('{"x":"é"}'))
        self.assertEqual(result.stop.reason, "tool_use")
        plain = Reply(id="1", model="m", parts=(TextPart("x"),), stop=Stop("end_turn"))
        self.assertIs(unwrap_structured_output(plain), plain)
