//! The OpenID Connect provider: authorize, the OIDC mode of the login routes, the token
//! endpoint, userinfo, introspection and revocation, discovery and JWKS.
//!
//! Each grant is an actor (`grant`): the authorize request (its id is the `htOidTxid` the
//! login page carries), the authorization code, and the refresh-token family a code exchange
//! starts. Tokens that leave the server are `<id>.<secret>`: the id finds the actor, the
//! secret is checked against a keyed hash, so a stolen data directory holds no usable token.
//!
//! Refresh policy: every refresh returns a new refresh token and the old one stops working.
//! Presenting an old one again (a copy in an attacker's hands, or a client that lost a race)
//! revokes the whole family: its refresh token and every access token it issued. A family
//! remembers its last 64 refresh tokens; one older than that is refused as unknown without
//! revoking the family. With `refresh_token_reuse_grace_secs` set, the token the last rotation
//! replaced may rotate once more within that window (a client retrying a lost answer). A
//! family lives `refresh_token_ttl_secs` from its code exchange; rotation does not extend it.
//! A family also ends with the device session its user signed in with.

mod clients;
mod grant;
mod pkce;
mod redirect;
mod tokens;

use std::sync::Arc;

use latchkey_storage::records::{
    AuthRequestRecord, ClientRecord, CodeRecord, DeviceSession, FamilyRecord, GrantRecord,
};
use serde_json::{Value, json};
use uuid::Uuid;

pub use clients::ClientAuth;
pub(crate) use clients::Clients;
pub(crate) use grant::GrantActor;
pub use tokens::Proof;

use self::{
    clients::ClientAuthError,
    grant::{GrantFailure, GrantMsg, Redemption, ids},
    tokens::{ClientAccessClaims, IdTokenFacts},
};
use crate::{
    Application, AuditEvent, AuditKind, Channel, Engine, Error, Result, Tokens,
    crypto::{Purpose, random_secret},
    keyring::kid_of,
    user::UserMsg,
};

/// A provider access token that checked out: its application, claims and live family.
type LiveAccessToken = (Arc<Application>, ClientAccessClaims, FamilyRecord);

/// Which of a family's refresh tokens a lookup accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The one a refresh would rotate now.
    Current,
    /// Any the family remembers, rotated out or not.
    Ever,
}

/// Why a grant stopped working though nobody revoked it.
const SIGN_IN_ENDED: &str =
    "the sign-in this grant came from has ended (logout, a lock, a new PIN or removal)";

/// Longest `state`, `nonce` or `login_hint` accepted: enough for any real client, small
/// enough that a request cannot bloat a stored grant.
pub const MAX_PARAM_BYTES: usize = 1024;

/// The authorize endpoint's parameters, as given.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams {
    /// From the issuer path, when the request came that way.
    pub app: Option<Uuid>,
    /// `response_type`.
    pub response_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `response_mode`.
    pub response_mode: Option<String>,
    /// `request` or `request_uri` was sent (not supported).
    pub request_object: bool,
}

/// Why authorize refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown to the user, redirected nowhere: the client or its redirect URI could not be
    /// trusted, or a parameter was too large to echo.
    Page(String),
    /// Sent back to the client's checked redirect URI (RFC 6749 4.1.2.1).
    Redirect(String),
}

/// An OAuth error answer (RFC 6749 5.2, RFC 6750 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: u16,
    /// `error`.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

impl OAuthError {
    /// An error with this status, code and description.
    pub fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    /// `invalid_request` (400).
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    fn invalid_token() -> Self {
        Self::new(
            401,
            "invalid_token",
            "The access token is invalid, expired or revoked",
        )
    }

    fn from_engine(err: &Error) -> Self {
        match err {
            Error::Unavailable => Self::new(503, "temporarily_unavailable", err.to_string()),
            _ => Self::new(500, "server_error", "Internal error"),
        }
    }
}

/// A token-endpoint request, as given. Its `Debug` leaves out the code, verifier and refresh
/// token.
#[derive(Clone, Default)]
pub struct TokenParams {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `code`.
    pub code: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `code_verifier`.
    pub code_verifier: Option<String>,
    /// `refresh_token`.
    pub refresh_token: Option<String>,
    /// `scope` (a refresh may narrow the grant, never widen it).
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenParams")
            .field("grant_type", &self.grant_type)
            .field("redirect_uri", &self.redirect_uri)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A successful token response. Its `Debug` shows no token.
#[derive(Clone)]
pub struct TokenResponse {
    /// `access_token`.
    pub access_token: String,
    /// `expires_in`.
    pub expires_in: u64,
    /// `id_token`.
    pub id_token: String,
    /// `refresh_token`.
    pub refresh_token: String,
    /// `scope`.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An OIDC-mode login in progress: it holds its authorize request until it finishes, and
/// lets go of it if dropped unfinished (a client that hung up mid-login).
#[derive(Debug)]
pub struct OidcLogin {
    txid: String,
    request: AuthRequestRecord,
    lease: u64,
    grants: crate::directory::Directory<GrantActor>,
    held: bool,
}

impl OidcLogin {
    fn release(&mut self) {
        if std::mem::take(&mut self.held)
            && let Some(actor) = self.grants.child_ref(&ids::request(&self.txid))
        {
            let _ = actor.cast(GrantMsg::Release(self.lease));
        }
    }
}

impl Drop for OidcLogin {
    fn drop(&mut self) {
        self.release();
    }
}

/// A login finished in OIDC mode.
#[derive(Debug, Clone)]
pub struct CodeIssued {
    /// The login's other results (new authKey, device); `access_token` holds the code.
    pub tokens: Tokens,
    /// `redirect_uri?code=…&state=…&iss=…`, where the page sends the browser.
    pub redirect_to: String,
}

/// What the login page shows for a sign-in request.
#[derive(Debug, Clone)]
pub struct LoginContext {
    /// The application.
    pub app: Arc<Application>,
    /// The client asking.
    pub client_id: String,
    /// `login_hint`.
    pub login_hint: Option<String>,
}

impl Engine {
    // == Authorize and the OIDC mode of the login routes

    /// Checks an authorize request and stores it under a new `htOidTxid`; returns the login
    /// page URL to send the browser to.
    ///
    /// # Errors
    ///
    /// [`AuthorizeError`]: a page for an untrusted client or redirect URI, otherwise a
    /// redirect to the client with an OAuth error.
    pub async fn oidc_authorize(
        &self,
        p: AuthorizeParams,
    ) -> std::result::Result<String, AuthorizeError> {
        let page = |m: &str| AuthorizeError::Page(m.to_owned());
        let client_id = p
            .client_id
            .as_deref()
            .ok_or_else(|| page("client_id is missing"))?;
        let client = self
            .clients()
            .get(&self.inner.ctx.apps, client_id)
            .filter(|c| p.app.is_none_or(|app| app == c.app))
            .ok_or_else(|| page("Unknown client"))?;
        let app = self.app(client.app).map_err(|_| page("Unknown client"))?;
        let redirect_uri = match &p.redirect_uri {
            Some(given) => client
                .redirect_uris
                .iter()
                .find(|r| *r == given)
                .ok_or_else(|| page("redirect_uri is not registered for this client"))?,
            None => match client.redirect_uris.as_slice() {
                [only] => only,
                [] => return Err(page("The client has no registered redirect_uri")),
                _ => return Err(page("redirect_uri is missing")),
            },
        }
        .clone();
        for (name, value) in [
            ("state", &p.state),
            ("nonce", &p.nonce),
            ("login_hint", &p.login_hint),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_PARAM_BYTES) {
                return Err(page(&format!(
                    "{name} is longer than {MAX_PARAM_BYTES} bytes"
                )));
            }
        }

        // From here on, errors go back to the client's checked redirect URI.
        let back = |error: &str, description: &str| {
            AuthorizeError::Redirect(redirect::with_params(
                &redirect_uri,
                [
                    ("error", Some(error)),
                    ("error_description", Some(description)),
                    ("state", p.state.as_deref()),
                    ("iss", Some(app.issuer.as_str())),
                ],
            ))
        };
        let request = check_request(&p, &client).map_err(|(e, d)| back(e, d))?;
        if p.prompt
            .as_deref()
            .is_some_and(|prompt| prompt.split(' ').any(|v| v == "none"))
        {
            // Limitation: the provider keeps no browser session, so it can never sign a
            // user in without showing the login page.
            return Err(back("login_required", "The user must log in"));
        }

        let now = self.now();
        let txid = random_secret().map_err(|_| page("Internal error"))?;
        let record = AuthRequestRecord {
            app: app.uuid,
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            redirect_uri_given: p.redirect_uri.is_some(),
            scope: request,
            state: p.state.clone(),
            nonce: p.nonce.clone(),
            code_challenge: p.code_challenge.clone(),
            login_hint: p.login_hint.clone(),
            created: now,
            deadline: now + app.settings.oidc_request_ttl_secs,
            used: false,
        };
        let stored = self
            .inner
            .grants
            .call(&ids::request(&txid), |reply| {
                GrantMsg::Create(Box::new(GrantRecord::Request(record.clone())), reply)
            })
            .await
            .and_then(|r| r);
        if stored.is_err() {
            return Err(back("temporarily_unavailable", "Try again"));
        }

        let login_page = app.settings.oidc_login_url.clone().unwrap_or_else(|| {
            format!(
                "{}/authenticate/v1-2/openid/login",
                self.inner.ctx.apps.public_url()
            )
        });
        Ok(redirect::with_params(
            &login_page,
            [
                ("htOidTxid", Some(txid.as_str())),
                ("nonce", p.nonce.as_deref()),
                ("state", p.state.as_deref()),
                ("client_id", Some(client.client_id.as_str())),
                ("login_hint", p.login_hint.as_deref()),
            ],
        ))
    }

    /// What the login page needs to know about a live sign-in request.
    ///
    /// # Errors
    ///
    /// [`Error::OidcRequestDead`].
    pub async fn oidc_login_context(&self, txid: &str) -> Result<LoginContext> {
        let request = self.peek_request(txid).await?;
        Ok(LoginContext {
            app: self.app(request.app).map_err(|_| Error::OidcRequestDead)?,
            client_id: request.client_id,
            login_hint: request.login_hint,
        })
    }

    /// The application a live sign-in request belongs to.
    ///
    /// # Errors
    ///
    /// [`Error::OidcRequestDead`].
    pub async fn oidc_request_app(&self, txid: &str) -> Result<Arc<Application>> {
        Ok(self.oidc_login_context(txid).await?.app)
    }

    /// Starts an OIDC-mode login: holds the sign-in request `txid` so that no other login
    /// finishes it meanwhile. Call [`Engine::oidc_finish`] with the login's outcome.
    ///
    /// # Errors
    ///
    /// [`Error::OidcRequestDead`], [`Error::OidcNonceMismatch`].
    pub async fn oidc_begin(
        &self,
        app: &Application,
        txid: &str,
        nonce: Option<&str>,
    ) -> Result<OidcLogin> {
        if txid.is_empty() || txid.len() > 128 {
            return Err(Error::OidcRequestDead);
        }
        let now = self.now();
        let (app_id, nonce) = (app.uuid, nonce.map(str::to_owned));
        let (request, lease) = self
            .inner
            .grants
            .call(&ids::request(txid), |reply| GrantMsg::Claim {
                app: app_id,
                nonce: nonce.clone(),
                now,
                reply,
            })
            .await??;
        Ok(OidcLogin {
            txid: txid.to_owned(),
            request,
            lease,
            grants: self.inner.grants.clone(),
            held: true,
        })
    }

    /// Ends an OIDC-mode login: on success the sign-in request becomes an authorization
    /// code, returned in place of the access token; on failure the request is released.
    ///
    /// # Errors
    ///
    /// The login's own error, or storage errors.
    pub async fn oidc_finish(
        &self,
        mut login: OidcLogin,
        outcome: Result<Tokens>,
        proof: Proof,
    ) -> Result<CodeIssued> {
        let key = ids::request(&login.txid);
        let mut tokens = match outcome {
            Ok(tokens) => tokens,
            Err(err) => {
                login.release();
                return Err(err);
            }
        };

        let now = self.now();
        let app = self.app(login.request.app)?;
        let (code_id, secret) = (Uuid::new_v4().simple().to_string(), random_secret()?);
        let code = CodeRecord {
            request: login.request.clone(),
            secret_hash: self
                .inner
                .ctx
                .secrets
                .hash(Purpose::OidcCode, secret.as_bytes()),
            user: tokens.user_uuid,
            auth_time: now,
            amr: proof.amr(),
            deadline: now + app.settings.authorization_code_ttl_secs,
            family: None,
            session: Some(DeviceSession {
                device: tokens.device_uuid,
                sid: tokens.sid,
            }),
        };
        let code_id2 = code_id.clone();
        self.inner
            .grants
            .call(&key, |reply| GrantMsg::Finish {
                lease: login.lease,
                code_id: code_id2.clone(),
                code: Box::new(code.clone()),
                reply,
            })
            .await??;
        login.held = false; // finishing ended the hold

        let code = format!("{code_id}.{secret}");
        let redirect_to = redirect::with_params(
            &login.request.redirect_uri,
            [
                ("code", Some(code.as_str())),
                ("state", login.request.state.as_deref()),
                ("iss", Some(app.issuer.as_str())),
            ],
        );
        tokens.access_token = code;
        Ok(CodeIssued {
            tokens,
            redirect_to,
        })
    }

    // == Token endpoint, userinfo, introspection, revocation

    /// The token endpoint: `authorization_code` and `refresh_token` grants.
    ///
    /// # Errors
    ///
    /// RFC 6749 errors.
    pub async fn oidc_token(
        &self,
        issuer_app: Option<Uuid>,
        auth: &ClientAuth,
        params: TokenParams,
    ) -> std::result::Result<TokenResponse, OAuthError> {
        let client = self.authenticate_client(issuer_app, auth)?;
        match params.grant_type.as_deref() {
            Some("authorization_code") => self.exchange_code(&client, params).await,
            Some("refresh_token") => self.refresh(&client, params).await,
            Some(_) => Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            )),
            None => Err(OAuthError::invalid_request("grant_type is missing")),
        }
    }

    /// The userinfo endpoint (OIDC Core 5.3).
    ///
    /// # Errors
    ///
    /// `invalid_token` (401).
    pub async fn oidc_userinfo(
        &self,
        issuer_app: Option<Uuid>,
        bearer: &str,
    ) -> std::result::Result<Value, OAuthError> {
        let (app, claims, family) = self
            .check_access_token(bearer)
            .await?
            .ok_or_else(OAuthError::invalid_token)?;
        if issuer_app.is_some_and(|a| a != app.uuid) {
            return Err(OAuthError::invalid_token());
        }
        let user = self
            .live_user(&family)
            .await?
            .ok_or_else(OAuthError::invalid_token)?;
        let mails_tokens = app.settings.delivery.channel == Channel::Smtp;
        tokens::userinfo(&user, &claims.scope, mails_tokens)
            .map_err(|e| OAuthError::from_engine(&e))
    }

    /// Token introspection (RFC 7662), for the application's clients.
    ///
    /// # Errors
    ///
    /// `invalid_client` (401).
    pub async fn oidc_introspect(
        &self,
        issuer_app: Option<Uuid>,
        auth: &ClientAuth,
        token: &str,
    ) -> std::result::Result<Value, OAuthError> {
        let client = self.authenticate_client(issuer_app, auth)?;
        if client.public {
            // Anyone can name a public client (its id is in every browser URL), so it
            // cannot be trusted with what a token says about its user.
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "public clients cannot introspect tokens",
            ));
        }
        let inactive = json!({"active": false});

        if let Some((app, claims, family)) = self.check_access_token(token).await?
            && app.uuid == client.app
        {
            if self.live_user(&family).await?.is_none() {
                return Ok(inactive);
            }
            return Ok(json!({
                "active": true,
                "token_type": "Bearer",
                "scope": claims.scope,
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "iat": claims.iat,
                "exp": claims.exp,
                "jti": claims.jti,
            }));
        }
        if let Some((_, family)) = self.refresh_token(token, Held::Current).await?
            && family.app == client.app
            && !family.revoked
            && family.deadline > self.now()
            && let Some(view) = self.live_user(&family).await?
        {
            return Ok(json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": family.scope,
                "client_id": family.client_id,
                "sub": view.user_uuid,
                "iss": self.app(family.app).map(|a| a.issuer.clone()).unwrap_or_default(),
                "exp": family.deadline,
            }));
        }
        Ok(inactive)
    }

    /// Token revocation (RFC 7009): a refresh token revokes its family (and so every access
    /// token of it); an access token revokes itself. Unknown tokens are not an error.
    ///
    /// # Errors
    ///
    /// `invalid_client` (401).
    pub async fn oidc_revoke(
        &self,
        issuer_app: Option<Uuid>,
        auth: &ClientAuth,
        token: &str,
    ) -> std::result::Result<(), OAuthError> {
        let client = self.authenticate_client(issuer_app, auth)?;

        if let Some((_, claims, _)) = self.check_access_token(token).await? {
            if claims.client_id == client.client_id {
                let (jti, exp) = (claims.jti, claims.exp);
                self.inner
                    .grants
                    .call(&ids::family(&claims.gid), |reply| GrantMsg::RevokeAccess {
                        jti,
                        exp,
                        reply,
                    })
                    .await
                    .and_then(|r| r)
                    .map_err(|e| OAuthError::from_engine(&e))?;
            }
            return Ok(());
        }
        // A rotated-out token revokes too: whoever holds it (a client whose refresh answer was
        // lost, or a thief) means the grant to end.
        if let Some((family_id, family)) = self.refresh_token(token, Held::Ever).await?
            && family.client_id == client.client_id
        {
            self.revoke_family(family_id).await?;
            self.audit_revoked(&client, "revocation");
        }
        Ok(())
    }

    /// Whether a browser page at `origin` may call the token, userinfo and revocation
    /// endpoints: it must be the origin of a redirect URI some client registered (a
    /// single-page application's own origin), as those endpoints' answers are for it alone.
    pub fn oidc_cors_origin_allowed(&self, origin: &str) -> bool {
        self.clients().is_redirect_origin(origin)
    }

    /// The discovery document of an application's issuer.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownApp`].
    pub fn oidc_discovery(&self, app: Uuid) -> Result<Value> {
        tokens::discovery(&*self.app(app)?)
    }

    /// The JWK set of an application's issuer.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownApp`].
    pub fn oidc_jwks(&self, app: Uuid) -> Result<Value> {
        tokens::jwks(&*self.app(app)?, self.now())
    }

    /// The application a client belongs to, for the short endpoint paths.
    pub fn oidc_client_app(&self, client_id: &str) -> Option<Uuid> {
        self.clients()
            .get(&self.inner.ctx.apps, client_id)
            .map(|c| c.app)
    }

    // == Administration (CLI, server stopped)

    /// Registers a client of `app`; returns its id and, for a confidential client, its
    /// secret (shown only now).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownApp`], [`Error::InvalidField`] for a bad redirect URI.
    pub async fn create_client(
        &self,
        app: Uuid,
        redirect_uris: Vec<String>,
        public: bool,
    ) -> Result<(String, Option<String>)> {
        self.app(app)?;
        let ctx = &self.inner.ctx;
        let (client, secret) = self
            .clients()
            .create(
                &ctx.store,
                &ctx.secrets,
                app,
                redirect_uris,
                public,
                self.now(),
            )
            .await?;
        Ok((client.client_id.clone(), secret))
    }

    /// Replaces a client's redirect URIs; the default client (id = applicationUuid) too.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownClient`], [`Error::InvalidField`] for a bad redirect URI.
    pub async fn update_client(&self, client_id: &str, redirect_uris: Vec<String>) -> Result<()> {
        let ctx = &self.inner.ctx;
        self.clients()
            .update(&ctx.store, &ctx.apps, client_id, redirect_uris)
            .await?;
        Ok(())
    }

    /// Makes new signing keys current for `app`; the old ones keep verifying until the
    /// tokens they signed have expired.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownApp`], storage errors.
    pub async fn rotate_keys(&self, app: Uuid) -> Result<Vec<String>> {
        let ctx = &self.inner.ctx;
        let app = ctx.apps.rotate(&ctx.store, app, self.now()).await?;
        let mut kids = vec![app.keys.current().kid.clone()];
        if app.keys.id_token_key().kid != app.keys.current().kid {
            kids.push(app.keys.id_token_key().kid.clone());
        }
        Ok(kids)
    }

    // == Inside

    fn clients(&self) -> &Clients {
        &self.inner.clients
    }

    fn audit_revoked(&self, client: &ClientRecord, reason: &'static str) {
        self.audit().record(
            AuditEvent::success(client.app, AuditKind::OidcGrantRevoked)
                .field("client_id", client.client_id.clone())
                .field("reason", reason),
        );
    }

    fn authenticate_client(
        &self,
        issuer_app: Option<Uuid>,
        auth: &ClientAuth,
    ) -> std::result::Result<Arc<ClientRecord>, OAuthError> {
        let ctx = &self.inner.ctx;
        match self.clients().authenticate(&ctx.apps, &ctx.secrets, auth) {
            Ok(client) if issuer_app.is_none_or(|a| a == client.app) => Ok(client),
            Err(ClientAuthError::Malformed(why)) => Err(OAuthError::invalid_request(why)),
            _ => Err(OAuthError::new(
                401,
                "invalid_client",
                "Client authentication failed",
            )),
        }
    }

    async fn exchange_code(
        &self,
        client: &ClientRecord,
        params: TokenParams,
    ) -> std::result::Result<TokenResponse, OAuthError> {
        let code = params
            .code
            .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        let Some((code_id, secret)) = code.split_once('.').filter(|(id, _)| id.len() == 32) else {
            return Err(OAuthError::invalid_grant("unknown authorization code"));
        };
        let now = self.now();
        let app = self
            .app(client.app)
            .map_err(|e| OAuthError::from_engine(&e))?;
        let family_id = Uuid::new_v4().simple().to_string();
        let refresh_secret = random_secret().map_err(|e| OAuthError::from_engine(&e))?;
        let redemption = Redemption {
            secret: secret.to_owned(),
            client_id: client.client_id.clone(),
            redirect_uri: params.redirect_uri,
            verifier: params.code_verifier,
            family_id: family_id.clone(),
            refresh_secret: refresh_secret.clone(),
            family_deadline: now + app.settings.refresh_token_ttl_secs,
            now,
        };
        let outcome = self
            .inner
            .grants
            .call(&ids::code(code_id), |reply| {
                GrantMsg::Redeem(Box::new(redemption.clone()), reply)
            })
            .await
            .and_then(|r| r)
            .map_err(|e| OAuthError::from_engine(&e))?;

        let exchanged = match outcome {
            Ok(exchanged) => exchanged,
            Err(GrantFailure::Replayed { family }) => {
                if let Some(family) = family {
                    self.revoke_family(&family).await?;
                }
                self.audit_revoked(client, "code_replay");
                tracing::warn!(
                    client_id = %client.client_id,
                    "authorization code replayed; its tokens are revoked"
                );
                return Err(OAuthError::invalid_grant(
                    "the authorization code was already used",
                ));
            }
            Err(GrantFailure::Invalid(why)) => return Err(OAuthError::invalid_grant(why)),
            Err(GrantFailure::Scope) => return Err(OAuthError::invalid_grant("scope")),
        };
        if self.live_user(&exchanged.family).await?.is_none() {
            self.revoke_family(&exchanged.family_id).await?;
            return Err(OAuthError::invalid_grant(SIGN_IN_ENDED));
        }

        self.audit().record(
            AuditEvent::success(client.app, AuditKind::OidcCodeExchanged)
                .user(exchanged.family.user)
                .field("client_id", client.client_id.clone()),
        );
        let nonce = exchanged.code.request.nonce.as_deref();
        self.respond(&app, &exchanged.family, &family_id, &refresh_secret, nonce)
    }

    async fn refresh(
        &self,
        client: &ClientRecord,
        params: TokenParams,
    ) -> std::result::Result<TokenResponse, OAuthError> {
        let token = params
            .refresh_token
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let Some((family_id, secret)) = token.split_once('.').filter(|(id, _)| id.len() == 32)
        else {
            return Err(OAuthError::invalid_grant("unknown refresh token"));
        };
        let now = self.now();
        let new_secret = random_secret().map_err(|e| OAuthError::from_engine(&e))?;
        let (secret, client_id) = (secret.to_owned(), client.client_id.clone());
        let grace = self
            .app(client.app)
            .map_err(|e| OAuthError::from_engine(&e))?
            .settings
            .refresh_token_reuse_grace_secs;
        let outcome = self
            .inner
            .grants
            .call(&ids::family(family_id), |reply| GrantMsg::Refresh {
                secret: secret.clone(),
                client_id: client_id.clone(),
                scope: params.scope.clone(),
                new_secret: new_secret.clone(),
                now,
                grace,
                reply,
            })
            .await
            .and_then(|r| r)
            .map_err(|e| OAuthError::from_engine(&e))?;

        let family = match outcome {
            Ok(family) => family,
            Err(GrantFailure::Replayed { .. }) => {
                self.audit_revoked(client, "refresh_reuse");
                tracing::warn!(
                    client_id = %client.client_id,
                    family_id,
                    "refresh token reused; the family is revoked"
                );
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used; its grant is revoked",
                ));
            }
            Err(GrantFailure::Invalid(why)) => return Err(OAuthError::invalid_grant(why)),
            Err(GrantFailure::Scope) => {
                return Err(OAuthError::new(
                    400,
                    "invalid_scope",
                    "a refresh may not ask for scopes the grant does not hold",
                ));
            }
        };
        if self.live_user(&family).await?.is_none() {
            self.revoke_family(family_id).await?;
            return Err(OAuthError::invalid_grant(SIGN_IN_ENDED));
        }
        let app = self
            .app(family.app)
            .map_err(|e| OAuthError::from_engine(&e))?;
        let mut family = family;
        if let Some(narrower) = params.scope {
            // RFC 6749 6: the new access token may carry fewer scopes; the grant keeps all.
            family.scope = narrower
                .split(' ')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        }
        self.respond(&app, &family, family_id, &new_secret, None)
    }

    fn respond(
        &self,
        app: &Application,
        family: &FamilyRecord,
        family_id: &str,
        refresh_secret: &str,
        nonce: Option<&str>,
    ) -> std::result::Result<TokenResponse, OAuthError> {
        let now = self.now();
        let ttl = app.settings.access_token_ttl_secs;
        let claims = ClientAccessClaims {
            iss: app.issuer.clone(),
            sub: family.user.to_string(),
            aud: family.client_id.clone(),
            client_id: family.client_id.clone(),
            scope: family.scope.clone(),
            iat: now,
            exp: now + ttl,
            jti: Uuid::new_v4(),
            gid: family_id.to_owned(),
        };
        let server_error = |e: Error| OAuthError::from_engine(&e);
        let access_token = app.keys.current().sign(&claims).map_err(server_error)?;
        let id_token = tokens::id_token(
            app,
            &IdTokenFacts {
                client_id: &family.client_id,
                user: family.user,
                nonce,
                auth_time: family.auth_time,
                amr: &family.amr,
                access_token: &access_token,
                now,
            },
        )
        .map_err(server_error)?;
        Ok(TokenResponse {
            access_token,
            expires_in: ttl,
            id_token,
            refresh_token: format!("{family_id}.{refresh_secret}"),
            scope: family.scope.clone(),
        })
    }

    /// An access token this provider issued, with its application and live family; `None`
    /// when it is not one, or is expired or revoked.
    async fn check_access_token(
        &self,
        token: &str,
    ) -> std::result::Result<Option<LiveAccessToken>, OAuthError> {
        let Ok(kid) = kid_of(token) else {
            return Ok(None);
        };
        let Some((app, key)) = self.inner.ctx.apps.by_kid(&kid) else {
            return Ok(None);
        };
        // The audience is the client the token was issued to, which only the token says: read
        // it unverified to verify the signature, then require that it names the token's
        // client, whose family must agree below.
        let Some(aud) = unverified_audience(token) else {
            return Ok(None);
        };
        let Ok(claims) = app.keys.decode::<ClientAccessClaims>(&key, token, &aud) else {
            return Ok(None);
        };
        let now = self.now();
        let fresh = claims.exp > now && claims.iat <= now + 60;
        if claims.iss != app.issuer || claims.aud != claims.client_id || !fresh {
            return Ok(None);
        }
        let jti = claims.jti;
        let family = self
            .inner
            .grants
            .call(&ids::family(&claims.gid), |reply| GrantMsg::Check {
                jti,
                now,
                reply,
            })
            .await
            .and_then(|r| r)
            .map_err(|e| OAuthError::from_engine(&e))?;
        Ok(family
            .filter(|f| f.app == app.uuid && f.client_id == claims.client_id)
            .map(|f| (app, claims, f)))
    }

    async fn peek_request(&self, txid: &str) -> Result<AuthRequestRecord> {
        if txid.is_empty() || txid.len() > 128 {
            return Err(Error::OidcRequestDead);
        }
        let record = self.peek_grant(&ids::request(txid)).await?;
        match record {
            Some(GrantRecord::Request(r)) if !r.used && r.deadline > self.now() => Ok(r),
            _ => Err(Error::OidcRequestDead),
        }
    }

    /// The family `token` is a refresh token of (its current one, or with [`Held::Ever`] any
    /// it remembers), read without rotating it.
    async fn refresh_token<'t>(
        &self,
        token: &'t str,
        held: Held,
    ) -> std::result::Result<Option<(&'t str, FamilyRecord)>, OAuthError> {
        let Some((family_id, secret)) = token.split_once('.') else {
            return Ok(None);
        };
        let Some(family) = self.peek_family(family_id).await? else {
            return Ok(None);
        };
        let hash = self
            .inner
            .ctx
            .secrets
            .hash(Purpose::RefreshToken, secret.as_bytes());
        let known = crate::crypto::same(&family.current_hash, &hash)
            || (held == Held::Ever
                && family
                    .previous_hashes
                    .iter()
                    .any(|h| crate::crypto::same(h, &hash)));
        Ok(known.then_some((family_id, family)))
    }

    async fn peek_family(
        &self,
        family_id: &str,
    ) -> std::result::Result<Option<FamilyRecord>, OAuthError> {
        if family_id.len() != 32 {
            return Ok(None);
        }
        match self.peek_grant(&ids::family(family_id)).await {
            Ok(Some(GrantRecord::Family(f))) => Ok(Some(f)),
            Ok(_) => Ok(None),
            Err(e) => Err(OAuthError::from_engine(&e)),
        }
    }

    /// Reads a grant's durable record without waking its actor: the actor writes before it
    /// answers, so the stored record is never behind an acknowledged change.
    async fn peek_grant(&self, key: &str) -> Result<Option<GrantRecord>> {
        use latchkey_storage::StoreExt as _;
        let store = self.inner.ctx.store.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            store.load::<GrantRecord>(latchkey_storage::Space::Grants, key.as_bytes())
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::from)
    }

    async fn revoke_family(&self, family_id: &str) -> std::result::Result<(), OAuthError> {
        self.inner
            .grants
            .call(&ids::family(family_id), GrantMsg::Revoke)
            .await
            .and_then(|r| r)
            .map_err(|e| OAuthError::from_engine(&e))
    }

    /// The grant's user, unless deleted or locked by an administrator, or unless the device
    /// session the user signed in with has ended (logout, a lock or removal of the device, a
    /// new PIN): a relying party's session lasts no longer than the one it came from.
    async fn live_user(
        &self,
        family: &FamilyRecord,
    ) -> std::result::Result<Option<crate::UserView>, OAuthError> {
        let user = family.user;
        let found = match family.session {
            Some(DeviceSession { device, sid }) => {
                self.call_user(user, |reply| UserMsg::ViewInSession { device, sid, reply })
                    .await
            }
            None => self.call_user(user, UserMsg::View).await,
        };
        match found {
            Ok(view) if !view.locked => Ok(Some(view)),
            Err(e @ (Error::Unavailable | Error::Internal(_))) => Err(OAuthError::from_engine(&e)),
            Ok(_) | Err(_) => Ok(None),
        }
    }
}

/// Checks what authorize asks beyond the client: returns the scope to grant, or an OAuth
/// error and its description for the redirect.
fn check_request(
    p: &AuthorizeParams,
    client: &ClientRecord,
) -> std::result::Result<String, (&'static str, &'static str)> {
    if p.request_object {
        return Err(("request_not_supported", "request objects are not supported"));
    }
    match p.response_type.as_deref() {
        Some("code") => {}
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        None => return Err(("invalid_request", "response_type is missing")),
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return Err(("invalid_request", "only response_mode=query is supported"));
    }
    let scope = p.scope.as_deref().unwrap_or_default();
    let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    if !scopes.contains(&"openid") {
        return Err(("invalid_scope", "scope must include openid"));
    }
    let known = ["openid", "profile", "email", "offline_access"];
    let granted: Vec<&str> = known.into_iter().filter(|k| scopes.contains(k)).collect();

    match (&p.code_challenge, p.code_challenge_method.as_deref()) {
        (Some(challenge), Some("S256")) => {
            if !pkce::well_formed(challenge) {
                return Err(("invalid_request", "code_challenge is malformed"));
            }
        }
        (_, Some("plain")) => {
            return Err((
                "invalid_request",
                "code_challenge_method plain is not supported",
            ));
        }
        (_, Some(_)) => return Err(("invalid_request", "code_challenge_method must be S256")),
        (Some(_), None) => {
            return Err(("invalid_request", "code_challenge_method is missing"));
        }
        (None, None) if client.public => {
            return Err(("invalid_request", "public clients must use PKCE (S256)"));
        }
        (None, None) => {}
    }
    Ok(granted.join(" "))
}

/// The `aud` of a compact JWS, read before verification only to choose what to verify.
fn unverified_audience(token: &str) -> Option<String> {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("aud")?.as_str().map(str::to_owned)
}

/// Whether every scope in `asked` is among the space-separated `granted` ones.
fn scope_within(asked: &str, granted: &str) -> bool {
    let granted: Vec<&str> = granted.split(' ').collect();
    asked
        .split(' ')
        .filter(|s| !s.is_empty())
        .all(|s| granted.contains(&s))
}
