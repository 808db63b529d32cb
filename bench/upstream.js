#!/usr/bin/env node
// A fast scripted LLM upstream for the benchmarks: no npm dependencies, every
// reply pre-encoded once per (format, model, usage) and cached as Buffers.
//
//   node upstream.js --port 9000 [--host 127.0.0.1]
//
// Routes (HTTP/1.1 keep-alive):
//   POST /v1/chat/completions   OpenAI Chat Completions, stream true/false,
//                               honours stream_options.include_usage
//   POST /v1/messages           Anthropic Messages, stream true/false
//   GET  /healthz               {"status":"ok"}
//
// The reply is scripted by the request's model name: "...c<N>-d<MS>..." means
// N text chunks with MS milliseconds between two chunks (the first chunk goes
// out at once).  Without such a name: --chunks / --delay (defaults 20 / 0).
// With no delay the whole stream is written at once (one write); with a delay
// every chunk is its own write.  A "-f<MS>" suffix ("c200-d0-f5") sends the
// first chunk alone and the rest MS milliseconds later, so that the time to
// the first token is not the time to process the whole burst.
"use strict";

const http = require("http");

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const PORT = parseInt(arg("port", "9000"), 10);
const HOST = arg("host", "127.0.0.1");
const DEFAULT_CHUNKS = parseInt(arg("chunks", "20"), 10);
const DEFAULT_DELAY = parseInt(arg("delay", "0"), 10);
const MAX_CHUNKS = 100000;
const MAX_BODY = 1 << 20;
const CREATED = 1700000000;

function script(model) {
  const m = /c(\d+)-d(\d+)(?:-f(\d+))?/.exec(model || "");
  let chunks = m ? parseInt(m[1], 10) : DEFAULT_CHUNKS;
  const delay = Math.min(m ? parseInt(m[2], 10) : DEFAULT_DELAY, 60000);
  const first = Math.min(m && m[3] ? parseInt(m[3], 10) : 0, 60000);
  chunks = Math.max(1, Math.min(chunks, MAX_CHUNKS));
  return { chunks, delay, first };
}

// The i-th token: short words, like a real model's deltas.
function token(i) {
  return i === 0 ? "Hello" : " tok" + (i % 100);
}

const cache = new Map();

function sse(obj) {
  return "data: " + JSON.stringify(obj) + "\n\n";
}

function openaiParts(model, chunks, usage) {
  const id = "chatcmpl-bench";
  const base = (delta, finish) => ({
    id,
    object: "chat.completion.chunk",
    created: CREATED,
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  });
  const parts = [];
  for (let i = 0; i < chunks; i++) {
    const delta = i === 0 ? { role: "assistant", content: token(0) } : { content: token(i) };
    parts.push(sse(base(delta, null)));
  }
  let tail = sse(base({}, "stop"));
  if (usage) {
    tail += sse({
      id,
      object: "chat.completion.chunk",
      created: CREATED,
      model,
      choices: [],
      usage: { prompt_tokens: 10, completion_tokens: chunks, total_tokens: 10 + chunks },
    });
  }
  tail += "data: [DONE]\n\n";
  parts[parts.length - 1] += tail;
  return parts.map((p) => Buffer.from(p));
}

function anthropicEvent(type, obj) {
  return "event: " + type + "\ndata: " + JSON.stringify(obj) + "\n\n";
}

function anthropicParts(model, chunks) {
  const parts = [];
  const head =
    anthropicEvent("message_start", {
      type: "message_start",
      message: {
        id: "msg_bench",
        type: "message",
        role: "assistant",
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: 10, output_tokens: 1 },
      },
    }) +
    anthropicEvent("content_block_start", {
      type: "content_block_start",
      index: 0,
      content_block: { type: "text", text: "" },
    }) +
    anthropicEvent("ping", { type: "ping" });
  for (let i = 0; i < chunks; i++) {
    let p = anthropicEvent("content_block_delta", {
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text: token(i) },
    });
    if (i === 0) p = head + p;
    parts.push(p);
  }
  parts[parts.length - 1] +=
    anthropicEvent("content_block_stop", { type: "content_block_stop", index: 0 }) +
    anthropicEvent("message_delta", {
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { output_tokens: chunks },
    }) +
    anthropicEvent("message_stop", { type: "message_stop" });
  return parts.map((p) => Buffer.from(p));
}

function wholeText(chunks) {
  let s = "";
  for (let i = 0; i < chunks; i++) s += token(i);
  return s;
}

function openaiWhole(model, chunks) {
  return Buffer.from(
    JSON.stringify({
      id: "chatcmpl-bench",
      object: "chat.completion",
      created: CREATED,
      model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: wholeText(chunks) },
          finish_reason: "stop",
        },
      ],
      usage: { prompt_tokens: 10, completion_tokens: chunks, total_tokens: 10 + chunks },
    })
  );
}

function anthropicWhole(model, chunks) {
  return Buffer.from(
    JSON.stringify({
      id: "msg_bench",
      type: "message",
      role: "assistant",
      model,
      content: [{ type: "text", text: wholeText(chunks) }],
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: chunks },
    })
  );
}

// One cached entry: {parts: [Buffer...], whole: Buffer (parts joined), delay}
function reply(format, model, stream, usage) {
  const key = format + "|" + model + "|" + (stream ? 1 : 0) + "|" + (usage ? 1 : 0);
  let r = cache.get(key);
  if (r) return r;
  const { chunks, delay, first } = script(model);
  let parts;
  if (!stream) parts = [format === "openai" ? openaiWhole(model, chunks) : anthropicWhole(model, chunks)];
  else if (format === "openai") parts = openaiParts(model, chunks, usage);
  else parts = anthropicParts(model, chunks);
  r = {
    parts,
    whole: Buffer.concat(parts),
    rest: Buffer.concat(parts.slice(1)),
    delay: stream ? delay : 0,
    first: stream && parts.length > 1 ? first : 0,
  };
  if (cache.size < 1000) cache.set(key, r);
  return r;
}

const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache" };
const JSON_HEADERS = { "content-type": "application/json" };

let open = 0;
let served = 0;
let connections = 0;

function send(res, r, stream) {
  if (!stream) {
    res.writeHead(200, { ...JSON_HEADERS, "content-length": r.whole.length });
    res.end(r.whole);
    return;
  }
  res.writeHead(200, SSE_HEADERS);
  if (r.delay <= 0 && r.first <= 0) {
    res.end(r.whole);
    return;
  }
  let i = 0;
  let timer = null;
  open++;
  const finish = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    open--;
  };
  res.on("close", () => {
    if (timer) finish();
  });
  const next = () => {
    timer = null;
    if (res.destroyed) return;
    if (i > 0 && r.delay <= 0) {
      open--;
      res.end(r.rest); // the burst after the first chunk
      return;
    }
    res.write(r.parts[i++]);
    if (i >= r.parts.length) {
      open--;
      res.end();
      return;
    }
    timer = setTimeout(next, i === 1 && r.first > 0 ? r.first : r.delay);
  };
  next();
}

function fail(res, status, message) {
  const body = Buffer.from(JSON.stringify({ error: { message, type: "invalid_request_error" } }));
  res.writeHead(status, { ...JSON_HEADERS, "content-length": body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const path = req.url.split("?")[0];
  if (req.method === "GET") {
    if (path === "/healthz" || path === "/v1/models") {
      const body = Buffer.from(JSON.stringify({ status: "ok", open, served, connections, object: "list", data: [] }));
      res.writeHead(200, { ...JSON_HEADERS, "content-length": body.length });
      res.end(body);
    } else fail(res, 404, "not found");
    return;
  }
  let format;
  if (path.endsWith("/chat/completions")) format = "openai";
  else if (path.endsWith("/messages")) format = "anthropic";
  else {
    req.resume();
    fail(res, 404, "no route " + path);
    return;
  }
  const bufs = [];
  let size = 0;
  req.on("data", (b) => {
    size += b.length;
    if (size <= MAX_BODY) bufs.push(b);
  });
  req.on("end", () => {
    if (size > MAX_BODY) return fail(res, 413, "too large");
    let body;
    try {
      body = JSON.parse(Buffer.concat(bufs).toString("utf8"));
    } catch (e) {
      return fail(res, 400, "body is not JSON");
    }
    served++;
    const stream = body.stream === true;
    const usage = !!(body.stream_options && body.stream_options.include_usage === true);
    send(res, reply(format, String(body.model || ""), stream, usage), stream);
  });
});

server.on("connection", () => {
  connections++;
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 125000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;
// A listen queue as deep as a provider's front end has (Node's default is
// 511): a gateway opening 1,000 upstream connections at once (scenario c)
// must not see SYNs dropped and retried a second later.
server.listen(PORT, HOST, 4096, () => {
  process.stdout.write("upstream listening on " + HOST + ":" + PORT + "\n");
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
