//! OpenID Connect provider routes. They answer in their RFCs' formats, not the envelope:
//! OAuth JSON errors from the token, introspection and revocation endpoints, `WWW-Authenticate`
//! from userinfo, and a plain error page from authorize when redirecting would be unsafe.
//!
//! Every endpoint is served under its issuer (`/openid/{app}/…`) and at the short paths the
//! original used (`/openid/…`), where the application follows from the client.

use axum::{
    body::Bytes,
    extract::{FromRequestParts, RawPathParams, State, rejection::RawPathParamsRejection},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use latchkey_actors::{AuthorizeError, AuthorizeParams, ClientAuth, OAuthError, TokenParams};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::{
    AppState,
    envelope::ApiError,
    extract::{Path, bearer_token, parse_app},
};

// == Discovery and keys

pub(crate) async fn discovery(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let doc = state.engine.oidc_discovery(parse_app(&app)?)?;
    Ok(public_json(doc))
}

pub(crate) async fn jwks_of(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let set = state.engine.oidc_jwks(parse_app(&app)?)?;
    Ok(public_json(set))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JwksQuery {
    application_uuid: Option<String>,
    #[serde(rename = "client_id")]
    client_id: Option<String>,
}

/// The short path: the application from `applicationUuid` or `client_id`.
pub(crate) async fn jwks(
    State(state): State<AppState>,
    crate::http::extract::Query(query): crate::http::extract::Query<JwksQuery>,
) -> Result<Response, ApiError> {
    let app = match (&query.application_uuid, &query.client_id) {
        (Some(app), _) => parse_app(app)?,
        (None, Some(client)) => state
            .engine
            .oidc_client_app(client)
            .ok_or(latchkey_actors::Error::UnknownApp)?,
        (None, None) => {
            return Err(latchkey_actors::Error::MissingField("applicationUuid").into());
        }
    };
    Ok(public_json(state.engine.oidc_jwks(app)?))
}

fn public_json(value: Value) -> Response {
    let mut response = axum::Json(value).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        // Short, because a key rotation makes a new key current at once and not every
        // relying party refetches the JWKS when it meets an unknown kid.
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

// == Authorize

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
    prompt: Option<String>,
    response_mode: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    issuer: Result<Issuer, UnknownIssuer>,
    uri: Uri,
) -> Response {
    let Ok(Issuer(app)) = issuer else {
        return error_page("Unknown issuer");
    };
    let query = uri.query().unwrap_or_default();
    match serde_urlencoded::from_str::<AuthorizeQuery>(query) {
        Ok(q) => authorize_query(&state, app, q).await,
        Err(_) => error_page("The request's parameters are malformed or repeated"),
    }
}

/// Authorize by POST (OIDC Core 3.1.2.1): the same parameters, form-encoded in the body.
pub(crate) async fn authorize_form(
    State(state): State<AppState>,
    issuer: Result<Issuer, UnknownIssuer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Issuer(app)) = issuer else {
        return error_page("Unknown issuer");
    };
    match form::<AuthorizeQuery>(&headers, &body) {
        Ok(q) => authorize_query(&state, app, q).await,
        Err(_) => error_page("The request's parameters are malformed or repeated"),
    }
}

async fn authorize_query(state: &AppState, app: Option<Uuid>, q: AuthorizeQuery) -> Response {
    let params = AuthorizeParams {
        app,
        response_type: q.response_type,
        client_id: q.client_id,
        redirect_uri: q.redirect_uri,
        scope: q.scope,
        state: q.state,
        nonce: q.nonce,
        code_challenge: q.code_challenge,
        code_challenge_method: q.code_challenge_method,
        login_hint: q.login_hint,
        prompt: q.prompt,
        response_mode: q.response_mode,
        request_object: q.request.is_some() || q.request_uri.is_some(),
    };
    match state.engine.oidc_authorize(params).await {
        Ok(login_page) => found(&login_page),
        Err(AuthorizeError::Redirect(to)) => found(&to),
        Err(AuthorizeError::Page(message)) => error_page(&message),
    }
}

/// 302, as OAuth clients expect from authorize (axum's `Redirect::to` is 303).
fn found(location: &str) -> Response {
    let mut response = Redirect::to(location).into_response();
    *response.status_mut() = StatusCode::FOUND;
    response
}

/// A page for the person in the browser; it links nowhere, since the client's redirect URI
/// could not be trusted.
fn error_page(message: &str) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sign-in request refused</title></head><body>\
         <h1>Sign-in request refused</h1><p>{escaped}</p>\
         <p>Go back to the application and try again.</p></body></html>"
    );
    let mut response = (StatusCode::BAD_REQUEST, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    response
}

// == Token endpoint

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

pub(crate) async fn token(
    State(state): State<AppState>,
    issuer: Result<Issuer, UnknownIssuer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let Issuer(app) = issuer?;
        let form: TokenForm = form(&headers, &body)?;
        let auth = client_auth(&headers, form.client_id, form.client_secret)?;
        let params = TokenParams {
            grant_type: form.grant_type,
            code: form.code,
            redirect_uri: form.redirect_uri,
            code_verifier: form.code_verifier,
            refresh_token: form.refresh_token,
            scope: form.scope,
        };
        state.engine.oidc_token(app, &auth, params).await
    }
    .await;
    match result {
        Ok(tokens) => no_store(json!({
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "id_token": tokens.id_token,
            "refresh_token": tokens.refresh_token,
            "scope": tokens.scope,
        })),
        Err(err) => oauth_error(&err),
    }
}

// == Introspection and revocation

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenOnlyForm {
    token: Option<String>,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

pub(crate) async fn introspect(
    State(state): State<AppState>,
    issuer: Result<Issuer, UnknownIssuer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let Issuer(app) = issuer?;
        let (auth, token) = token_request(&headers, &body)?;
        state.engine.oidc_introspect(app, &auth, &token).await
    }
    .await;
    match result {
        Ok(answer) => no_store(answer),
        Err(err) => oauth_error(&err),
    }
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    issuer: Result<Issuer, UnknownIssuer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let Issuer(app) = issuer?;
        let (auth, token) = token_request(&headers, &body)?;
        state.engine.oidc_revoke(app, &auth, &token).await
    }
    .await;
    match result {
        Ok(()) => no_store(json!({})),
        Err(err) => oauth_error(&err),
    }
}

fn token_request(headers: &HeaderMap, body: &[u8]) -> Result<(ClientAuth, String), OAuthError> {
    let form: TokenOnlyForm = form(headers, body)?;
    let _ = form.token_type_hint; // a hint only: both kinds are tried
    let auth = client_auth(headers, form.client_id, form.client_secret)?;
    let token = form
        .token
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    Ok((auth, token))
}

// == Userinfo

pub(crate) async fn userinfo(
    State(state): State<AppState>,
    issuer: Result<Issuer, UnknownIssuer>,
    headers: HeaderMap,
) -> Response {
    let Ok(Issuer(app)) = issuer else {
        return UnknownIssuer.into_response();
    };
    let Some(bearer) = bearer_token(&headers) else {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    match state.engine.oidc_userinfo(app, bearer).await {
        Ok(claims) => no_store(claims),
        Err(err) => oauth_error(&err),
    }
}

// == Shared pieces

/// A form body (`application/x-www-form-urlencoded`); a repeated parameter is refused, as
/// RFC 6749 3.1 asks.
fn form<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::invalid_request("the form is malformed or repeats a parameter"))
}

/// The caller's client authentication: HTTP Basic, whose id and secret are form-url-encoded
/// before Base64 (RFC 6749 2.3.1), or the form's `client_id` and `client_secret`.
fn client_auth(
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<ClientAuth, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(parse_basic(value).ok_or_else(|| {
            OAuthError::new(401, "invalid_client", "malformed HTTP Basic credentials")
        })?),
    };
    Ok(ClientAuth {
        basic,
        client_id,
        client_secret,
    })
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte.
fn form_decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The issuer a request came to: `Some(application)` on `/openid/{app}/...`, `None` on the
/// short paths, where the client names the application.
pub(crate) struct Issuer(Option<Uuid>);

/// An `{app}` path segment that is not an application's UUID.
pub(crate) struct UnknownIssuer;

impl From<UnknownIssuer> for OAuthError {
    fn from(_: UnknownIssuer) -> Self {
        OAuthError::new(404, "invalid_request", "unknown issuer")
    }
}

impl IntoResponse for UnknownIssuer {
    fn into_response(self) -> Response {
        oauth_error(&self.into())
    }
}

impl FromRequestParts<AppState> for Issuer {
    type Rejection = UnknownIssuer;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, UnknownIssuer> {
        let params = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params,
            Err(RawPathParamsRejection::MissingPathParams(_)) => return Ok(Self(None)),
            Err(_) => return Err(UnknownIssuer),
        };
        match params.iter().find(|(name, _)| *name == "app") {
            None => Ok(Self(None)),
            Some((_, raw)) => Uuid::parse_str(raw)
                .map(|app| Self(Some(app)))
                .map_err(|_| UnknownIssuer),
        }
    }
}

fn no_store(body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn oauth_error(err: &OAuthError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = no_store(json!({
        "error": err.error,
        "error_description": err.description,
    }));
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if err.error == "invalid_token" {
            "Bearer error=\"invalid_token\""
        } else {
            "Basic realm=\"latchkey\""
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}
