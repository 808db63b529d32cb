// The Vercel AI SDK as a client of the gateway, for
// tests/test_clients_responses_aisdk.py: `node aisdk.cjs CASE`, with the
// gateway in PYLON_BASE_URL (ending in /v1), its key in PYLON_KEY and the
// model in PYLON_MODEL; the packages are found through NODE_PATH (the
// test points it at .ci/node_modules).  The provider is the SDK's default,
// createOpenAI({baseURL, apiKey})(model), which speaks the Responses API.
// Prints one JSON object with what the SDK returned; on a failure, the
// error (and the HTTP body the SDK got, if any) on stderr, and exits 1.
"use strict";

const { generateText, streamText, generateObject, tool, stepCountIs } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const { z } = require("zod");

const openai = createOpenAI({
  baseURL: process.env.PYLON_BASE_URL,
  apiKey: process.env.PYLON_KEY,
});
const model = openai(process.env.PYLON_MODEL);
// PYLON_STORE=false: the provider option that makes the SDK send earlier
// output items whole instead of as item_reference ids (its default, store
// unset, assumes a server that keeps them).
const providerOptions =
  process.env.PYLON_STORE === "false" ? { openai: { store: false } } : undefined;

const weather = tool({
  description: "Get the weather in a city.",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) =>
    city === "Paris" ? "Sunny, 21 C in Paris" : `No weather for ${city}`,
});

function summary(result, extra) {
  return {
    text: result.text,
    finishReason: result.finishReason,
    usage: {
      inputTokens: result.usage.inputTokens,
      outputTokens: result.usage.outputTokens,
    },
    ...extra,
  };
}

function toolSteps(steps) {
  return steps.map((step) => ({
    calls: step.toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
    results: step.toolResults.map((r) => r.output),
  }));
}

async function collect(stream) {
  const parts = [];
  for await (const part of stream) parts.push(part);
  return parts;
}

// Stream calls report failures as error parts, not as rejections: make
// them fail the run.
function failOnError() {
  let failure = null;
  return {
    onError: ({ error }) => {
      failure = failure || error;
    },
    check: () => {
      if (failure) throw failure;
    },
  };
}

const cases = {
  async "generate-text"() {
    return summary(await generateText({ model, prompt: "Say hello." }));
  },

  async "stream-text"() {
    const errors = failOnError();
    const result = streamText({ model, prompt: "Say hello.", onError: errors.onError });
    const deltas = await collect(result.textStream);
    errors.check();
    return summary(
      { text: await result.text, finishReason: await result.finishReason, usage: await result.usage },
      { deltas },
    );
  },

  async "generate-object"() {
    const result = await generateObject({
      model,
      schema: z.object({ name: z.string(), age: z.number().int() }),
      schemaName: "person",
      prompt: "Describe Ada Lovelace.",
    });
    return { object: result.object, finishReason: result.finishReason };
  },

  async "generate-text-tools"() {
    const result = await generateText({
      model,
      prompt: "What is the weather in Paris?",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(3),
      providerOptions,
    });
    return summary(result, { steps: toolSteps(result.steps) });
  },

  async "stream-text-tools"() {
    const errors = failOnError();
    const result = streamText({
      model,
      prompt: "What is the weather in Paris?",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(3),
      providerOptions,
      onError: errors.onError,
    });
    const deltas = await collect(result.textStream);
    errors.check();
    return summary(
      { text: await result.text, finishReason: await result.finishReason, usage: await result.totalUsage },
      { deltas, steps: toolSteps(await result.steps) },
    );
  },
};

async function main() {
  const run = cases[process.argv[2]];
  if (!run) throw new Error(`unknown case ${process.argv[2]}; known: ${Object.keys(cases)}`);
  process.stdout.write(JSON.stringify(await run()) + "\n");
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
  for (const key of ["statusCode", "responseBody", "requestBodyValues", "cause"]) {
    if (error && error[key] !== undefined) {
      const value = typeof error[key] === "string" ? error[key] : JSON.stringify(error[key]);
      process.stderr.write(`${key}: ${String(value).slice(0, 4000)}\n`);
    }
  }
  process.exit(1);
});
