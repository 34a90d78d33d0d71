// Shared helpers for the Node tests: start the real `server` / `gateway` binaries on
// free ports, talk to the REST API, and drive pusher-js / laravel-echo / raw `ws`
// clients against the Pusher-protocol gateway.
import { spawn, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
export const Pusher = require('pusher-js');
export { WebSocket };

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../..');
export const SERVER_BIN = process.env.SERVER_BIN || path.join(ROOT, 'target/debug/examples/server');
export const GATEWAY_BIN = process.env.GATEWAY_BIN || path.join(ROOT, 'target/debug/examples/gateway');

export const APP_ID = 'orders';
export const APP_KEY = 'orders-key';
export const APP_SECRET = 'orders-secret';
export const PASSWORD = 'password';

/** RFC 3339 UTC with milliseconds, as the engine's events carry them. */
export const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------
// Teardown

const stacks = new WeakMap();
/**
 * Runs `fn` when test `t` ends, last-registered first (node:test runs `t.after` hooks
 * in registration order): clients disconnect before the servers they use stop.
 */
export function defer(t, fn) {
  let stack = stacks.get(t);
  if (!stack) {
    stack = [];
    stacks.set(t, stack);
    t.after(async () => {
      while (stack.length) {
        const f = stack.pop();
        try { await f(); } catch (e) { console.error(`teardown: ${e?.stack || e}`); }
      }
    });
  }
  stack.push(fn);
}

// ---------------------------------------------------------------------------------
// Processes

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * Spawns `bin args…` with `env` and keeps its output for diagnostics. `ready()` must
 * resolve once the process serves. Returns {proc, output(), stop()}; `stop()` sends
 * SIGTERM, then SIGKILL after 10 s, and resolves to {code, signal}.
 */
function spawnLogged(name, bin, args, env) {
  if (!existsSync(bin)) {
    throw new Error(`${name} binary ${bin} does not exist: run \`cargo build --examples --all-features\` ` +
      `or set ${name === 'gateway' ? 'GATEWAY_BIN' : 'SERVER_BIN'}`);
  }
  const proc = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  const keep = (chunk) => {
    out += chunk.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  const exitP = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exited = { code, signal };
      children.delete(proc);
      resolve(exited);
    });
  });
  const stop = async () => {
    if (exited) return exited;
    proc.kill('SIGTERM');
    const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, 10_000);
    const r = await exitP;
    clearTimeout(t);
    return r;
  };
  return {
    proc,
    output: () => out,
    exited: () => exited,
    exitP,
    stop,
    tail: (n = 40) => out.trimEnd().split('\n').slice(-n).join('\n'),
  };
}

async function waitReady(handle, name, check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (handle.exited()) {
      throw new Error(`${name} exited early (${JSON.stringify(handle.exited())}):\n${handle.tail()}`);
    }
    if (await check()) return;
    if (Date.now() > deadline) {
      await handle.stop();
      throw new Error(`${name} did not become ready within ${timeoutMs} ms:\n${handle.tail()}`);
    }
    await sleep(100);
  }
}

/** The environment for embedded mode: no DATABASE_URL / REDIS_URL, no rate limit. */
export function embeddedEnv(extra = {}) {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  return { ORDERS_RATE_LIMIT_PER_MINUTE: '0', ...env, ...extra };
}

/**
 * Starts the real `server` with the REST API and the WebSocket gateway on free ports.
 * `env` is the complete environment (see embeddedEnv). Registers the teardown on `t`
 * (a node:test context) when given. Returns {api, wsPort, stop, output, tail}.
 */
export async function startServer(t, { env = embeddedEnv(), args = [], readyTimeoutMs = 30_000 } = {}) {
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const httpPort = await freePort();
    const wsPort = await freePort();
    const api = `http://127.0.0.1:${httpPort}`;
    const h = spawnLogged('server', SERVER_BIN,
      ['--listen', `127.0.0.1:${httpPort}`, '--ws-listen', `127.0.0.1:${wsPort}`, ...args], env);
    if (t) defer(t, () => h.stop());
    try {
      await waitReady(h, 'server', async () => {
        try {
          const r = await fetch(`${api}/api/health`);
          return r.status === 200 && (await tcpOpen(wsPort));
        } catch { return false; }
      }, readyTimeoutMs);
      return { ...h, api, wsPort, httpPort };
    } catch (e) {
      lastErr = e;
      await h.stop();
      // A port taken between freePort() and the bind: retry on new ports.
      if (!/address (already )?in use|AddrInUse/i.test(h.output())) break;
    }
  }
  throw lastErr;
}

/** Starts the standalone `gateway` binary on a free port. */
export async function startGateway(t, { env, readyTimeoutMs = 20_000 } = {}) {
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const wsPort = await freePort();
    const h = spawnLogged('gateway', GATEWAY_BIN, ['--listen', `127.0.0.1:${wsPort}`], env);
    if (t) defer(t, () => h.stop());
    try {
      await waitReady(h, 'gateway', () => tcpOpen(wsPort), readyTimeoutMs);
      // The port accepting TCP is not enough: wait for a Pusher handshake.
      const ws = await rawConnect(wsPort);
      ws.close();
      return { ...h, wsPort };
    } catch (e) {
      lastErr = e;
      await h.stop();
      if (!/address (already )?in use|AddrInUse/i.test(h.output())) break;
    }
  }
  throw lastErr;
}

// ---------------------------------------------------------------------------------
// REST

export async function http(base, method, urlPath, { token, json, form, headers = {} } = {}) {
  const h = { Accept: 'application/json', ...headers };
  let body;
  if (token) h.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    h['Content-Type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(form).toString();
  }
  const res = await fetch(base + urlPath, { method, headers: h, body });
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
  return { status: res.status, body: parsed, headers: res.headers, text };
}

function describe(method, urlPath, r) {
  return `${method} ${urlPath} → ${r.status} ${typeof r.body === 'string' ? r.body : JSON.stringify(r.body)}`;
}

export async function expectStatus(base, method, urlPath, status, opts) {
  const r = await http(base, method, urlPath, opts);
  assert.equal(r.status, status, describe(method, urlPath, r));
  return r.body;
}

export async function login(base, email = 'alice@example.com') {
  const body = await expectStatus(base, 'POST', '/api/tokens', 201, { json: { email, password: PASSWORD } });
  assert.equal(typeof body.token, 'string');
  assert.equal(body.user.email, email);
  return { token: body.token, user: body.user };
}

export async function placeOrder(base, token, items, key = `node-${randomUUID()}`) {
  const body = await expectStatus(base, 'POST', '/api/orders', 201, {
    token, json: { idempotency_key: key, items },
  });
  assert.equal(body.data.status, 'PENDING');
  return body.data;
}

export async function getOrder(base, token, id) {
  return (await expectStatus(base, 'GET', `/api/orders/${id}`, 200, { token })).data;
}

export async function stockOf(base) {
  const body = await expectStatus(base, 'GET', '/api/products', 200);
  return Object.fromEntries(body.data.map((p) => [p.id, p.stock]));
}

export const TERMINAL = new Set(['PAID', 'FAILED', 'CANCELLED']);

export async function waitTerminal(base, token, id, timeoutMs = 15_000) {
  let last;
  await waitFor(async () => {
    last = await getOrder(base, token, id);
    return TERMINAL.has(last.status);
  }, { timeoutMs, what: () => `order ${id} to reach a terminal status (last: ${last?.status})` });
  return last;
}

/** Every event after `after`, following has_more. Returns {events, metas}. */
export async function eventsAfter(base, token, after) {
  const events = [];
  const metas = [];
  let cursor = after;
  for (let i = 0; i < 1000; i++) {
    const body = await expectStatus(base, 'GET', `/api/events?after=${cursor}`, 200, { token });
    assert.ok(Array.isArray(body.data), 'events: data is an array');
    metas.push(body.meta);
    events.push(...body.data);
    if (!body.meta?.has_more) break;
    assert.ok(body.data.length > 0, 'has_more with an empty page');
    cursor = body.data[body.data.length - 1].seq;
  }
  return { events, metas };
}

// ---------------------------------------------------------------------------------
// Waiting

export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(intervalMs);
  }
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------
// pusher-js

export function pusherClient({ wsPort, api, token, key = APP_KEY, wsHost = '127.0.0.1' }) {
  return new Pusher(key, {
    cluster: '',
    wsHost,
    wsPort,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: {
      endpoint: `${api}/broadcasting/auth`,
      transport: 'ajax',
      headers: { Authorization: `Bearer ${token}` },
    },
  });
}

/**
 * Subscribes `pusher` to `channelName` and records every `order.*` event in `events`
 * ({event, data, at}). Resolves once subscribed, rejects on subscription_error.
 */
export function subscribeRecording(pusher, channelName, events = []) {
  const channel = pusher.subscribe(channelName);
  channel.bind_global((event, data) => {
    if (event.startsWith('order.')) events.push({ event, data, at: Date.now() });
  });
  const ready = new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', (err) =>
      reject(Object.assign(new Error(`subscription_error on ${channelName}: ${JSON.stringify(err)}`), { err })));
  });
  return { channel, events, ready: withTimeout(ready, 10_000, `subscription to ${channelName}`) };
}

export function waitConnected(pusher, ms = 10_000) {
  if (pusher.connection.state === 'connected') return Promise.resolve();
  return withTimeout(new Promise((resolve) => pusher.connection.bind('connected', resolve)), ms,
    `pusher-js to connect (state ${pusher.connection.state})`);
}

// ---------------------------------------------------------------------------------
// Raw sockets

/**
 * A raw `ws` socket with a frame queue: `next(pred, ms)` resolves with the next frame
 * (parsed, `raw` kept) that matches, `closed` resolves with {code, reason}.
 */
export function rawSocket(url, opts = {}) {
  const ws = new WebSocket(url, opts);
  const frames = [];
  const waiters = [];
  let closeInfo = null;
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      closeInfo = { code, reason: reason.toString(), at: Date.now() };
      resolve(closeInfo);
    });
  });
  ws.on('error', () => { /* surfaces as close */ });
  ws.on('message', (buf) => {
    const raw = buf.toString();
    let f;
    try { f = JSON.parse(raw); } catch { f = { event: '<unparseable>', raw }; }
    f.raw = raw;
    frames.push(f);
    for (const w of [...waiters]) {
      if (w.pred(f)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(f);
      }
    }
  });
  const next = (pred, ms = 5000, what = 'a frame') => {
    const idx = frames.findIndex((f) => !f.consumed && pred(f));
    if (idx >= 0) { frames[idx].consumed = true; return Promise.resolve(frames[idx]); }
    return withTimeout(new Promise((resolve) => waiters.push({
      pred,
      resolve: (f) => { f.consumed = true; resolve(f); },
    })), ms, `${what} (frames so far: ${frames.map((f) => f.raw).join(' | ')})`);
  };
  const send = (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  return { ws, frames, next, send, closed, closeInfo: () => closeInfo };
}

export function wsUrl(port, key = APP_KEY) {
  return `ws://127.0.0.1:${port}/app/${key}?protocol=7&client=js&version=8.6.0`;
}

/** A raw socket past `pusher:connection_established`; `socketId`, `activityTimeout` set. */
export async function rawConnect(port, { key = APP_KEY, wsOpts = {} } = {}) {
  const s = rawSocket(wsUrl(port, key), wsOpts);
  const est = await s.next((f) => f.event === 'pusher:connection_established', 5000, 'connection_established');
  assert.equal(typeof est.data, 'string', 'connection_established data is a JSON string');
  const d = JSON.parse(est.data);
  s.socketId = d.socket_id;
  s.activityTimeout = d.activity_timeout;
  s.close = () => s.ws.close();
  return s;
}

export const byEvent = (name) => (f) => f.event === name;

// ---------------------------------------------------------------------------------
// Event checks

export const PAYLOAD_KEYS = {
  'order.created': ['created_at', 'order_id', 'seq', 'total'],
  'order.processing': ['order_id', 'processing_at', 'seq'],
  'order.paid': ['order_id', 'paid_at', 'seq', 'total'],
  'order.failed': ['failed_at', 'order_id', 'reason', 'seq'],
  'order.cancelled': ['cancelled_at', 'order_id', 'seq'],
};

export const STATUS_OF = {
  'order.created': 'PENDING',
  'order.processing': 'PROCESSING',
  'order.paid': 'PAID',
  'order.failed': 'FAILED',
  'order.cancelled': 'CANCELLED',
};

/** Asserts the exact shape of one event payload (as pusher-js hands it over: parsed). */
export function checkPayload(event, data, order) {
  assert.ok(PAYLOAD_KEYS[event], `unknown event ${event}`);
  assert.equal(typeof data, 'object', `${event}: data parses to an object`);
  assert.deepEqual(Object.keys(data).sort(), PAYLOAD_KEYS[event], `${event}: exact payload keys in ${JSON.stringify(data)}`);
  assert.equal(typeof data.order_id, 'string', `${event}: order_id is a string`);
  assert.ok(Number.isInteger(data.seq) && data.seq > 0, `${event}: seq is a positive integer (${data.seq})`);
  if (order) assert.equal(data.order_id, String(order.id), `${event}: order_id`);
  if ('total' in data) {
    assert.equal(typeof data.total, 'string', `${event}: total is a string`);
    if (order) assert.equal(data.total, order.total_amount, `${event}: total equals total_amount`);
  }
  for (const k of ['created_at', 'processing_at', 'paid_at', 'failed_at', 'cancelled_at']) {
    if (k in data) assert.match(data[k], RFC3339_MS, `${event}: ${k} is RFC 3339 UTC with ms`);
  }
  if (event === 'order.failed') assert.equal(data.reason, 'Simulated payment decline.');
}

/** Asserts sorted seqs are consecutive (no gap, no duplicate), starting at `from` when given. */
export function assertConsecutive(seqs, from) {
  const sorted = [...seqs].sort((a, b) => a - b);
  assert.ok(sorted.length > 0, 'no events');
  if (from !== undefined) assert.equal(sorted[0], from, `first seq ${sorted[0]}, expected ${from}`);
  for (let i = 1; i < sorted.length; i++) {
    assert.equal(sorted[i], sorted[i - 1] + 1, `seqs not consecutive: ${sorted.join(',')}`);
  }
  return sorted;
}

// ---------------------------------------------------------------------------------
// MySQL + Redis

export function mysqlRedisEnv() {
  const { DATABASE_URL, REDIS_URL } = process.env;
  if (!DATABASE_URL || !REDIS_URL) {
    throw new Error(
      'This test needs MySQL/MariaDB and Redis: set DATABASE_URL (e.g. mysql://orders:orders@127.0.0.1:3306/orders) ' +
      `and REDIS_URL (e.g. redis://127.0.0.1:6379); got DATABASE_URL=${DATABASE_URL ? 'set' : 'unset'}, ` +
      `REDIS_URL=${REDIS_URL ? 'set' : 'unset'}. tests/run exports both.`);
  }
  return { DATABASE_URL, REDIS_URL };
}

/** Runs a command, returning stdout; throws with stderr on failure. */
export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}
