// (e) MySQL + Redis mode: the server's own gateway (--ws-listen) and a separate
// `gateway` process on the same Redis + prefix both deliver the engine's events.
// Needs DATABASE_URL and REDIS_URL (tests/run exports them); fails without them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  mysqlRedisEnv, startServer, startGateway, login, placeOrder, pusherClient,
  subscribeRecording, waitFor, checkPayload, waitTerminal, run,
} from './lib.mjs';

function dropDatabase(dbUrl, name) {
  const u = new URL(dbUrl);
  run('mariadb', [
    `-u${decodeURIComponent(u.username)}`, `-p${decodeURIComponent(u.password)}`,
    `-h${u.hostname}`, `-P${u.port || '3306'}`, '-e', `DROP DATABASE IF EXISTS \`${name}\``,
  ]);
}

function deleteRedisPrefix(redisUrl, prefix) {
  const keys = run('redis-cli', ['-u', redisUrl, '--scan', '--pattern', `${prefix}*`]).split('\n').filter(Boolean);
  for (let i = 0; i < keys.length; i += 500) run('redis-cli', ['-u', redisUrl, 'del', ...keys.slice(i, i + 500)]);
  return keys.length;
}

test('MySQL + Redis: the server\'s gateway and a separate gateway process both deliver order.paid', async (t) => {
  const { DATABASE_URL, REDIS_URL } = mysqlRedisEnv();
  const tag = `node${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const dbName = `orders_${tag}`;
  const prefix = `${tag}:`;
  const dbUrl = new URL(DATABASE_URL);
  dbUrl.pathname = `/${dbName}`;

  const stops = [];
  try {
    await body(t, { DATABASE_URL, REDIS_URL, dbUrl, prefix, stops });
  } finally {
    // Stop the clients and processes first, then drop what they created.
    for (const stop of stops.reverse()) {
      try { await stop(); } catch (e) { console.error(`cleanup: ${e}`); }
    }
    try { dropDatabase(DATABASE_URL, dbName); } catch (e) { console.error(`dropping ${dbName}: ${e.stderr || e}`); }
    try { deleteRedisPrefix(REDIS_URL, prefix); } catch (e) { console.error(`deleting ${prefix}*: ${e.stderr || e}`); }
  }
});

async function body(t, { REDIS_URL, dbUrl, prefix, stops }) {
  const env = { ...process.env, DATABASE_URL: dbUrl.toString(), REDIS_URL, ORDERS_REDIS_PREFIX: prefix,
    ORDERS_PAYMENT_APPROVAL_RATE: '1.0', ORDERS_RATE_LIMIT_PER_MINUTE: '0' };
  const srv = await startServer(t, { env, args: ['--seed'], readyTimeoutMs: 60_000 });
  stops.push(srv.stop);
  const gw = await startGateway(t, { env: { ...process.env, REDIS_URL, ORDERS_REDIS_PREFIX: prefix } });
  stops.push(gw.stop);

  const { token, user } = await login(srv.api, 'alice@example.com');
  const channelName = `private-orders.${user.id}`;
  const viaServer = pusherClient({ wsPort: srv.wsPort, api: srv.api, token });
  const viaGateway = pusherClient({ wsPort: gw.wsPort, api: srv.api, token });
  stops.push(async () => { viaServer.disconnect(); viaGateway.disconnect(); });
  const a = subscribeRecording(viaServer, channelName);
  const b = subscribeRecording(viaGateway, channelName);
  await Promise.all([a.ready, b.ready]);

  const order = await placeOrder(srv.api, token, [{ product_id: 2, quantity: 1 }, { product_id: 3, quantity: 1 }]);
  const paidIn = (events) => events.find((e) => e.event === 'order.paid' && e.data.order_id === String(order.id));
  await waitFor(() => paidIn(a.events) && paidIn(b.events), {
    timeoutMs: 20_000,
    what: () => `order.paid on both gateways; server's: ${JSON.stringify(a.events)}; gateway's: ${JSON.stringify(b.events)}`,
  });
  const pa = paidIn(a.events).data;
  const pb = paidIn(b.events).data;
  checkPayload('order.paid', pa, order);
  assert.deepEqual(pb, pa, 'both gateways deliver the same payload');
  // Every event, once, on both.
  await waitFor(() => a.events.length >= 3 && b.events.length >= 3, { timeoutMs: 5000, what: 'all events on both' });
  assert.deepEqual(b.events.map((e) => [e.event, e.data]), a.events.map((e) => [e.event, e.data]));
  assert.deepEqual(a.events.map((e) => e.event), ['order.created', 'order.processing', 'order.paid']);
  assert.equal((await waitTerminal(srv.api, token, order.id)).status, 'PAID');
}
