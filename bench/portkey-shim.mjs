// Preloaded into the Portkey gateway (node --import): gives fetch() responses
// mutable headers.  Portkey 1.15.x appends x-portkey-* headers to the upstream
// response, which fails with "TypeError: immutable" on Node with current
// @hono/node-server (Portkey-AI/gateway#1389, #1550); this is the same copy
// its proposed fix (#1551) makes.  One extra Response object per request.
const NativeResponse = globalThis.Response;
const nativeFetch = globalThis.fetch;
globalThis.fetch = async function fetch(...args) {
  const r = await nativeFetch(...args);
  return new NativeResponse(r.body, {
    status: r.status,
    statusText: r.statusText,
    headers: r.headers,
  });
};
