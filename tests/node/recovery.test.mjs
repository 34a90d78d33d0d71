// (d) Missed-event recovery: a pusher-js client that was disconnected while three of
// its orders completed recovers every missed event through GET /api/events?after=.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, embeddedEnv, login, placeOrder, pusherClient, subscribeRecording,
  waitFor, withTimeout, waitTerminal, eventsAfter, checkPayload, assertConsecutive,
  STATUS_OF, TERMINAL, getOrder, http,
  defer,
} from './lib.mjs';

test('recovery: disconnected while 3 orders complete, the client recovers every missed event via /api/events', async (t) => {
  const srv = await startServer(t, { env: embeddedEnv({ ORDERS_PAYMENT_APPROVAL_RATE: '0.5' }) });
  const { token, user } = await login(srv.api, 'alice@example.com');
  const channelName = `private-orders.${user.id}`;
  const pusher = pusherClient({ wsPort: srv.wsPort, api: srv.api, token });
  defer(t, () => pusher.disconnect());
  const live = [];
  const { channel, ready } = subscribeRecording(pusher, channelName, live);
  await ready;

  // One order seen live to its end.
  const first = await placeOrder(srv.api, token, [{ product_id: 2, quantity: 1 }]);
  await waitFor(() => live.some((e) => e.data.order_id === String(first.id) && TERMINAL.has(STATUS_OF[e.event])),
    { timeoutMs: 15_000, what: () => `the first order's terminal event; got ${JSON.stringify(live)}` });
  const lastSeen = Math.max(...live.map((e) => e.data.seq));
  const liveBefore = live.length;

  // Drop the connection; three orders run to completion meanwhile.
  pusher.disconnect();
  await waitFor(() => pusher.connection.state === 'disconnected', { what: 'pusher-js disconnected' });
  const missed = [];
  for (const [pid, q] of [[3, 1], [4, 2], [2, 5]]) {
    missed.push(await placeOrder(srv.api, token, [{ product_id: pid, quantity: q }]));
  }
  const finals = {};
  for (const o of missed) finals[o.id] = (await waitTerminal(srv.api, token, o.id)).status;
  assert.equal(live.length, liveBefore, 'no events while disconnected');

  // Reconnect: pusher-js re-subscribes by itself; then catch up from the last seen seq.
  const resubscribed = withTimeout(new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve)),
    10_000, 're-subscription');
  pusher.connect();
  await resubscribed;
  const { events: recovered, metas } = await eventsAfter(srv.api, token, lastSeen);
  assert.ok(recovered.length >= 3 * 3 - 3, `recovered ${recovered.length} events`);
  assert.equal(recovered[0].seq, lastSeen + 1, 'recovery starts right after the last seen seq');
  for (const m of metas) assert.equal(m.truncated, false, 'nothing pruned');
  assert.equal(metas[metas.length - 1].has_more, false);
  for (const e of recovered) {
    assert.equal(e.channel, channelName);
    checkPayload(e.event, e.data);
    assert.equal(e.data.seq, e.seq, 'seq inside data equals the envelope seq');
  }

  // The union of live and recovered events: consecutive seqs 1..N with no gap, and
  // every order's last event is its terminal status.
  const bySeq = new Map();
  for (const e of live) bySeq.set(e.data.seq, { event: e.event, data: e.data });
  for (const e of recovered) {
    const prev = bySeq.get(e.seq);
    if (prev) assert.deepEqual({ event: e.event, data: e.data }, prev, `seq ${e.seq} seen twice, differently`);
    bySeq.set(e.seq, { event: e.event, data: e.data });
  }
  const seqs = assertConsecutive([...bySeq.keys()], 1);
  assert.equal(seqs[seqs.length - 1], metas[metas.length - 1].last_seq, 'ends at meta.last_seq');
  const lastOf = {};
  for (const s of seqs) lastOf[bySeq.get(s).data.order_id] = bySeq.get(s).event;
  for (const o of [first, ...missed]) {
    const status = (await getOrder(srv.api, token, o.id)).status;
    assert.ok(TERMINAL.has(status), `order ${o.id} terminal (${status})`);
    assert.equal(STATUS_OF[lastOf[String(o.id)]], status, `order ${o.id}: last event ${lastOf[String(o.id)]} vs status ${status}`);
    if (finals[o.id]) assert.equal(finals[o.id], status);
    const evs = seqs.map((s) => bySeq.get(s)).filter((e) => e.data.order_id === String(o.id)).map((e) => e.event);
    assert.equal(evs[0], 'order.created', `order ${o.id} starts with order.created: ${evs}`);
  }

  // Live delivery resumes where recovery left off.
  const next = await placeOrder(srv.api, token, [{ product_id: 2, quantity: 1 }]);
  const created = await waitFor(() => live.find((e) => e.event === 'order.created' && e.data.order_id === String(next.id)),
    { timeoutMs: 10_000, what: 'order.created live after the reconnect' });
  assert.equal(created.data.seq, seqs[seqs.length - 1] + 1, 'the next live event follows the recovered ones');
  await waitTerminal(srv.api, token, next.id);

  // after=last_seq → nothing more (once the last order's events are all in).
  const tail = await http(srv.api, 'GET', `/api/events?after=${created.data.seq + 2}`, { token });
  assert.equal(tail.status, 200);
  assert.deepEqual(tail.body.data, []);
  assert.equal(tail.body.meta.has_more, false);
});
