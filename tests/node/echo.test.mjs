// (b) laravel-echo with the `reverb` broadcaster: `.listen('.order.paid')` and
// `.listen('.order.cancelled')` on a cancel inside the grace period.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import {
  Pusher, APP_KEY, startServer, embeddedEnv, login, placeOrder, waitFor, withTimeout,
  checkPayload, assertConsecutive, stockOf, expectStatus, getOrder, waitTerminal,
  defer,
} from './lib.mjs';

function echoClient(srv, token) {
  return new Echo({
    broadcaster: 'reverb',
    Pusher,
    key: APP_KEY,
    wsHost: '127.0.0.1',
    wsPort: srv.wsPort,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    authEndpoint: `${srv.api}/broadcasting/auth`,
    bearerToken: token,
    withoutInterceptors: true,
  });
}

test('laravel-echo: .listen(".order.paid") and .listen(".order.cancelled") on a cancel inside the grace period', async (t) => {
  const srv = await startServer(t, {
    env: embeddedEnv({ ORDERS_PAYMENT_APPROVAL_RATE: '1.0', ORDERS_GRACE_PERIOD_MS: '1500' }),
  });
  const { token, user } = await login(srv.api, 'alice@example.com');
  const echo = echoClient(srv, token);
  defer(t, () => echo.disconnect());

  const got = [];
  const record = (event) => (data) => got.push({ event, data });
  const channel = echo.private(`orders.${user.id}`);
  await withTimeout(new Promise((resolve, reject) => {
    channel.subscribed(resolve).error((e) => reject(new Error(`Echo .error(): ${JSON.stringify(e)}`)));
  }), 10_000, 'Echo subscription');
  for (const name of ['order.created', 'order.processing', 'order.paid', 'order.failed', 'order.cancelled']) {
    channel.listen(`.${name}`, record(name));
  }

  const before = await stockOf(srv.api);
  const toPay = await placeOrder(srv.api, token, [{ product_id: 2, quantity: 1 }]);
  const toCancel = await placeOrder(srv.api, token, [{ product_id: 4, quantity: 2 }]);
  // Inside the 1.5 s grace period the worker leaves the order alone: the cancel wins.
  const cancelled = await expectStatus(srv.api, 'POST', `/api/orders/${toCancel.id}/cancel`, 200, { token });
  assert.equal(cancelled.data.status, 'CANCELLED');

  await waitFor(() => got.some((e) => e.event === 'order.cancelled'), {
    timeoutMs: 5000, what: () => `.order.cancelled; got ${JSON.stringify(got)}`,
  });
  await waitFor(() => got.some((e) => e.event === 'order.paid'), {
    timeoutMs: 15_000, what: () => `.order.paid; got ${JSON.stringify(got)}`,
  });

  const c = got.find((e) => e.event === 'order.cancelled');
  checkPayload('order.cancelled', c.data, toCancel);
  const p = got.find((e) => e.event === 'order.paid');
  checkPayload('order.paid', p.data, toPay);

  const evOf = (o) => got.filter((e) => e.data.order_id === String(o.id)).map((e) => e.event);
  assert.deepEqual(evOf(toPay), ['order.created', 'order.processing', 'order.paid']);
  assert.deepEqual(evOf(toCancel), ['order.created', 'order.cancelled']);
  for (const e of got) checkPayload(e.event, e.data);
  assertConsecutive(got.map((e) => e.data.seq), 1);

  // The cancelled order stays cancelled (the worker does not pick it up after the
  // grace period) and its stock is back.
  await new Promise((r) => setTimeout(r, 1800));
  assert.equal((await getOrder(srv.api, token, toCancel.id)).status, 'CANCELLED');
  assert.equal((await waitTerminal(srv.api, token, toPay.id)).status, 'PAID');
  const after = await stockOf(srv.api);
  assert.equal(after[4], before[4], 'keyboard stock restored by the cancel');
  assert.equal(after[2], before[2] - 1, 'mouse stock taken by the paid order');
  // Cancelling again is idempotent (200, no second event, no second restock);
  // cancelling the paid order is 409 INVALID_TRANSITION.
  const again = await expectStatus(srv.api, 'POST', `/api/orders/${toCancel.id}/cancel`, 200, { token });
  assert.equal(again.data.status, 'CANCELLED');
  const paidCancel = await expectStatus(srv.api, 'POST', `/api/orders/${toPay.id}/cancel`, 409, { token });
  assert.equal(paidCancel.error_code, 'INVALID_TRANSITION');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.filter((e) => e.event === 'order.cancelled').length, 1, 'one cancelled event');
  assert.equal(got.length, 5, `no further events: ${JSON.stringify(got.map((e) => e.event))}`);
  assert.deepEqual(await stockOf(srv.api), after, 'no second restock');
});
