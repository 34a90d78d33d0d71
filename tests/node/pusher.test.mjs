// (a) pusher-js against the real server: the exact payloads of order.created,
// order.processing, order.paid / order.failed on private-orders.{user_id}, with
// consecutive per-user seqs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, embeddedEnv, login, placeOrder, pusherClient, subscribeRecording,
  waitFor, waitTerminal, stockOf, checkPayload, assertConsecutive, rawConnect, byEvent,
  http, eventsAfter, PAYLOAD_KEYS,
  defer,
} from './lib.mjs';

test('pusher-js: approval 1.0 → order.created, order.processing, order.paid with exact payloads and consecutive seqs', async (t) => {
  const srv = await startServer(t, { env: embeddedEnv({ ORDERS_PAYMENT_APPROVAL_RATE: '1.0' }) });
  const { token, user } = await login(srv.api, 'alice@example.com');
  const pusher = pusherClient({ wsPort: srv.wsPort, api: srv.api, token });
  defer(t, () => pusher.disconnect());
  const { events, ready } = subscribeRecording(pusher, `private-orders.${user.id}`);
  await ready;

  const orders = [];
  orders.push(await placeOrder(srv.api, token, [{ product_id: 2, quantity: 1 }]));
  orders.push(await placeOrder(srv.api, token, [{ product_id: 3, quantity: 2 }, { product_id: 4, quantity: 1 }]));
  orders.push(await placeOrder(srv.api, token, [{ product_id: 1, quantity: 1 }]));

  await waitFor(() => orders.every((o) => events.some((e) => e.event === 'order.paid' && e.data.order_id === String(o.id))),
    { timeoutMs: 15_000, what: () => `order.paid for every order; got ${JSON.stringify(events.map((e) => [e.event, e.data]))}` });
  // Three events per order.
  await waitFor(() => events.length >= 3 * orders.length, { timeoutMs: 5000, what: 'all events' });

  for (const o of orders) {
    const mine = events.filter((e) => e.data.order_id === String(o.id));
    assert.deepEqual(mine.map((e) => e.event), ['order.created', 'order.processing', 'order.paid'],
      `events of order ${o.id} in order`);
    for (const e of mine) checkPayload(e.event, e.data, o);
    const seqs = mine.map((e) => e.data.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `seqs of order ${o.id} ascending`);
    const after = await waitTerminal(srv.api, token, o.id);
    assert.equal(after.status, 'PAID');
  }
  assert.equal(events.length, 3 * orders.length, `no extra events: ${JSON.stringify(events.map((e) => e.event))}`);
  // A fresh server: alice's seqs are exactly 1..9.
  assertConsecutive(events.map((e) => e.data.seq), 1);

  // The same events through GET /api/events.
  const { events: logged, metas } = await eventsAfter(srv.api, token, 0);
  assert.deepEqual(logged.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const e of logged) {
    assert.equal(e.channel, `private-orders.${user.id}`);
    const live = events.find((l) => l.data.seq === e.seq);
    assert.equal(e.event, live.event);
    assert.deepEqual(e.data, live.data, `event seq ${e.seq}: the API and the socket agree`);
  }
  const meta = metas[metas.length - 1];
  assert.equal(meta.last_seq, 9);
  assert.equal(meta.has_more, false);
  assert.equal(meta.truncated, false);

  pusher.disconnect();
  const { code, signal } = await srv.stop();
  assert.equal(code, 0, `server exit on SIGTERM: code ${code} signal ${signal}`);
});

test('pusher-js: approval 0.0 → order.failed with the decline reason, stock restored', async (t) => {
  const srv = await startServer(t, { env: embeddedEnv({ ORDERS_PAYMENT_APPROVAL_RATE: '0.0' }) });
  const { token, user } = await login(srv.api, 'bob@example.com');
  const pusher = pusherClient({ wsPort: srv.wsPort, api: srv.api, token });
  defer(t, () => pusher.disconnect());
  const { events, ready } = subscribeRecording(pusher, `private-orders.${user.id}`);
  await ready;

  const before = await stockOf(srv.api);
  const o1 = await placeOrder(srv.api, token, [{ product_id: 5, quantity: 1 }]);
  const o2 = await placeOrder(srv.api, token, [{ product_id: 2, quantity: 3 }, { product_id: 3, quantity: 1 }]);
  await waitFor(() => [o1, o2].every((o) => events.some((e) => e.event === 'order.failed' && e.data.order_id === String(o.id))),
    { timeoutMs: 15_000, what: () => `order.failed for both; got ${JSON.stringify(events.map((e) => [e.event, e.data]))}` });
  await waitFor(() => events.length >= 6, { timeoutMs: 5000, what: 'all events' });

  for (const o of [o1, o2]) {
    const mine = events.filter((e) => e.data.order_id === String(o.id));
    assert.deepEqual(mine.map((e) => e.event), ['order.created', 'order.processing', 'order.failed']);
    for (const e of mine) checkPayload(e.event, e.data, o);
    const failed = mine[2].data;
    assert.deepEqual(Object.keys(failed).sort(), PAYLOAD_KEYS['order.failed']);
    assert.equal(failed.reason, 'Simulated payment decline.');
    assert.equal((await waitTerminal(srv.api, token, o.id)).status, 'FAILED');
  }
  assertConsecutive(events.map((e) => e.data.seq), 1);

  // The stock comes back (the worker returns it in the same step that fails the order).
  let after;
  await waitFor(async () => {
    after = await stockOf(srv.api);
    return after[5] === before[5] && after[2] === before[2] && after[3] === before[3];
  }, { timeoutMs: 5000, what: () => `stock restored: before ${JSON.stringify(before)} after ${JSON.stringify(after)}` });
  assert.equal(after[5], 1, 'Limited Edition Headphones back to 1');
});

test('raw socket: event frames carry data as a JSON string', async (t) => {
  const srv = await startServer(t, { env: embeddedEnv({ ORDERS_PAYMENT_APPROVAL_RATE: '1.0' }) });
  const { token, user } = await login(srv.api, 'charlie@example.com');
  const s = await rawConnect(srv.wsPort);
  defer(t, () => s.close());
  assert.match(s.socketId, /^\d+\.\d+$/);
  assert.ok(Number.isInteger(s.activityTimeout) && s.activityTimeout > 0, `activity_timeout ${s.activityTimeout}`);
  const channel = `private-orders.${user.id}`;
  const auth = await http(srv.api, 'POST', '/broadcasting/auth', { token, form: { socket_id: s.socketId, channel_name: channel } });
  assert.equal(auth.status, 200, auth.text);
  assert.match(auth.body.auth, /^orders-key:[0-9a-f]{64}$/);
  s.send({ event: 'pusher:subscribe', data: { channel, auth: auth.body.auth } });
  const ok = await s.next(byEvent('pusher_internal:subscription_succeeded'), 5000, 'subscription_succeeded');
  assert.equal(ok.channel, channel);

  const o = await placeOrder(srv.api, token, [{ product_id: 2, quantity: 1 }]);
  const paid = await s.next(byEvent('order.paid'), 15_000, 'order.paid');
  assert.equal(paid.channel, channel);
  assert.equal(typeof paid.data, 'string', 'server→client data is a JSON string');
  checkPayload('order.paid', JSON.parse(paid.data), o);
});
