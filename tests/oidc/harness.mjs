// Shared helpers for the Node tests of Latchkey's OpenID Connect provider (rp.mjs, browser.mjs)
// and the token-endpoint benchmark (benches/oidc/bench.mjs).
//
// Only Node's built-in modules are imported here, so that a missing `node_modules` can be told
// apart from a broken test: load npm packages with `importDep`, never with a static import.
//
// The server binary comes from $LK_BIN. Every child process started here is killed when the
// script ends, however it ends (normal exit, `fail`, an uncaught error, SIGINT or SIGTERM); where
// util-linux's `setpriv` exists the server is also told to die with its parent (PR_SET_PDEATHSIG),
// so that even a SIGKILLed test leaves no server behind. LK_KEEP=1 keeps the temp folders.

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BASE = '/authenticate/v1-2';

const children = new Set();
const tempDirs = new Set();
let cleanedUp = false;

/** Print one clear line and exit 1 (children are killed by the exit handler). */
export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

/** Kill every child still running and drop temp folders; safe to call more than once. */
export function cleanup() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  children.clear();
  if (cleanedUp) return;
  cleanedUp = true;
  for (const dir of tempDirs) {
    if (process.env.LK_KEEP) {
      console.error(`kept ${dir}`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`stopped by ${sig}`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}
process.on('uncaughtException', (err) => {
  console.error(err);
  fail(`crashed: ${err?.message ?? err}`);
});
process.on('unhandledRejection', (err) => {
  console.error(err);
  fail(`crashed: ${err?.message ?? err}`);
});

/**
 * Import an npm package, or fail with the command that installs it. `prefix` is the folder of
 * the package.json that lists it, relative to the repository root. A bare name resolves from the
 * module that calls `import()`, so a script outside this folder passes its own `load`
 * (`(name) => import(name)`).
 */
export async function importDep(name, prefix = 'tests/oidc', load = (n) => import(n)) {
  try {
    return await load(name);
  } catch (err) {
    if (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') {
      fail(`npm package '${name}' is not installed: run \`npm ci --prefix ${prefix}\` first`);
    }
    throw err;
  }
}

/** The server binary from $LK_BIN; fails clearly when it is unset or not there. */
export function binary() {
  const bin = process.env.LK_BIN;
  if (!bin) fail('set LK_BIN to the latchkey binary (e.g. LK_BIN=target/debug/latchkey)');
  if (!fs.existsSync(bin)) fail(`LK_BIN=${bin} does not exist`);
  return path.resolve(bin);
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
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

/** A fresh temp folder, removed at exit unless LK_KEEP is set. */
export function tempDir(prefix = 'lk-oidc-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Base64 (standard, padded) of SHA-512 over the salt bytes then the UTF-8 PIN. */
export function hashedPin(salt, pin) {
  return createHash('sha512').update(salt).update(pin, 'utf8').digest('base64');
}

/** Start a child process that is always killed when this script ends. */
export function startChild(cmd, args, { logFile, env, cwd } = {}) {
  const log = logFile ? fs.openSync(logFile, 'a') : 'ignore';
  const wrap = fs.existsSync('/usr/bin/setpriv');
  const child = spawn(wrap ? '/usr/bin/setpriv' : cmd,
    wrap ? ['--pdeathsig', 'KILL', '--', cmd, ...args] : args,
    { stdio: ['ignore', log, log], env: env ?? process.env, cwd });
  if (logFile) fs.closeSync(log);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

function tail(file, lines = 5) {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Poll `url` until it answers 200, the child exits, or `seconds` pass. */
export async function waitFor200(url, { child, seconds = 60, logFile } = {}) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      fail(`${url}: the process exited (${child.exitCode ?? child.signalCode}) before it was `
        + `ready:\n${logFile ? tail(logFile) : ''}`);
    }
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  fail(`${url} did not answer 200 within ${seconds} s:\n${logFile ? tail(logFile) : ''}`);
}

/** Write a config TOML into `dir` and return its path. */
export function writeConfig(dir, toml) {
  const file = path.join(dir, 'latchkey.toml');
  fs.writeFileSync(file, toml);
  return file;
}

/** The last line of `stdout` that parses as a JSON object, or undefined. */
function lastJsonLine(stdout) {
  const lines = stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{'));
  try {
    return lines.length ? JSON.parse(lines[lines.length - 1]) : undefined;
  } catch {
    return undefined;
  }
}

/** One Latchkey: a data folder, its CLI commands, and at most one `serve` child. */
export class Latchkey {
  constructor({ bin = binary(), home = tempDir() } = {}) {
    this.bin = bin;
    this.home = home;
    this.dataDir = path.join(home, 'data');
    this.logFile = path.join(home, 'server.log');
    this.child = undefined;
    this.url = undefined;
  }

  /** Run a CLI command that prints one JSON line; fails with its stderr otherwise. */
  cli(args) {
    const r = spawnSync(this.bin, [...args, '--data-dir', this.dataDir],
      { encoding: 'utf8', timeout: 60_000 });
    const out = lastJsonLine(r.stdout ?? '');
    if (r.status !== 0 || !out) {
      fail(`\`latchkey ${args.join(' ')}\` failed (rc=${r.status ?? r.signal}): `
        + `${(r.stderr ?? '').trim().slice(-300)}`);
    }
    return out;
  }

  /** `latchkey app create`: returns {applicationUuid, apiKey}. Server must be stopped. */
  createApp(name = 'oidc-node') {
    return this.cli(['app', 'create', '--name', name]);
  }

  /** `latchkey client create`: returns {clientId, clientSecret?}. Server must be stopped. */
  createClient(app, redirectUris, { isPublic = false } = {}) {
    const args = ['client', 'create', '--app', app];
    for (const uri of redirectUris) args.push('--redirect-uri', uri);
    if (isPublic) args.push('--public');
    return this.cli(args);
  }

  /** Start `latchkey serve` on a free port, wait for /health/ready; returns the base URL. */
  async serve({ config, env, seconds = 60 } = {}) {
    const port = await freePort();
    const args = ['serve', '--data-dir', this.dataDir, '--listen', `127.0.0.1:${port}`];
    if (config) args.push('--config', writeConfig(this.home, config));
    this.child = startChild(this.bin, args,
      { logFile: this.logFile, env: { ...process.env, ...env } });
    this.url = `http://127.0.0.1:${port}`;
    await waitFor200(`${this.url}/health/ready`,
      { child: this.child, seconds, logFile: this.logFile });
    return this.url;
  }

  /** SIGTERM the server and wait (SIGKILL after 20 s). */
  async stop() {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((res) => child.once('exit', res));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await gone;
    clearTimeout(timer);
  }

  logTail(lines = 20) {
    return tail(this.logFile, lines);
  }

  /**
   * One JSON API call under the base path. Returns {status, body (parsed or undefined), text,
   * headers}. Redirects are never followed.
   */
  async call(method, pathAndQuery, body, headers = {}) {
    const r = await fetch(this.url + BASE + pathAndQuery, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      redirect: 'manual',
    });
    const text = await r.text();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: r.status, body: parsed, text, headers: r.headers };
  }
}

function isSuccess(body) {
  return body?.responseStatus?.status?.toUpperCase() === 'SUCCESS';
}

/** A user's device as the SDKs hold it: salt, PIN, deviceUuid and the current authKey. */
export class Device {
  constructor(lk, app, apiKey, username, pin = '1234') {
    Object.assign(this, { lk, app, apiKey, username, pin });
    this.salt = randomBytes(128);
    this.deviceUuid = undefined;
    this.authKey = undefined;
    this.userUuid = undefined;
  }

  headers() {
    return { 'x-api-key': this.apiKey };
  }

  /**
   * POST /self-service/user; returns the activationToken (server without delivery). The default
   * e-mail is the username with anything but letters, digits, `.`, `_`, `-` made a dot.
   */
  async signUp(email = `${this.username.toLowerCase().replace(/[^a-z0-9._-]/g, '.')}@ex.test`) {
    const r = await this.lk.call('POST', '/self-service/user',
      { applicationUuid: this.app, username: this.username, email }, this.headers());
    if (r.status !== 200 || !isSuccess(r.body) || !r.body.activationToken) {
      fail(`sign-up of ${this.username}: ${r.status} ${r.text.slice(0, 300)}`);
    }
    return r.body.activationToken;
  }

  /** POST /authentication/activate/user; keeps deviceUuid, authKey, userUuid. */
  async activate(activationToken) {
    const r = await this.lk.call('POST', '/authentication/activate/user', {
      applicationUuid: this.app, username: this.username, activationToken,
      hashedPin: hashedPin(this.salt, this.pin), deviceName: 'node test device',
    }, this.headers());
    if (r.status !== 200 || !isSuccess(r.body)) {
      fail(`activation of ${this.username}: ${r.status} ${r.text.slice(0, 300)}`);
    }
    this.take(r.body);
    return r.body;
  }

  take(body) {
    this.deviceUuid = body.deviceUuid ?? this.deviceUuid;
    this.authKey = body.authKey ?? this.authKey;
    this.userUuid = body.userUuid ?? this.userUuid;
  }

  /**
   * POST /authentication/login in OIDC mode (`?nonce=..&htOidTxid=..`); returns the
   * authorization code (the `OAUTH_CODE` accessToken). Keeps the new authKey.
   */
  async loginForCode(htOidTxid, nonce) {
    const q = new URLSearchParams({ htOidTxid });
    if (nonce !== undefined) q.set('nonce', nonce);
    const r = await this.lk.call('POST', `/authentication/login?${q}`, {
      applicationUuid: this.app, username: this.username, deviceUuid: this.deviceUuid,
      authKey: this.authKey, hashedPin: hashedPin(this.salt, this.pin),
    }, this.headers());
    if (r.status !== 200 || !isSuccess(r.body)) {
      fail(`OIDC-mode login of ${this.username}: ${r.status} ${r.text.slice(0, 300)}`);
    }
    this.take({ authKey: r.body.authKey });
    if (r.body.accessToken?.type !== 'OAUTH_CODE' || !r.body.accessToken?.token) {
      fail(`OIDC-mode login gave no OAUTH_CODE: ${r.text.slice(0, 300)}`);
    }
    return r.body.accessToken.token;
  }
}

/**
 * GET an authorization URL without following the redirect and return the `htOidTxid` from the
 * Location of its 302 (to the login page).
 */
export async function authorizeForTxid(authorizationUrl) {
  const r = await fetch(authorizationUrl, { redirect: 'manual' });
  const text = await r.text();
  const location = r.headers.get('location') ?? '';
  let txid;
  try {
    txid = new URL(location, authorizationUrl).searchParams.get('htOidTxid');
  } catch {
    txid = undefined;
  }
  if (r.status < 300 || r.status > 303 || !txid) {
    fail(`authorize did not redirect to a login page with htOidTxid: ${r.status} `
      + `location=${JSON.stringify(location)} ${text.slice(0, 200)}`);
  }
  return { txid, location };
}

/**
 * A real SMTP server for delivery: `python3 tests/smtp_sink.py PORT DIR` (needs aiosmtpd).
 * `nextToken(to)` waits for a message to `to` not read before and
 * returns the first 6-digit number in its body (the activation or reset token).
 */
export class SmtpSink {
  constructor() {
    this.dir = tempDir('lk-smtp-');
    this.logFile = path.join(this.dir, 'sink.log');
    this.mailDir = path.join(this.dir, 'mail');
    fs.mkdirSync(this.mailDir);
    this.seen = new Set();
    this.port = undefined;
  }

  async start(seconds = 20) {
    this.port = await freePort();
    const script = fileURLToPath(new URL('../smtp_sink.py', import.meta.url));
    if (!fs.existsSync(script)) fail(`${script} not found`);
    const child = startChild('python3', [script, String(this.port), this.mailDir],
      { logFile: this.logFile });
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      if (tail(this.logFile, 50).split('\n').some((l) => l.trim() === 'ready')) return this;
      if (child.exitCode !== null) {
        fail(`SMTP sink exited (${child.exitCode}); is aiosmtpd installed `
          + `(python3 -m pip install aiosmtpd)?\n${tail(this.logFile)}`);
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    return fail(`SMTP sink did not print ready within ${seconds} s:\n${tail(this.logFile)}`);
  }

  /** The 6-digit token of the next unread message to `to` (any recipient if unset). */
  async nextToken(to, seconds = 20) {
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      for (const name of fs.readdirSync(this.mailDir).filter((n) => n.endsWith('.eml')).sort()) {
        if (this.seen.has(name)) continue;
        const raw = fs.readFileSync(path.join(this.mailDir, name), 'utf8');
        const rcpt = raw.split('\r\n', 1)[0].toLowerCase();
        if (to && !rcpt.includes(to.toLowerCase())) continue;
        this.seen.add(name);
        const token = sixDigits(raw);
        if (!token) fail(`no 6-digit token in the message ${name}:\n${raw.slice(0, 600)}`);
        return token;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    return fail(`no e-mail${to ? ` to ${to}` : ''} within ${seconds} s`);
  }
}

/** The first 6-digit number in a message's body, decoding base64 or quoted-printable parts. */
function sixDigits(raw) {
  const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
  const candidates = [body, body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g,
    (_, h) => String.fromCharCode(parseInt(h, 16)))];
  for (const block of body.split(/\r?\n\r?\n/)) {
    const b64 = block.replace(/\s+/g, '');
    if (/^[A-Za-z0-9+/]{16,}={0,2}$/.test(b64)) {
      candidates.push(Buffer.from(b64, 'base64').toString('utf8'));
    }
  }
  for (const text of candidates) {
    const m = text.match(/(?<![0-9])[0-9]{6}(?![0-9])/);
    if (m) return m[0];
  }
  return undefined;
}
