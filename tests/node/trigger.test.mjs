// The standalone `gateway` binary without Redis: the signed Pusher HTTP trigger API
// (`POST /apps/{app_id}/events`) delivers to public and private channels; private
// subscriptions use signatures a backend computes with the app secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import {
  APP_ID, APP_KEY, APP_SECRET, startGateway, rawConnect, byEvent, pusherClient,
  withTimeout, sleep,
  defer,
} from './lib.mjs';

function gatewayEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.REDIS_URL;
  delete env.DATABASE_URL;
  return env;
}

/** A signed trigger request, as the Pusher HTTP API (and pusher-http-php) sends it. */
async function trigger(port, body, { secret = APP_SECRET, appId = APP_ID } = {}) {
  const text = JSON.stringify(body);
  const path = `/apps/${appId}/events`;
  const params = {
    auth_key: APP_KEY,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    body_md5: createHash('md5').update(text).digest('hex'),
  };
  const query = Object.keys(params).sort().map((k) => `${k}=${params[k]}`).join('&');
  const signature = createHmac('sha256', secret).update(`POST\n${path}\n${query}`).digest('hex');
  const res = await fetch(`http://127.0.0.1:${port}${path}?${query}&auth_signature=${signature}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: text,
  });
  return { status: res.status, text: await res.text() };
}

const sign = (socketId, channel) =>
  `${APP_KEY}:${createHmac('sha256', APP_SECRET).update(`${socketId}:${channel}`).digest('hex')}`;

test('gateway: the signed trigger API delivers to public and private channels; a bad signature is refused', async (t) => {
  const gw = await startGateway(t, { env: gatewayEnv() });
  const s = await rawConnect(gw.wsPort);
  defer(t, () => s.close());

  s.send({ event: 'pusher:subscribe', data: { channel: 'news' } });
  await s.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === 'news', 5000, 'news subscribed');
  s.send({ event: 'pusher:subscribe', data: { channel: 'private-orders.7', auth: sign(s.socketId, 'private-orders.7') } });
  await s.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === 'private-orders.7', 5000,
    'private channel subscribed with a locally computed signature');

  const payload = { order_id: '42', total: '100.00', paid_at: '2026-12-05T10:00:00.123Z', seq: 3 };
  const ok = await trigger(gw.wsPort, { name: 'order.paid', channels: ['news', 'private-orders.7'], data: JSON.stringify(payload) });
  assert.equal(ok.status, 200, ok.text);
  const a = await s.next((f) => f.event === 'order.paid' && f.channel === 'news', 5000, 'order.paid on news');
  const b = await s.next((f) => f.event === 'order.paid' && f.channel === 'private-orders.7', 5000, 'order.paid on the private channel');
  for (const f of [a, b]) {
    assert.equal(typeof f.data, 'string', 'data is a JSON string');
    assert.deepEqual(JSON.parse(f.data), payload);
  }

  // Wrong secret → refused, nothing delivered.
  const bad = await trigger(gw.wsPort, { name: 'order.paid', channels: ['news'], data: '{}' }, { secret: 'not-the-secret' });
  assert.ok([401, 403].includes(bad.status), `bad signature: ${bad.status} ${bad.text}`);
  const wrongApp = await trigger(gw.wsPort, { name: 'order.paid', channels: ['news'], data: '{}' }, { appId: 'other-app' });
  assert.ok([401, 403, 404].includes(wrongApp.status), `unknown app: ${wrongApp.status} ${wrongApp.text}`);
  await sleep(300);
  assert.equal(s.frames.filter((f) => f.event === 'order.paid').length, 2, 'nothing delivered for refused triggers');

  // A pusher-js client receives a triggered event on a public channel.
  const pusher = pusherClient({ wsPort: gw.wsPort, api: 'http://127.0.0.1:1', token: 'unused' });
  defer(t, () => pusher.disconnect());
  const ch = pusher.subscribe('news');
  await withTimeout(new Promise((r) => ch.bind('pusher:subscription_succeeded', r)), 5000, 'pusher-js subscribed');
  const got = withTimeout(new Promise((r) => ch.bind('order.created', r)), 5000, 'pusher-js order.created');
  assert.equal((await trigger(gw.wsPort, { name: 'order.created', channel: 'news', data: JSON.stringify({ order_id: '1' }) })).status, 200);
  assert.deepEqual(await got, { order_id: '1' });
});

test('gateway: a client silent past activity + pong timeouts is closed; one that answers pings stays', async (t) => {
  const gw = await startGateway(t, {
    env: gatewayEnv({ ORDERS_WS_ACTIVITY_TIMEOUT_SECS: '1', ORDERS_WS_PONG_TIMEOUT_SECS: '1' }),
  });
  const silent = await rawConnect(gw.wsPort, { wsOpts: { autoPong: false } });
  const polite = await rawConnect(gw.wsPort);
  defer(t, () => { silent.ws.terminate(); polite.ws.terminate(); });
  polite.ws.on('message', (buf) => {
    if (JSON.parse(buf.toString()).event === 'pusher:ping') polite.send({ event: 'pusher:pong', data: {} });
  });
  const closed = await withTimeout(silent.closed, 6000, 'the silent client to be closed');
  t.diagnostic(`silent client closed with ${closed.code}`);
  assert.ok(silent.frames.some((f) => f.event === 'pusher:ping'), 'pinged before being closed');
  await sleep(2500);
  assert.equal(polite.ws.readyState, 1, 'the answering client is still open');
  assert.ok(polite.frames.filter((f) => f.event === 'pusher:ping').length >= 1, 'the answering client was pinged too');
});
