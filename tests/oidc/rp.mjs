// An independent relying party for Latchkey's OpenID Connect provider: `openid-client` (v6, by
// the author of the certified `oidc-provider`) drives the whole code flow against a real server.
//
// Run from the repository root:
//   npm ci --prefix tests/oidc
//   LK_BIN=target/debug/latchkey node tests/oidc/rp.mjs
//
// It makes an application, a confidential client (client_secret_basic) and a public client
// (token endpoint auth `none`), both with the redirect URI https://rp.example/cb, starts
// `latchkey serve` without a delivery channel (so sign-up answers the activation token), signs a
// user up and activates a device through the back-end API. Then, for each client, openid-client
// does: discovery of the issuer; an authorization URL with PKCE S256, a nonce and a state holding
// `+ / = ~` and spaces; the authorize request (not followed) gives the login page's htOidTxid;
// the back end logs in in OIDC mode (`POST /authentication/login?nonce=..&htOidTxid=..`) and gets
// the code; openid-client takes the callback URL `redirect_uri?code=..&state=..` and does the code
// grant (checking state, PKCE, the ID token's RS256 signature against the JWKS, iss, aud, nonce),
// userinfo, a refresh grant (the refresh token must rotate), revocation, and introspection, which
// must then say `active: false`. One summary line on success; exit 1 with the failed step.

import fs from 'node:fs';

import { BASE, Device, Latchkey, authorizeForTxid, fail, importDep } from './harness.mjs';

const client = await importDep('openid-client');
const CB = 'https://rp.example/cb';
const version = JSON.parse(fs.readFileSync(
  new URL('./node_modules/openid-client/package.json', import.meta.url), 'utf8')).version;

/** One line about an error from openid-client (its OAuth error, status and body) or anything. */
function describe(err) {
  const parts = [err?.name, err?.code, err?.message];
  if (err?.status) parts.push(`status ${err.status}`);
  if (err?.error) parts.push(`error=${err.error}`);
  if (err?.error_description) parts.push(`error_description=${err.error_description}`);
  if (err?.cause !== undefined) {
    let cause;
    try {
      cause = err.cause instanceof Error ? err.cause.message : JSON.stringify(err.cause);
    } catch {
      cause = String(err.cause);
    }
    parts.push(`cause: ${cause?.slice(0, 400)}`);
  }
  return parts.filter(Boolean).join(' | ');
}

/** Run one step; any throw fails the test naming the step. */
async function step(name, fn) {
  try {
    return await fn();
  } catch (err) {
    return fail(`${name}: ${describe(err)}`);
  }
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

function jwtHeader(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'));
}

/** openid-client's ResponseBodyError for an OAuth error, or fail. */
async function expectOAuthError(name, wanted, fn) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  check(err, `${name}: succeeded, expected ${wanted}`);
  check(err.error === wanted, `${name}: expected ${wanted}, got ${describe(err)}`);
}

// == Server, application, clients, one activated device

const lk = new Latchkey();
const { applicationUuid: app, apiKey } = lk.createApp('rp-node');
const confidential = lk.createClient(app, [CB]);
const pub = lk.createClient(app, [CB], { isPublic: true });
check(confidential.clientId && confidential.clientSecret,
  `client create gave no clientId/clientSecret: ${JSON.stringify(confidential)}`);
check(pub.clientId && pub.clientSecret === undefined,
  `client create --public gave ${JSON.stringify(pub)} (want a clientId and no clientSecret)`);

await lk.serve();
const device = new Device(lk, app, apiKey, 'Olive Node');
await device.activate(await device.signUp());

const issuer = new URL(`${lk.url}${BASE}/openid/${app}`);
const insecure = { execute: [client.allowInsecureRequests] };

// == The code flow, once per client

async function codeFlow(label, config, clientId) {
  const meta = config.serverMetadata();
  check(meta.issuer === issuer.href, `${label}: discovery issuer ${meta.issuer}, want ${issuer}`);
  check(meta.supportsPKCE('S256'), `${label}: discovery does not offer PKCE S256`);

  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = `st +/=~ ${client.randomState()} end`;
  const nonce = `n +/=~ ${client.randomNonce()}`;
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: CB, scope: 'openid', state, nonce,
    code_challenge: challenge, code_challenge_method: 'S256',
  });

  const { txid, location } = await authorizeForTxid(authUrl.href);
  const page = new URL(location, authUrl).searchParams;
  const show = JSON.stringify;
  check(page.get('state') === state,
    `${label}: login page got state ${show(page.get('state'))}, sent ${show(state)}`);
  check(page.get('nonce') === nonce,
    `${label}: login page got nonce ${show(page.get('nonce'))}, sent ${show(nonce)}`);
  const code = await device.loginForCode(txid, page.get('nonce'));

  const callback = new URL(CB);
  callback.searchParams.set('code', code);
  callback.searchParams.set('state', state);
  if (meta.authorization_response_iss_parameter_supported) {
    callback.searchParams.set('iss', meta.issuer);
  }
  const tokens = await step(`${label}: code grant`, () => client.authorizationCodeGrant(
    config, callback,
    {
      pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce,
      idTokenExpected: true,
    },
  ));
  const claims = tokens.claims();
  const alg = jwtHeader(tokens.id_token).alg;
  check(alg === 'RS256', `${label}: ID token signed ${alg}, want RS256`);
  check(claims.iss === issuer.href, `${label}: ID token iss ${claims.iss}`);
  check(claims.nonce === nonce, `${label}: ID token nonce ${JSON.stringify(claims.nonce)}`);
  check([claims.aud].flat().includes(clientId), `${label}: ID token aud ${claims.aud}`);
  check(claims.sub === device.userUuid,
    `${label}: ID token sub ${claims.sub}, the user is ${device.userUuid}`);
  check(tokens.token_type?.toLowerCase() === 'bearer', `${label}: token_type ${tokens.token_type}`);
  check(tokens.refresh_token, `${label}: no refresh_token from the code grant`);

  const info = await step(`${label}: userinfo`,
    () => client.fetchUserInfo(config, tokens.access_token, claims.sub));
  check(info.sub === claims.sub, `${label}: userinfo sub ${info.sub}`);

  const refreshed = await step(`${label}: refresh grant`,
    () => client.refreshTokenGrant(config, tokens.refresh_token));
  check(refreshed.access_token, `${label}: refresh gave no access_token`);
  check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token,
    `${label}: the refresh token did not rotate`);
  if (refreshed.id_token) {
    check(refreshed.claims().sub === claims.sub, `${label}: refreshed ID token has another sub`);
  }
  return { tokens, refreshed };
}

// Confidential client: client_secret_basic, and introspection/revocation with its credentials.
const confConfig = await step('discovery (confidential client)', () => client.discovery(
  issuer, confidential.clientId, confidential.clientSecret,
  client.ClientSecretBasic(confidential.clientSecret), insecure));
const conf = await codeFlow('confidential', confConfig, confidential.clientId);

const live = await step('introspection of a live access token',
  () => client.tokenIntrospection(confConfig, conf.refreshed.access_token));
check(live.active === true, `introspection of a live access token: ${JSON.stringify(live)}`);
check(live.sub === undefined || live.sub === device.userUuid, `introspection sub ${live.sub}`);
await step('revocation of the access token',
  () => client.tokenRevocation(confConfig, conf.refreshed.access_token));
const dead = await step('introspection after revocation',
  () => client.tokenIntrospection(confConfig, conf.refreshed.access_token));
check(dead.active === false, `introspection after revocation: ${JSON.stringify(dead)}`);

// A used refresh token fails, and (the documented policy) revokes the family it belonged to.
await expectOAuthError('reuse of a rotated refresh token', 'invalid_grant',
  () => client.refreshTokenGrant(confConfig, conf.tokens.refresh_token));
await expectOAuthError('refresh with the rotated-to refresh token after that reuse',
  'invalid_grant', () => client.refreshTokenGrant(confConfig, conf.refreshed.refresh_token));

// Public client: token endpoint auth `none`, PKCE; revocation of its refresh token.
const pubConfig = await step('discovery (public client)', () => client.discovery(
  issuer, pub.clientId, { token_endpoint_auth_method: 'none' }, client.None(), insecure));
const pubFlow = await codeFlow('public', pubConfig, pub.clientId);
await step('revocation of the public client\'s refresh token',
  () => client.tokenRevocation(pubConfig, pubFlow.refreshed.refresh_token));
await expectOAuthError('refresh with a revoked refresh token', 'invalid_grant',
  () => client.refreshTokenGrant(pubConfig, pubFlow.refreshed.refresh_token));

await lk.stop();
console.log(`openid-client ${version} against latchkey: discovery, PKCE S256 code flow `
  + '(confidential client_secret_basic and public none), RS256 ID token (JWKS, iss, aud, nonce), '
  + 'state and nonce with "+/=~ " round trip, userinfo, refresh rotation, '
  + 'reuse revokes the family, '
  + 'revocation then introspection inactive: OK');
