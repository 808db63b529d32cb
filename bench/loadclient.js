#!/usr/bin/env node
// A small keep-alive HTTP load client that records, per request, the time to
// the first body byte (TTFT) and the total time, for streaming and
// non-streaming completions.  No npm dependencies.
//
//   node loadclient.js '<json spec>'
//
// spec: {url, headers, body (string), concurrency, requests (max count),
//        duration_s (max time, default 10), timeout_s (per request, default 30),
//        expect: "openai" | "anthropic" | "responses" | "json",
//        warmup (requests, default 0)}
//
// Each of `concurrency` workers sends requests one after another on its own
// keep-alive connection until `requests` were started or `duration_s` passed.
// Prints one JSON line with counts, rates and percentiles (milliseconds).
// While running it prints "open N" lines on stderr whenever the number of
// requests that got their first byte and have not ended changes by 10%.
"use strict";

const http = require("http");

const spec = JSON.parse(process.argv[2]);
const url = new URL(spec.url);
const concurrency = spec.concurrency || 1;
const maxRequests = spec.requests || 1000000;
const durationMs = (spec.duration_s || 10) * 1000;
const timeoutMs = (spec.timeout_s || 30) * 1000;
const expect = spec.expect || "json";
const body = Buffer.from(spec.body || "{}");
// The event that says a stream ended well.  Searched in every chunk (with the
// previous chunk's tail, for a marker split across two): Responses' last event
// carries the whole response, so the marker is far from the stream's end.
const MARKERS = { openai: "[DONE]", anthropic: "message_stop", responses: "response.completed" };
const marker = MARKERS[expect] || null;
const headers = Object.assign(
  { "content-type": "application/json", "content-length": body.length },
  spec.headers || {}
);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });

const ttft = [];
const total = [];
const errors = {};
let started = 0;
let ok = 0;
let failed = 0;
let bytes = 0;
let open = 0;
let peakOpen = 0;
let lastReported = 0;

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function noteError(kind) {
  failed++;
  errors[kind] = (errors[kind] || 0) + 1;
}

function reportOpen() {
  if (Math.abs(open - lastReported) >= Math.max(1, concurrency / 10) || open === concurrency) {
    if (open !== lastReported) {
      lastReported = open;
      process.stderr.write("open " + open + "\n");
    }
  }
}

function one() {
  return new Promise((resolve) => {
    const t0 = now();
    let first = null;
    let tail = "";
    let seen = false;
    let opened = false;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      if (opened) {
        open--;
        reportOpen();
      }
      if (err) noteError(err);
      resolve();
    };
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers, agent },
      (res) => {
        res.on("data", (chunk) => {
          if (first === null) {
            first = now();
            opened = true;
            open++;
            if (open > peakOpen) peakOpen = open;
            reportOpen();
          }
          bytes += chunk.length;
          if (marker !== null && !seen) {
            const text = tail + chunk.toString("latin1");
            seen = text.indexOf(marker) >= 0;
            tail = text.slice(-marker.length);
          }
        });
        res.on("end", () => {
          const t1 = now();
          if (res.statusCode !== 200) return finish("status_" + res.statusCode);
          if (marker !== null && !seen) return finish("incomplete_stream");
          if (first === null) first = t1;
          ok++;
          ttft.push(first - t0);
          total.push(t1 - t0);
          finish(null);
        });
        res.on("error", (e) => finish("response_" + (e.code || e.message)));
      }
    );
    req.setTimeout(timeoutMs, () => {
      req.destroy(new Error("timeout"));
    });
    req.on("error", (e) => finish("request_" + (e.code || e.message)));
    req.end(body);
  });
}

function pct(arr, p) {
  if (arr.length === 0) return null;
  const s = Float64Array.from(arr).sort();
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return Math.round(s[i] * 1000) / 1000;
}

async function main() {
  const warm = spec.warmup || 0;
  for (let i = 0; i < warm; i++) await one();
  ttft.length = 0;
  total.length = 0;
  ok = 0;
  failed = 0;
  bytes = 0;
  for (const k of Object.keys(errors)) delete errors[k];
  const t0 = now();
  const deadline = t0 + durationMs;
  const worker = async () => {
    while (started < maxRequests && now() < deadline) {
      started++;
      await one();
    }
  };
  const workers = [];
  for (let i = 0; i < concurrency; i++) workers.push(worker());
  await Promise.all(workers);
  const elapsed = (now() - t0) / 1000;
  const out = {
    started,
    ok,
    failed,
    errors,
    elapsed_s: Math.round(elapsed * 1000) / 1000,
    rate: Math.round((ok / elapsed) * 10) / 10,
    bytes,
    peak_open: peakOpen,
    ttft_ms: { p50: pct(ttft, 50), p99: pct(ttft, 99), max: pct(ttft, 100) },
    total_ms: { p50: pct(total, 50), p99: pct(total, 99), max: pct(total, 100) },
  };
  process.stdout.write(JSON.stringify(out) + "\n");
  agent.destroy();
  process.exit(0);
}

main();
