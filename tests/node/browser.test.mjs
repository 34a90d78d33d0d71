// The live page in Debian's Chromium (playwright-core) against the real embedded
// server: sign in, watch an order turn PAID/FAILED live, drop the socket, let an
// order complete meanwhile, reconnect and see the recovered state; cancel one.
// Screenshots of every step go to target/artifacts/browser/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, existsSync, readdirSync, rmSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ROOT, startServer, embeddedEnv, login, waitTerminal, stockOf, getOrder, waitFor,
  defer,
} from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'target/artifacts/browser');
const TERMINAL_STATUSES = ['PAID', 'FAILED'];

test('browser: the live page shows orders turn PAID/FAILED live and recovers after a dropped connection', async (t) => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's \`chromium\` package (apt-get install chromium) or set CHROMIUM_BIN`);
  mkdirSync(SHOTS, { recursive: true });
  for (const f of readdirSync(SHOTS)) if (f.endsWith('.png')) rmSync(path.join(SHOTS, f));
  // Short activity/pong timeouts: the page's client has to answer the server's pings
  // (and ping when idle) or it would be dropped during the test.
  const srv = await startServer(t, { env: embeddedEnv({
    ORDERS_GRACE_PERIOD_MS: '1500', ORDERS_WS_ACTIVITY_TIMEOUT_SECS: '1', ORDERS_WS_PONG_TIMEOUT_SECS: '1',
  }) });
  const { token } = await login(srv.api, 'alice@example.com');

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
  defer(t, () => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  let shot = 0;
  const snap = async (name) => {
    shot++;
    const file = path.join(SHOTS, `${String(shot).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`screenshot ${path.relative(ROOT, file)}`);
  };
  const byId = (id) => page.getByTestId(id);
  const rowStatus = (id) => byId(`order-row-${id}`).getAttribute('data-status');
  const waitRowStatus = (id, statuses, timeout = 15_000) => page.waitForFunction(
    ([sel, want]) => want.includes(document.querySelector(sel)?.dataset.status),
    [`[data-testid="order-row-${id}"]`, statuses], { timeout });
  const placeVia = async (productId, quantity) => {
    await byId('product').selectOption(String(productId));
    await byId('quantity').fill(String(quantity));
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/orders') && r.request().method() === 'POST'),
      byId('place').click(),
    ]);
    assert.equal(res.status(), 201, await res.text());
    const order = (await res.json()).data;
    await byId(`order-row-${order.id}`).waitFor();
    return order;
  };
  const checkStock = async () => {
    const want = await stockOf(srv.api);
    await page.waitForFunction((w) => Object.entries(w).every(
      ([id, s]) => document.querySelector(`[data-testid="stock-${id}"]`)?.textContent.trim() === String(s)), want,
    { timeout: 5000 }).catch(async (e) => {
      const got = await page.$$eval('[data-testid^="stock-"]', (els) => els.map((x) => `${x.dataset.testid}=${x.textContent}`));
      throw new Error(`stock on the page ${got.join(' ')} vs API ${JSON.stringify(want)}: ${e.message}`);
    });
  };

  // 1. The page, served by the API port with the key and the gateway port filled in.
  await page.goto(`${srv.api}/`);
  await page.evaluate(() => { window.__noReload = true; });
  await byId('stock-5').waitFor();
  await snap('loaded');

  // 2. Sign in as Alice.
  await byId('email').selectOption('alice@example.com');
  assert.equal(await byId('password').inputValue(), 'password');
  await byId('login').click();
  await page.waitForSelector('[data-testid="conn-state"][data-state="connected"]', { timeout: 10_000 });
  await snap('signed-in');
  // Idle for a while: pings go both ways and the socket stays up.
  await page.waitForTimeout(3000);
  assert.equal(await byId('conn-state').getAttribute('data-state'), 'connected');

  // 3. Place an order: its row turns PAID or FAILED without a reload.
  const o1 = await placeVia(2, 2);
  await snap('placed');
  await waitRowStatus(o1.id, TERMINAL_STATUSES);
  const s1 = (await getOrder(srv.api, token, o1.id)).status;
  assert.equal(await rowStatus(o1.id), s1);
  await checkStock();
  await snap(`live-${s1.toLowerCase()}`);

  // 4. Drop the connection, place an order over HTTP and let it complete.
  await byId('drop').click();
  await page.waitForSelector('[data-testid="conn-state"][data-state="dropped"]');
  await byId('reconnect').waitFor();
  await snap('dropped');
  const o2 = await placeVia(3, 3);
  const s2 = (await waitTerminal(srv.api, token, o2.id)).status;
  assert.ok(TERMINAL_STATUSES.includes(s2), s2);
  // The page could not have heard about it.
  await page.waitForTimeout(300);
  assert.equal(await rowStatus(o2.id), 'PENDING', 'no live update while dropped');
  await snap('completed-while-dropped');

  // 5. Reconnect: the row and the stock are right.
  await byId('reconnect').click();
  await page.waitForSelector('[data-testid="conn-state"][data-state="connected"]', { timeout: 10_000 });
  await waitRowStatus(o2.id, [s2], 10_000);
  assert.equal(await rowStatus(o1.id), s1);
  await checkStock();
  await snap(`recovered-${s2.toLowerCase()}`);

  // 6. Cancel a PENDING order inside the grace period.
  const o3 = await placeVia(4, 1);
  await byId(`cancel-${o3.id}`).click();
  await waitRowStatus(o3.id, ['CANCELLED'], 5000);
  assert.equal((await getOrder(srv.api, token, o3.id)).status, 'CANCELLED');
  await checkStock();
  await snap('cancelled');

  // The same page all along, and no script errors.
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  await waitFor(async () => (await page.getByTestId('last-seq').textContent()).includes('seq'), { what: 'last seq shown' });
  assert.deepEqual(problems, []);
  const log = await byId('event-log').textContent();
  assert.ok(!log.includes('closed ('), `the socket was never closed by the server: ${log}`);
});
