// (c) What the gateway refuses: another user's channel, a forged signature, a wrong
// app key, a malformed frame, and a client that never answers pings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import {
  Pusher, APP_KEY, startServer, embeddedEnv, login, http, pusherClient, waitConnected,
  withTimeout, rawConnect, rawSocket, wsUrl, byEvent, sleep,
  defer,
} from './lib.mjs';

test('subscribing to another user\'s channel fails: 403 from /broadcasting/auth, pusher-js subscription_error, Echo .error()', async (t) => {
  const srv = await startServer(t);
  const alice = await login(srv.api, 'alice@example.com');
  const bob = await login(srv.api, 'bob@example.com');

  // The auth endpoint itself.
  const own = await http(srv.api, 'POST', '/broadcasting/auth',
    { token: alice.token, form: { socket_id: '123.456', channel_name: `private-orders.${alice.user.id}` } });
  assert.equal(own.status, 200, own.text);
  assert.match(own.body.auth, /^orders-key:[0-9a-f]{64}$/);
  const other = await http(srv.api, 'POST', '/broadcasting/auth',
    { token: alice.token, form: { socket_id: '123.456', channel_name: `private-orders.${bob.user.id}` } });
  assert.equal(other.status, 403, other.text);
  const anon = await http(srv.api, 'POST', '/broadcasting/auth',
    { form: { socket_id: '123.456', channel_name: `private-orders.${alice.user.id}` } });
  assert.ok([401, 403].includes(anon.status), `no bearer: ${anon.status} ${anon.text}`);

  // pusher-js.
  const pusher = pusherClient({ wsPort: srv.wsPort, api: srv.api, token: alice.token });
  defer(t, () => pusher.disconnect());
  const ch = pusher.subscribe(`private-orders.${bob.user.id}`);
  const err = await withTimeout(new Promise((resolve, reject) => {
    ch.bind('pusher:subscription_error', resolve);
    ch.bind('pusher:subscription_succeeded', () => reject(new Error('subscribed to bob\'s channel as alice')));
  }), 10_000, 'pusher-js subscription_error');
  assert.equal(err.status, 403, `subscription_error: ${JSON.stringify(err)}`);
  // The connection itself is fine: alice's own channel still works on it.
  const mine = pusher.subscribe(`private-orders.${alice.user.id}`);
  await withTimeout(new Promise((resolve) => mine.bind('pusher:subscription_succeeded', resolve)), 10_000, 'own channel');
  assert.equal(pusher.connection.state, 'connected');

  // laravel-echo.
  const echo = new Echo({
    broadcaster: 'reverb', Pusher, key: APP_KEY, wsHost: '127.0.0.1', wsPort: srv.wsPort,
    forceTLS: false, enabledTransports: ['ws'], disableStats: true,
    authEndpoint: `${srv.api}/broadcasting/auth`, bearerToken: alice.token, withoutInterceptors: true,
  });
  defer(t, () => echo.disconnect());
  const echoErr = await withTimeout(new Promise((resolve, reject) => {
    echo.private(`orders.${bob.user.id}`)
      .subscribed(() => reject(new Error('Echo subscribed to bob\'s channel as alice')))
      .error(resolve);
  }), 10_000, 'Echo .error()');
  assert.equal(echoErr.status, 403, `Echo error: ${JSON.stringify(echoErr)}`);
});

test('raw ws: a forged signature gets pusher:error 4009 + subscription_error and the socket stays open; malformed frames get 4200', async (t) => {
  const srv = await startServer(t);
  const alice = await login(srv.api, 'alice@example.com');
  const channel = `private-orders.${alice.user.id}`;
  const s = await rawConnect(srv.wsPort);
  defer(t, () => s.close());

  s.send({ event: 'pusher:subscribe', data: { channel, auth: `${APP_KEY}:${'0'.repeat(64)}` } });
  const err = await s.next(byEvent('pusher:error'), 5000, 'pusher:error');
  const errData = typeof err.data === 'string' ? JSON.parse(err.data) : err.data;
  assert.equal(errData.code, 4009, `pusher:error ${err.raw}`);
  const subErr = await s.next(byEvent('pusher:subscription_error'), 5000, 'pusher:subscription_error');
  assert.equal(subErr.channel, channel, subErr.raw);

  // A signature for another socket id is forged too.
  const stolen = await http(srv.api, 'POST', '/broadcasting/auth',
    { token: alice.token, form: { socket_id: '1.1', channel_name: channel } });
  assert.equal(stolen.status, 200, stolen.text);
  s.send({ event: 'pusher:subscribe', data: { channel, auth: stolen.body.auth } });
  const err2 = await s.next(byEvent('pusher:error'), 5000, 'second pusher:error');
  assert.equal((typeof err2.data === 'string' ? JSON.parse(err2.data) : err2.data).code, 4009, err2.raw);
  await s.next(byEvent('pusher:subscription_error'), 5000, 'second subscription_error');

  // Malformed frames: an error frame with code 4200 (the socket may then close — 42xx
  // tells a client to reconnect at once — so test the rest on a second socket).
  assert.equal(s.ws.readyState, 1, 'socket still open after the forged signatures');
  s.send({ event: 'pusher:ping', data: {} });
  await s.next(byEvent('pusher:pong'), 5000, 'pusher:pong after 4009');
  const okAuth = await http(srv.api, 'POST', '/broadcasting/auth',
    { token: alice.token, form: { socket_id: s.socketId, channel_name: channel } });
  s.send({ event: 'pusher:subscribe', data: { channel, auth: okAuth.body.auth } });
  const ok = await s.next(byEvent('pusher_internal:subscription_succeeded'), 5000, 'subscription_succeeded');
  assert.equal(ok.channel, channel);

  const m = await rawConnect(srv.wsPort);
  defer(t, () => m.close());
  m.send('this is not json');
  const bad = await m.next(byEvent('pusher:error'), 5000, 'pusher:error for a malformed frame');
  const badData = typeof bad.data === 'string' ? JSON.parse(bad.data) : bad.data;
  assert.equal(badData.code, 4200, bad.raw);
});

test('raw ws: a wrong app key is refused with pusher:error 4001 and a close', async (t) => {
  const srv = await startServer(t);
  const s = rawSocket(wsUrl(srv.wsPort, 'not-the-key'));
  defer(t, () => s.ws.terminate());
  const err = await s.next(byEvent('pusher:error'), 5000, 'pusher:error');
  const d = typeof err.data === 'string' ? JSON.parse(err.data) : err.data;
  assert.equal(d.code, 4001, err.raw);
  assert.ok(!s.frames.some((f) => f.event === 'pusher:connection_established'), 'no connection_established');
  const closed = await withTimeout(s.closed, 5000, 'close after 4001');
  assert.ok(closed.code === 4001 || closed.code === 1000 || closed.code === 1008 || closed.code === 1005,
    `close code ${closed.code}`);
});

test('a raw client that never answers pings is dropped; a pusher-js client on the same server stays connected', async (t) => {
  const srv = await startServer(t, {
    env: embeddedEnv({ ORDERS_WS_ACTIVITY_TIMEOUT_SECS: '1', ORDERS_WS_PONG_TIMEOUT_SECS: '1' }),
  });
  const alice = await login(srv.api, 'alice@example.com');
  const pusher = pusherClient({ wsPort: srv.wsPort, api: srv.api, token: alice.token });
  defer(t, () => pusher.disconnect());
  const states = [];
  pusher.connection.bind('state_change', (s) => states.push(s.current));
  await waitConnected(pusher);
  const sub = pusher.subscribe(`private-orders.${alice.user.id}`);
  await withTimeout(new Promise((resolve) => sub.bind('pusher:subscription_succeeded', resolve)), 10_000, 'subscribe');
  const socketId = pusher.connection.socket_id;

  // autoPong: false — not even WebSocket-level pings are answered.
  const silent = await rawConnect(srv.wsPort, { wsOpts: { autoPong: false } });
  defer(t, () => silent.ws.terminate());
  assert.equal(silent.activityTimeout, 1, 'activity_timeout from ORDERS_WS_ACTIVITY_TIMEOUT_SECS');
  const start = Date.now();
  const closed = await withTimeout(silent.closed, 6000, 'the silent client to be dropped');
  const took = Date.now() - start;
  assert.ok(silent.frames.some((f) => f.event === 'pusher:ping'), `the server pinged first: ${silent.frames.map((f) => f.raw).join(' | ')}`);
  assert.ok(took >= 1000, `dropped after ${took} ms, not before the timeouts`);

  // The pusher-js client answered and is still on the same connection.
  await sleep(1500);
  assert.equal(pusher.connection.state, 'connected', `pusher-js states: ${states.join(' → ')}`);
  assert.equal(pusher.connection.socket_id, socketId, `pusher-js reconnected in between: ${states.join(' → ')}`);
  const seen = states.filter((s) => s !== 'connecting');
  assert.deepEqual(seen, ['connected'], `no reconnect: ${states.join(' → ')}`);
  t.diagnostic(`silent client closed after ${took} ms with code ${closed.code}`);
});
