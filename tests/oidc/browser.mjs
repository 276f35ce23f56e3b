// Browser test of Latchkey's built-in OpenID Connect login page (issue 4, section 5).
//
//   npm ci --prefix tests/oidc            # playwright-core and openid-client
//   apt-get install -y chromium           # Debian's Chromium at /usr/bin/chromium
//   python3 -m pip install aiosmtpd       # the SMTP sink
//   LK_BIN=target/debug/latchkey node tests/oidc/browser.mjs
//
// LK_OUT names the screenshot folder; LK_PAGE_DIR=src/http/login tries the page files of the
// working tree against a binary built before them; LK_KEEP=1 keeps the temp folders.
//
// Why: the login page is the only part of the OIDC provider that runs in a browser: WebCrypto
// PIN hashing, localStorage device keys and the redirect back to the relying party can only be
// seen to work there. The test starts everything it needs on free loopback ports (an SMTP sink,
// `latchkey serve` with open sign-up and SMTP delivery to the sink, and a relying party built on
// the `openid-client` package), then drives headless Chromium through: the relying party's
// login link, the built-in page, sign-up, activation with the token read from the e-mail the
// sink received, and back to the relying party with a verified ID token (signature against the
// JWKS, iss equal to the discovery issuer, aud, nonce); then a second login in the same browser
// context that needs only the PIN (after one wrong PIN, whose error must show); forgot PIN with
// the e-mailed reset code and a login with the new PIN; a second browser context added as a
// device of the same user; all five with the same sub; and Back to a finished htOidTxid and an
// unknown one, which must show a clear message. After each success the page must have stored
// the device's new authKey. Each page is saved as a numbered PNG in $LK_OUT (default
// target/oidc-browser) to look at.
//
// It never leaves a child behind: the harness kills the server and the sink at exit, and
// playwright kills its browser at exit. Any failure prints one `FAIL: ...` line and exits 1.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as h from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const PIN = '4826';
const WRONG_PIN = '1111';
const NEW_PIN = '590317';
const OTHER_PIN = '7203';
const STEP_TIMEOUT_MS = 20_000;

// == prerequisites ===============================================================================

if (!fs.existsSync(CHROMIUM)) {
  h.fail(`${CHROMIUM} is missing: install Debian's Chromium with \`apt-get install -y chromium\``);
}
const client = await h.importDep('openid-client', 'tests/oidc', (n) => import(n));
const { chromium } = await h.importDep('playwright-core', 'tests/oidc', (n) => import(n));
const bin = h.binary();

const OUT = path.resolve(process.env.LK_OUT ?? path.join(ROOT, 'target', 'oidc-browser'));
fs.mkdirSync(OUT, { recursive: true });
for (const old of fs.readdirSync(OUT)) {
  if (/^\d{2}-[a-z0-9-]+\.png$/.test(old)) fs.rmSync(path.join(OUT, old));
}

// == SMTP sink ===================================================================================

const work = h.tempDir('lk-oidc-browser-');
const sink = await new h.SmtpSink().start();

// == Latchkey: app, client, config, serve ========================================================

const lk = new h.Latchkey({ bin, home: path.join(work, 'latchkey') });
fs.mkdirSync(lk.home, { recursive: true });
const app = lk.createApp('Browser Test App');
const rpPort = await h.freePort();
const rpBase = `http://127.0.0.1:${rpPort}`;
const redirectUri = `${rpBase}/cb`;
const rpClient = lk.createClient(app.applicationUuid, [redirectUri]);
if (!rpClient.clientId || !rpClient.clientSecret) {
  h.fail(`client create gave no clientId/clientSecret: ${JSON.stringify(Object.keys(rpClient))}`);
}
await lk.serve({
  config: `[app_defaults]
open_signup = true

[app_defaults.delivery]
channel = "smtp"
[app_defaults.delivery.smtp]
host = "127.0.0.1"
port = ${sink.port}
tls = "plain"
from = "Latchkey <no-reply@latchkey.test>"
`,
});
const expectedIssuer = `${lk.url}${h.BASE}/openid/${app.applicationUuid}`;

// == relying party (openid-client) ===============================================================

let oidc;
try {
  oidc = await client.discovery(new URL(expectedIssuer), rpClient.clientId, undefined,
    client.ClientSecretBasic(rpClient.clientSecret),
    { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks] });
} catch (err) {
  h.fail(`discovery of ${expectedIssuer}: ${err?.message ?? err}\n${lk.logTail(5)}`);
}
const discoveredIssuer = oidc.serverMetadata().issuer;
if (discoveredIssuer !== expectedIssuer) {
  h.fail(`discovery issuer ${discoveredIssuer} is not ${expectedIssuer}`);
}

/** Pending authorizations by state, and the outcome of every callback, in order. */
const pending = new Map();
const callbacks = [];

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function rpPage(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}`
    + '</title><style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:48rem}'
    + 'pre{background:#f3f4f6;padding:1rem;overflow:auto}a.button{display:inline-block;'
    + 'padding:.5rem 1rem;background:#065f46;color:#fff;border-radius:6px;text-decoration:none}'
    + '.error{color:#b91c1c}</style></head><body><p><small>Test relying party '
    + `(openid-client)</small></p><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

async function rpHandle(req, res) {
  const url = new URL(req.url, rpBase);
  const send = (status, html, headers = {}) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', ...headers });
    res.end(html);
  };

  if (url.pathname === '/') {
    send(200, rpPage('Relying party', '<p>Not signed in.</p>'
      + '<p><a class="button" id="rp-login" href="/login">Sign in with Latchkey</a></p>'));
    return;
  }

  if (url.pathname === '/login') {
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    pending.set(state, { codeVerifier, nonce });
    const target = client.buildAuthorizationUrl(oidc, {
      redirect_uri: redirectUri,
      scope: 'openid profile email',
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    send(302, '', { location: target.href });
    return;
  }

  if (url.pathname === '/cb') {
    const state = url.searchParams.get('state') ?? '';
    const request = pending.get(state);
    pending.delete(state);
    try {
      if (!request) throw new Error(`callback with an unknown state ${JSON.stringify(state)}`);
      const tokens = await client.authorizationCodeGrant(oidc, url, {
        pkceCodeVerifier: request.codeVerifier,
        expectedState: state,
        expectedNonce: request.nonce,
        idTokenExpected: true,
      });
      const claims = tokens.claims();
      callbacks.push({ ok: true, claims, nonce: request.nonce, tokens });
      send(200, rpPage('Signed in', `<p>sub: <code id="rp-sub">${escapeHtml(claims.sub)}</code>`
        + '</p><p>ID token claims (signature checked against the JWKS):</p>'
        + `<pre id="rp-claims">${escapeHtml(JSON.stringify(claims, null, 2))}</pre>`
        + '<p><a class="button" id="rp-login" href="/login">Sign in again</a></p>'));
    } catch (err) {
      const message = `${err?.name ?? 'Error'}: ${err?.message ?? err}`
        + (err?.error ? ` (${err.error}: ${err.error_description ?? ''})` : '')
        + (err?.cause?.message ? ` (${err.cause.message})` : '');
      callbacks.push({ ok: false, message });
      send(400, rpPage('Sign-in failed', `<p class="error" id="rp-error">${escapeHtml(message)}`
        + '</p>'));
    }
    return;
  }

  send(404, rpPage('Not found', ''));
}

const rp = http.createServer((req, res) => {
  rpHandle(req, res).catch((err) => {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err?.message ?? err));
  });
});
await new Promise((res, rej) => {
  rp.once('error', rej);
  rp.listen(rpPort, '127.0.0.1', res);
});

// == browser =====================================================================================

let browser;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
} catch (err) {
  h.fail(`Chromium did not start: ${err?.message?.split('\n')[0] ?? err}`);
}
const pageErrors = [];
const consoleTexts = [];

/**
 * With LK_PAGE_DIR set (e.g. src/http/login), the page's three files come from that folder
 * instead of the ones compiled into the binary, with the server's own headers (its CSP
 * included): to try page changes without rebuilding the server.
 */
const PAGE_DIR = process.env.LK_PAGE_DIR ? path.resolve(process.env.LK_PAGE_DIR) : undefined;
const PAGE_FILES = { '': 'index.html', '/login.js': 'login.js', '/login.css': 'login.css' };

async function servePageFrom(context) {
  const base = `${h.BASE}/openid/login`;
  const fileOf = (url) => (url.origin === lk.url && url.pathname.startsWith(base)
    ? PAGE_FILES[url.pathname.slice(base.length)] : undefined);
  await context.route((url) => fileOf(url) !== undefined, async (route) => {
    const response = await route.fetch();
    const file = fileOf(new URL(route.request().url()));
    await route.fulfill({ response, body: fs.readFileSync(path.join(PAGE_DIR, file), 'utf8') });
  });
}

/** A fresh browser context (its own localStorage: "another browser") with one page. */
async function newBrowserPage() {
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  if (PAGE_DIR) await servePageFrom(context);
  const fresh = await context.newPage();
  fresh.setDefaultTimeout(STEP_TIMEOUT_MS);
  fresh.on('pageerror', (err) => pageErrors.push(err?.message ?? String(err)));
  fresh.on('console', (msg) => consoleTexts.push(msg.text()));
  return fresh;
}
let page = await newBrowserPage();

let shots = 0;
async function shot(name) {
  shots += 1;
  const file = path.join(OUT, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/** Fails with a clear message, a last screenshot, what the page shows and the server's log. */
async function die(message) {
  let shown = '';
  try {
    await shot('failure');
    shown = await page.evaluate(() => {
      const visible = (id) => {
        const el = document.getElementById(id);
        return el && !el.closest('[hidden]') ? el.textContent.trim().replace(/\s+/g, ' ') : '';
      };
      return [['error', visible('error')], ['fatal', visible('fatal-message')],
        ['rp-error', visible('rp-error')]].filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`)
        .join('; ');
    });
  } catch {
    // the page may be gone
  }
  try {
    await browser.close();
  } catch {
    // already closed
  }
  rp.closeAllConnections();
  rp.close();
  h.fail(`${message}${shown ? `\n  page shows: ${shown}` : ''}\n  at ${page.url()}`
    + `\n  server log tail:\n${lk.logTail(8)}`);
}

async function step(name, fn) {
  try {
    return await fn();
  } catch (err) {
    return die(`${name}: ${err?.message?.split('\n')[0] ?? err}`);
  }
}

async function check(ok, message) {
  if (!ok) await die(message);
}

const loginPagePath = `${h.BASE}/openid/login`;
const onLoginPage = (url) => url.origin === lk.url && url.pathname === loginPagePath;
const screen = (name) => page.locator(`#screen-${name}`);

/** From the relying party's home: its login link, then the Latchkey page on `expected`. */
async function startLogin(what, expected) {
  await step(`${what}: relying party home`, () => page.goto(`${rpBase}/`));
  await step(`${what}: login link to the Latchkey page (expecting the ${expected} screen)`,
    async () => {
      await page.click('#rp-login');
      await page.waitForURL(onLoginPage);
      await screen(expected).waitFor();
    });
}

/** Fills the code-from-e-mail + PIN screen (mode `mode`) with the token mailed to `to`. */
async function confirmWithMail(what, mode, to, pin) {
  await step(`${what}: code screen`, () => page.locator(`#screen-confirm[data-mode="${mode}"]`)
    .waitFor());
  await shot(mode);
  const token = await sink.nextToken(to, STEP_TIMEOUT_MS / 1000);
  await step(`${what}: code and PIN`, async () => {
    await page.fill('#confirm-token', token);
    await page.fill('#confirm-pin', pin);
    await page.fill('#confirm-pin2', pin);
  });
  await shot(`${mode}-filled`);
  await step(`${what}: submit`, () => page.click('#confirm-submit'));
  return token;
}

/** Checks the next callback's ID token; returns its sub. */
async function checkCallback(what) {
  const index = checkedCallbacks;
  checkedCallbacks += 1;
  await step(`${what}: back at the relying party`, () => page.waitForURL((u) => u.origin === rpBase
    && u.pathname === '/cb'));
  await step(`${what}: relying party result`, () => page.locator('#rp-sub, #rp-error').first()
    .waitFor());
  const result = callbacks[index];
  await check(result, `${what}: the relying party saw no callback`);
  await check(result.ok, `${what}: code exchange failed: ${result.message}`);
  const { claims } = result;
  await check(typeof claims.sub === 'string' && claims.sub.length > 0,
    `${what}: ID token has no sub: ${JSON.stringify(claims)}`);
  await check(claims.iss === discoveredIssuer,
    `${what}: ID token iss ${claims.iss} is not the discovery issuer ${discoveredIssuer}`);
  await check(claims.nonce === result.nonce,
    `${what}: ID token nonce ${claims.nonce} is not the one sent (${result.nonce})`);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  await check(aud.includes(rpClient.clientId),
    `${what}: ID token aud ${JSON.stringify(claims.aud)} lacks ${rpClient.clientId}`);
  await check((await page.locator('#rp-sub').textContent()) === claims.sub,
    `${what}: the relying party page does not show sub ${claims.sub}`);
  return claims.sub;
}
let checkedCallbacks = 0;

/** This browser's device record for `username` (call on a page of Latchkey's origin). */
async function storedDevice(name) {
  const key = `latchkey:devices:${app.applicationUuid}`;
  const all = await page.evaluate((k) => JSON.parse(localStorage.getItem(k) ?? '{}'), key);
  const record = all[name.normalize('NFKC').toLowerCase()];
  await check(record && Object.keys(record).sort().join(',') === 'authKey,deviceUuid,salt,username'
    && record.username.toLowerCase() === name.toLowerCase()
    && Buffer.from(record.salt, 'base64').length === 128,
  `localStorage does not hold exactly {username, deviceUuid, authKey, salt (128 bytes)} for `
    + `${name}: ${JSON.stringify(Object.keys(record ?? {}))}`);
  return record;
}

const username = `Browser-User-${Date.now().toString(36)}`;
const email = `${username.toLowerCase()}@latchkey.test`;
const secrets = [];

// == 1. new browser: sign up, activation code from the e-mail, PIN ===============================

await step('relying party home', () => page.goto(`${rpBase}/`));
await shot('rp-home');
await step('sign-up: login link to the Latchkey page', async () => {
  await page.click('#rp-login');
  await page.waitForURL(onLoginPage);
  await screen('welcome').waitFor();
});
await check(await page.locator('#go-signup').isVisible(),
  'open sign-up is on, yet the page offers no sign-up');
await shot('login-page-new-browser');
await step('sign-up form', async () => {
  await page.click('#go-signup');
  await screen('signup').waitFor();
  await page.fill('#signup-username', username);
  await page.fill('#signup-email', email);
});
await shot('sign-up');
await step('sign-up submit', () => page.click('#signup-submit'));
secrets.push(await confirmWithMail('activation', 'activate-user', email, PIN));
const sub = await checkCallback('after sign-up');
await shot('rp-signed-in-after-sign-up');

// == 2. same browser: the page knows the device, only the PIN (one wrong first) ==================

await startLogin('PIN login', 'login');
const selected = await page.locator('#login-user').inputValue();
await check(selected === username, `the page offers ${JSON.stringify(selected)}, not ${username}`);
const firstRecord = await storedDevice(username);
await shot('login-page-known-device');
await step('wrong PIN', async () => {
  await page.fill('#login-pin', WRONG_PIN);
  await page.click('#login-submit');
  await page.locator('#error').waitFor();
});
const errorText = (await page.locator('#error-message').textContent()).trim();
await check(errorText.length > 0, 'a wrong PIN shows no error message');
await check(await screen('login').isVisible(), 'a wrong PIN left the login screen');
await shot('login-wrong-pin');
await step('PIN login', async () => {
  await page.fill('#login-pin', PIN);
  await page.click('#login-submit');
});
await check(await checkCallback('PIN login') === sub, 'the PIN login gave another sub');
await shot('rp-signed-in-with-pin');

// == 3. same browser: forgot PIN, reset code from the e-mail, new PIN ============================

await startLogin('forgot PIN', 'login');
const beforeReset = await storedDevice(username);
await check(beforeReset.authKey !== firstRecord.authKey
  && beforeReset.deviceUuid === firstRecord.deviceUuid,
'the PIN login did not store the new authKey of the device');
await step('forgot PIN screen', async () => {
  await page.click('#go-forgot');
  await screen('forgot').waitFor();
});
await shot('forgot-pin');
await step('forgot PIN submit', () => page.click('#forgot-submit'));
secrets.push(await confirmWithMail('PIN reset', 'reset-pin', email, NEW_PIN));
await check(await checkCallback('PIN reset') === sub, 'the PIN reset gave another sub');
await shot('rp-signed-in-after-reset');

// == 4. same browser: the new PIN works with the authKey the reset stored ========================

await startLogin('login with the new PIN', 'login');
const afterReset = await storedDevice(username);
await check(afterReset.authKey !== beforeReset.authKey && afterReset.salt === beforeReset.salt,
  'the PIN reset did not store the new authKey (or changed the salt)');
await step('login with the new PIN', async () => {
  await page.fill('#login-pin', NEW_PIN);
  await page.click('#login-submit');
});
await check(await checkCallback('login with the new PIN') === sub,
  'the login with the new PIN gave another sub');

// == 5. another browser: add it as a device of the same user =====================================

page = await newBrowserPage();
await startLogin('add device', 'welcome');
await step('add-device form', async () => {
  await page.click('#go-add-device');
  await screen('add-device').waitFor();
  await page.fill('#add-device-username', username.toLowerCase());
});
await shot('add-device');
await step('add-device submit', () => page.click('#add-device-submit'));
secrets.push(await confirmWithMail('device activation', 'activate-device', email, OTHER_PIN));
await check(await checkCallback('after adding a device') === sub,
  'the new device signed in as another sub');
await shot('rp-signed-in-on-new-device');

// == 6. a finished or unknown htOidTxid: a clear message, nothing else ==========================

await step('Back from the relying party to the finished sign-in', async () => {
  await page.goBack();
  await page.waitForURL(onLoginPage);
  await screen('fatal').waitFor();
});
await check((await page.locator('#fatal-message').textContent()).trim().length > 0,
  'the finished htOidTxid shows no message');
await shot('login-page-finished-transaction');
await step('unknown htOidTxid', async () => {
  await page.goto(`${lk.url}${loginPagePath}?htOidTxid=unknown-${Date.now()}`);
  await screen('fatal').waitFor();
});
await check((await page.locator('#fatal-message').textContent()).trim().length > 0,
  'an unknown htOidTxid shows no message');
await shot('login-page-unknown-transaction');
const secondDevice = await storedDevice(username);
await check(secondDevice.deviceUuid !== firstRecord.deviceUuid,
  'the added device has the first device\'s deviceUuid');

// == nothing leaked, nothing crashed =============================================================

await check(pageErrors.length === 0, `the page threw: ${pageErrors.join(' | ')}`);
secrets.push(firstRecord.authKey, firstRecord.salt, afterReset.authKey, secondDevice.authKey,
  secondDevice.salt);
await check(!consoleTexts.some((t) => secrets.some((s) => t.includes(s))),
  'the browser console shows a secret (e-mailed code, authKey or salt)');

const version = (await browser.version()).split('.')[0];
await browser.close();
rp.closeAllConnections();
rp.close();
await lk.stop();

console.log(`Chromium ${version} (playwright-core) through latchkey's login page to an `
  + 'openid-client relying party: sign-up + e-mailed activation code, PIN-only login in the same '
  + 'browser (wrong PIN shown), forgot/reset PIN, login with the new PIN, another browser added '
  + 'as a device, finished and unknown htOidTxid messages; 5 RS256 ID tokens (JWKS, '
  + 'iss = discovery issuer, aud, nonce), one sub; '
  + `${shots} screenshots in ${path.relative(process.cwd(), OUT) || '.'}: OK`);
process.exit(0); // the exit handler stops the SMTP sink
