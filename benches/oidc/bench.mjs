// Token-endpoint benchmark: Latchkey beside `oidc-provider` (the certified Node.js provider), in
// one run on one machine, at 64 concurrent connections.
//
// Run from the repository root (a release build of Latchkey, for figures worth quoting):
//   npm ci --prefix benches/oidc && LK_BIN=target/release/latchkey node benches/oidc/bench.mjs
//
// Settings (environment, all optional):
//   BENCH_CONNECTIONS=64       concurrent requests, and connections in the HTTP pool
//   BENCH_CODES=4000           authorization codes exchanged (measured), per provider
//   BENCH_BATCH=1000           codes minted per batch; a batch is minted, then exchanged at once,
//                              because codes live 60 s (Latchkey and oidc-provider alike)
//   BENCH_WARMUP=256           codes exchanged before measuring (not counted), per provider
//   BENCH_REFRESH_SECONDS=10   length of the refresh-grant phase, per provider
//   BENCH_ROUNDS=1             rounds of every provider, the order reversed on even rounds
//   BENCH_ONLY=latchkey | oidc-provider   run one provider only (LK_BIN is then not needed for
//                              oidc-provider alone)
//
// Per provider, each phase in turn:
//   1. mint codes (not measured): Latchkey by GET {issuer}/auth (302 to the login page, read its
//      htOidTxid) then `POST /authentication/login?nonce=..&htOidTxid=..` with the API key, one
//      user and device per worker (an authKey works once, so a device logs in serially);
//      oidc-provider by GET /auth, its interaction (login and consent finished programmatically
//      with `interactionFinished`), and the resume, cookies kept per worker as a browser would.
//   2. code exchange (measured): `grant_type=authorization_code` with the PKCE verifier and
//      client_secret_basic, 64 at a time, for BENCH_CODES codes.
//   3. refresh grants (measured): 64 workers, each with its own refresh-token chain (tokens
//      rotate on every use: the answer's refresh_token is the next one used), for
//      BENCH_REFRESH_SECONDS.
// A request counts as an error unless it answers 200 with the tokens expected. Latency is from
// sending the request to reading the whole answer, measured in this process. "server CPU
// ms/req" is the provider process's user + system CPU time during the phase (from /proc) over
// its requests: less sensitive than req/s to other work on the machine. "client CPU ms/req" is
// this load generator's own, on the same cores (the bench is client-bound when the two add up
// to about 2 cores' worth at the measured rate).
//
// Both providers sign ID tokens RS256 with a 2048-bit key (the report prints the modulus size
// read from each JWKS) and issue a refresh token with every code. oidc-provider runs in a child
// process (its own event loop, like Latchkey's own process), configured with: its MemoryAdapter
// (the in-memory store it ships; the store's size cap raised from 1000 to 1,000,000 entries so
// that nothing is evicted during the run), one confidential client (client_secret_basic), PKCE
// required, a findAccount returning one fixed account, refresh tokens on every code and rotated on
// every use (as Latchkey does), explicit lifetimes (access and ID tokens 15 min, codes 60 s,
// refresh tokens 14 days); its access tokens are opaque (its default format). Latchkey runs with
// a fresh data folder and its rate limits turned off (`burst = 0`), so that they do not shape the
// figures. The load generator shares the machine's cores with the provider under test: compare
// the two providers with each other, on the same run, rather than with figures from another
// machine.

import { generateKeyPairSync, randomBytes, createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  Device, Latchkey, binary, fail, freePort, importDep, startChild, tempDir, waitFor200,
} from '../../tests/oidc/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CB = 'https://rp.example/cb';
const load = (name) => importDep(name, 'benches/oidc', (n) => import(n));
const envInt = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) fail(`${name}=${v} is not a number`);
  return n;
};

// ===================================================================================== child

/** The oidc-provider child: `node bench.mjs --serve-oidc-provider PORT CLIENT_SECRET`. */
async function serveOidcProvider(port, clientSecret) {
  const { default: Provider } = await load('oidc-provider');
  const { default: MemoryAdapter } = await load('oidc-provider/lib/adapters/memory_adapter.js');
  const { default: LRU } = await load('oidc-provider/lib/helpers/lru.js');
  const store = new LRU({ maxSize: 1_000_000 });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }), kid: 'bench-rs256', alg: 'RS256', use: 'sig',
  };
  const accountId = 'bench-user';

  const provider = new Provider(`http://127.0.0.1:${port}`, {
    adapter: (model) => new MemoryAdapter(model, store),
    clients: [{
      client_id: 'bench-client',
      client_secret: clientSecret,
      redirect_uris: [CB],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: { keys: [jwk] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    issueRefreshToken: async () => true,
    rotateRefreshToken: true,
    ttl: {
      AccessToken: 900,
      AuthorizationCode: 60,
      IdToken: 900,
      RefreshToken: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
    },
    scopes: ['openid', 'offline_access'],
  });
  const callback = provider.callback();

  // The login and consent interaction, finished without a page: the account logs in and grants
  // the requested scopes.
  async function interaction(req, res) {
    const details = await provider.interactionDetails(req, res);
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res,
      { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
  }

  http.createServer((req, res) => {
    if (!req.url.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    interaction(req, res).catch((err) => {
      console.error(err);
      res.statusCode = 500;
      res.end(String(err?.message ?? err));
    });
  }).listen(port, '127.0.0.1', () => console.error(`oidc-provider listening on ${port}`));
}

// ===================================================================================== helpers

function pkcePair() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

function basicAuth(id, secret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Bits of the RS256 key's modulus in a JWKS. */
function modulusBits(jwks) {
  const key = jwks.keys?.find((k) => k.kty === 'RSA');
  return key ? Buffer.from(key.n, 'base64url').length * 8 : undefined;
}

/** Run `worker(i)` for i in 0..n-1, `concurrency` at a time. */
async function pool(n, concurrency, worker) {
  let next = 0;
  const run = async () => {
    while (next < n) {
      const i = next;
      next += 1;
      await worker(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, run));
}

/**
 * CPU seconds (user + system) a process has used, from /proc (Linux; clock ticks of 1/100 s,
 * USER_HZ); undefined elsewhere.
 */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** Latencies (ms), error count, measured seconds and server CPU seconds of one phase. */
class Stats {
  constructor() {
    this.latencies = [];
    this.errors = 0;
    this.seconds = 0;
    this.cpu = 0;
    this.clientCpu = 0;
    this.firstError = undefined;
  }

  /** Time `fn` and the server's CPU use during it, adding both to this phase. */
  async measure(pid, fn) {
    const cpu0 = cpuSeconds(pid);
    const client0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    this.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    this.cpu += (cpuSeconds(pid) ?? NaN) - (cpu0 ?? NaN);
    const client = process.cpuUsage(client0);
    this.clientCpu += (client.user + client.system) / 1e6;
  }

  error(what) {
    this.errors += 1;
    this.firstError ??= what;
  }

  row(provider, phase) {
    const sorted = Float64Array.from(this.latencies).sort();
    const ok = this.latencies.length - this.errors;
    return {
      provider, phase, requests: this.latencies.length, errors: this.errors,
      seconds: this.seconds, rps: ok / this.seconds,
      p50: percentile(sorted, 50), p99: percentile(sorted, 99), firstError: this.firstError,
      cpuPerRequest: (this.cpu * 1000) / this.latencies.length,
      clientCpuPerRequest: (this.clientCpu * 1000) / this.latencies.length,
    };
  }
}

/** A tiny HTTP client over one undici Pool: `request(method, path, headers, body)`. */
function httpClient(Pool, origin, connections) {
  const p = new Pool(origin, { connections, pipelining: 1, keepAliveTimeout: 60_000 });
  return {
    async request(method, pathAndQuery, headers = {}, body = undefined) {
      const r = await p.request({ method, path: pathAndQuery, headers, body });
      const text = await r.body.text();
      return { status: r.statusCode, headers: r.headers, text };
    },
    close: () => p.close(),
  };
}

/** A token-endpoint call; `check` says whether the JSON answer is a success. */
async function tokenCall(client, tokenPath, auth, form, stats, check) {
  const t0 = process.hrtime.bigint();
  let r;
  try {
    r = await client.request('POST', tokenPath, {
      authorization: auth, 'content-type': 'application/x-www-form-urlencoded',
    }, new URLSearchParams(form).toString());
  } catch (err) {
    stats.latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    stats.error(`transport: ${err.message}`);
    return undefined;
  }
  stats.latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
  let json;
  try {
    json = JSON.parse(r.text);
  } catch {
    json = undefined;
  }
  if (r.status !== 200 || !json || !check(json)) {
    stats.error(`${r.status} ${r.text.slice(0, 200)}`);
    return undefined;
  }
  return json;
}

// ===================================================================================== providers

/**
 * Everything a provider gives the phases: `tokenPath`, `auth` (Basic header), `mint(worker)`
 * -> {code, verifier}, `jwksBits`, `stop()`.
 */
async function startLatchkey(Pool, connections) {
  const lk = new Latchkey({ bin: binary() });
  const { applicationUuid: app, apiKey } = lk.createApp('bench');
  const { clientId, clientSecret } = lk.createClient(app, [CB]);
  await lk.serve({
    config: [
      '[rate_limits]',
      'per_app = { per_second = 0, burst = 0 }',
      'per_address = { per_second = 0, burst = 0 }',
      'relying_party_per_address = { per_second = 0, burst = 0 }',
      'login_per_device = { per_second = 0, burst = 0 }',
      '',
    ].join('\n'),
  });
  const issuer = `${lk.url}/authenticate/v1-2/openid/${app}`;
  const client = httpClient(Pool, lk.url, connections);
  const disc = JSON.parse((await client.request('GET',
    new URL(`${issuer}/.well-known/openid-configuration`).pathname)).text);
  const jwks = JSON.parse((await client.request('GET', new URL(disc.jwks_uri).pathname)).text);
  const authPath = new URL(disc.authorization_endpoint).pathname;

  const devices = [];
  await pool(connections, 8, async (i) => {
    const d = new Device(lk, app, apiKey, `bench-user-${i}`);
    await d.activate(await d.signUp());
    devices[i] = d;
  });

  async function mint(worker) {
    const d = devices[worker];
    const { verifier, challenge } = pkcePair();
    const q = new URLSearchParams({
      response_type: 'code', client_id: clientId, redirect_uri: CB, scope: 'openid',
      state: `s${worker}`, nonce: `n${worker}`, code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    const r = await client.request('GET', `${authPath}?${q}`);
    const txid = r.headers.location
      && new URL(r.headers.location, lk.url).searchParams.get('htOidTxid');
    if (!txid) throw new Error(`authorize: ${r.status} location=${r.headers.location}`);
    return { code: await d.loginForCode(txid, `n${worker}`), verifier };
  }

  return {
    name: 'latchkey', client, mint, jwksBits: modulusBits(jwks), pid: lk.child.pid,
    tokenPath: new URL(disc.token_endpoint).pathname,
    auth: basicAuth(clientId, clientSecret),
    stop: async () => {
      await client.close();
      await lk.stop();
    },
  };
}

async function startOidcProvider(Pool, connections) {
  const port = await freePort();
  const secret = randomBytes(24).toString('base64url');
  const home = tempDir('oidc-provider-bench-');
  const logFile = path.join(home, 'oidc-provider.log');
  const child = startChild(process.execPath,
    [fileURLToPath(import.meta.url), '--serve-oidc-provider', String(port), secret], { logFile });
  const origin = `http://127.0.0.1:${port}`;
  await waitFor200(`${origin}/.well-known/openid-configuration`, { child, logFile, seconds: 30 });
  const client = httpClient(Pool, origin, connections);
  const disc = JSON.parse((await client.request('GET', '/.well-known/openid-configuration')).text);
  const jwks = JSON.parse((await client.request('GET', new URL(disc.jwks_uri).pathname)).text);
  const authPath = new URL(disc.authorization_endpoint).pathname;
  const jars = Array.from({ length: connections }, () => new Map());

  // One browser per worker: follow redirects by hand, keeping its cookies, until the redirect
  // to the client's redirect_uri carries the code.
  async function mint(worker) {
    const jar = jars[worker];
    const { verifier, challenge } = pkcePair();
    const state = `s${worker}`;
    const q = new URLSearchParams({
      response_type: 'code', client_id: 'bench-client', redirect_uri: CB, scope: 'openid',
      state, nonce: `n${worker}`, code_challenge: challenge, code_challenge_method: 'S256',
    });
    let next = `${authPath}?${q}`;
    for (let hop = 0; hop < 6; hop += 1) {
      const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      const r = await client.request('GET', next, cookie ? { cookie } : {});
      for (const c of [r.headers['set-cookie'] ?? []].flat()) {
        const [pair, ...attrs] = c.split(';');
        const [name, value] = [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)];
        const expired = attrs.some((a) => /expires=.*1970/i.test(a) || /max-age=0\b/i.test(a));
        if (expired || value === '') jar.delete(name.trim());
        else jar.set(name.trim(), value);
      }
      const location = r.headers.location;
      if (!location) {
        throw new Error(`${next}: ${r.status} without a redirect: ${r.text.slice(0, 200)}`);
      }
      if (location.startsWith(CB)) {
        const u = new URL(location);
        if (u.searchParams.get('state') !== state || !u.searchParams.get('code')) {
          throw new Error(`bad callback ${location}`);
        }
        return { code: u.searchParams.get('code'), verifier };
      }
      const u = new URL(location, origin);
      next = u.pathname + u.search;
    }
    throw new Error('too many redirects');
  }

  return {
    name: 'oidc-provider', client, mint, jwksBits: modulusBits(jwks), pid: child.pid,
    tokenPath: new URL(disc.token_endpoint).pathname,
    auth: basicAuth('bench-client', secret),
    stop: async () => {
      await client.close();
      child.kill('SIGTERM');
    },
  };
}

// ===================================================================================== phases

/** Mint `n` codes with `connections` workers (one device or browser per worker). */
async function mintBatch(p, n, connections) {
  const codes = [];
  let failures = 0;
  let firstFailure;
  let left = n;
  await Promise.all(Array.from({ length: connections }, async (_, w) => {
    while (left > 0) {
      left -= 1;
      try {
        codes.push(await p.mint(w));
      } catch (err) {
        failures += 1;
        firstFailure ??= err.message;
      }
    }
  }));
  if (failures > n / 10 || codes.length === 0) {
    fail(`${p.name}: minting codes failed ${failures} of ${n} times: ${firstFailure}`);
  }
  return codes;
}

const isTokens = (j) => typeof j.access_token === 'string' && typeof j.refresh_token === 'string'
  && typeof j.id_token === 'string';

/** Exchange `codes` at `connections` concurrency; refresh tokens got are pushed to `refresh`. */
async function exchange(p, codes, connections, stats, refresh) {
  await stats.measure(p.pid, () => pool(codes.length, connections, async (i) => {
    const { code, verifier } = codes[i];
    const json = await tokenCall(p.client, p.tokenPath, p.auth, {
      grant_type: 'authorization_code', code, redirect_uri: CB, code_verifier: verifier,
    }, stats, isTokens);
    if (json) refresh.push(json.refresh_token);
  }));
}

/** Refresh grants for `seconds`, each worker on its own chain (spares replace broken chains). */
async function refreshPhase(p, spares, connections, seconds, stats) {
  const end = Date.now() + seconds * 1000;
  await stats.measure(p.pid, () => Promise.all(Array.from({ length: connections }, async () => {
    let token = spares.pop();
    while (token && Date.now() < end) {
      const json = await tokenCall(p.client, p.tokenPath, p.auth,
        { grant_type: 'refresh_token', refresh_token: token }, stats,
        (j) => typeof j.access_token === 'string' && typeof j.refresh_token === 'string');
      token = json ? json.refresh_token : spares.pop();
    }
  })));
}

async function benchProvider(p, settings) {
  const { connections, codes, batch, warmup, refreshSeconds } = settings;
  const refresh = [];

  const warm = new Stats();
  if (warmup > 0) {
    await exchange(p, await mintBatch(p, warmup, connections), connections, warm, []);
  }

  const ex = new Stats();
  let mintSeconds = 0;
  for (let done = 0; done < codes; done += batch) {
    const t0 = Date.now();
    const minted = await mintBatch(p, Math.min(batch, codes - done), connections);
    mintSeconds += (Date.now() - t0) / 1000;
    if (Date.now() - t0 > 45_000) {
      console.error(`${p.name}: minting a batch took ${(Date.now() - t0) / 1000} s; `
        + 'codes live 60 s: lower BENCH_BATCH');
    }
    await exchange(p, minted, connections, ex, refresh);
  }

  const rf = new Stats();
  if (refresh.length < connections) {
    fail(`${p.name}: only ${refresh.length} refresh tokens for ${connections} workers: `
      + `${ex.firstError ?? ''}`);
  }
  await refreshPhase(p, refresh, connections, refreshSeconds, rf);
  return {
    rows: [ex.row(p.name, 'code exchange'), rf.row(p.name, 'refresh grant')],
    mintSeconds,
    warmErrors: warm.errors,
  };
}

// ===================================================================================== main

function version(pkg) {
  try {
    return JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules', pkg, 'package.json'),
      'utf8')).version;
  } catch {
    return '?';
  }
}

function printTable(rows) {
  const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  const head = ['provider', 'phase', 'requests', 'errors', 'seconds', 'req/s', 'p50 ms', 'p99 ms',
    'server CPU ms/req', 'client CPU ms/req'];
  const body = rows.map((r) => [r.provider, r.phase, String(r.requests), String(r.errors),
    f(r.seconds, 2), f(r.rps, 0), f(r.p50, 2), f(r.p99, 2), f(r.cpuPerRequest, 3),
    f(r.clientCpuPerRequest, 3)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
    .join('  ');
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const b of body) console.log(line(b));
  for (const r of rows.filter((x) => x.firstError)) {
    console.log(`first error, ${r.provider} ${r.phase}: ${r.firstError}`);
  }
}

async function main() {
  const { Pool } = await load('undici');
  const settings = {
    connections: envInt('BENCH_CONNECTIONS', 64),
    codes: envInt('BENCH_CODES', 4000),
    batch: envInt('BENCH_BATCH', 1000),
    warmup: envInt('BENCH_WARMUP', 256),
    refreshSeconds: envInt('BENCH_REFRESH_SECONDS', 10),
    rounds: Math.max(1, envInt('BENCH_ROUNDS', 1)),
  };
  if (settings.batch < 1 || settings.connections < 1) fail('BENCH_BATCH and BENCH_CONNECTIONS > 0');
  const only = process.env.BENCH_ONLY;
  const which = [
    ['latchkey', startLatchkey],
    ['oidc-provider', startOidcProvider],
  ].filter(([name]) => !only || only === name);
  if (!which.length) fail(`BENCH_ONLY=${only}: want latchkey or oidc-provider`);

  const loadBefore = os.loadavg()[0];
  const rows = [];
  const notes = [];
  for (let round = 1; round <= settings.rounds; round += 1) {
    // Odd rounds run the providers in one order, even rounds in the other, so that a drift in
    // the machine's load does not favour one of them.
    const order = round % 2 ? which : [...which].reverse();
    for (const [name, start] of order) {
      const tag = settings.rounds > 1 ? `${name} (round ${round})` : name;
      console.error(`${tag}: starting`);
      const p = await start(Pool, settings.connections);
      console.error(`${tag}: warm-up, ${settings.codes} code exchanges, `
        + `${settings.refreshSeconds} s of refresh grants`);
      const r = await benchProvider(p, settings);
      await p.stop();
      rows.push(...r.rows.map((row) => ({ ...row, provider: tag })));
      notes.push(`${tag}: RS256 key ${p.jwksBits} bits, ${settings.codes} codes minted in `
        + `${r.mintSeconds.toFixed(1)} s (not measured), warm-up errors ${r.warmErrors}`);
    }
  }

  const lkBin = which.some(([n]) => n === 'latchkey') ? process.env.LK_BIN : undefined;
  console.log(`OIDC token-endpoint benchmark, ${new Date().toISOString()}`);
  console.log(`settings: ${settings.connections} connections (undici ${version('undici')} Pool, `
    + `pipelining 1), ${settings.codes} codes in batches of ${settings.batch}, `
    + `warm-up ${settings.warmup} codes, refresh phase ${settings.refreshSeconds} s, `
    + `${settings.rounds} round(s), `
    + 'client_secret_basic, PKCE S256, scope openid');
  console.log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), `
    + `load average before ${loadBefore.toFixed(2)}, after ${os.loadavg()[0].toFixed(2)}; `
    + `node ${process.version}`);
  if (lkBin) console.log(`latchkey: ${lkBin}`);
  if (which.some(([n]) => n === 'oidc-provider')) {
    console.log(`oidc-provider ${version('oidc-provider')}: child process, MemoryAdapter `
      + '(store cap 1,000,000), refresh tokens always issued and rotated');
  }
  for (const n of notes) console.log(n);
  printTable(rows);
}

// Dispatch last, so that every const above is initialized before main runs.
if (process.argv[2] === '--serve-oidc-provider') {
  await serveOidcProvider(Number(process.argv[3]), process.argv[4]);
} else {
  await main();
}
