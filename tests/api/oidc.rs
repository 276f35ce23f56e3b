//! OpenID Connect: the harness the `oidc_*` modules share (a provider with a public URL and
//! one registered client, raw calls to each endpoint, an HTTP client for the `openidconnect`
//! crate as the relying party).
//!
//! The provider's public URL is a name that does not resolve ([`PUBLIC_URL`]), as behind a
//! reverse proxy: every URL the provider hands out is rewritten to the test server's real
//! address just before the request, so nothing can pass by taking the issuer from the
//! request's own address.

use std::{future::Future, pin::Pin};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use latchkey::BASE;
use openidconnect::{
    AdditionalProviderMetadata, AsyncHttpClient, HttpRequest, HttpResponse, IssuerUrl,
    ProviderMetadata,
    core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
        CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
        CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    },
    url::{Url, form_urlencoded},
};
use reqwest::{StatusCode, redirect::Policy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{Device, TestApp};

/// The provider's public base URL (`public_url` in the config); it does not resolve.
pub(crate) const PUBLIC_URL: &str = "https://login.latchkey.test";

/// The redirect URI registered for the provider's client.
pub(crate) const CB: &str = "https://rp.example/cb";

/// A provider: a test server with a public URL and one confidential client for [`CB`].
pub(crate) struct Provider {
    pub(crate) app: TestApp,
    pub(crate) client_id: String,
    pub(crate) secret: String,
    /// Follows no redirects: authorize's answer is what the tests look at.
    pub(crate) http: reqwest::Client,
}

impl Provider {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut latchkey::Config)) -> Self {
        let app = TestApp::spawn_with(|config| {
            config.public_url = Some(PUBLIC_URL.into());
            tweak(config);
        })
        .await;
        let (client_id, secret) = app
            .engine()
            .create_client(app.app, vec![CB.into()], false)
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            app,
            client_id,
            secret: secret.expect("a confidential client has a secret"),
            http,
        }
    }

    /// The issuer, as configuration makes it.
    pub(crate) fn issuer(&self) -> String {
        format!("{PUBLIC_URL}{BASE}/openid/{}", self.app.app)
    }

    /// Where a URL the provider handed out really is.
    pub(crate) fn local(&self, url: &str) -> String {
        local(url, &self.app.base)
    }

    /// The real address of one of the issuer's endpoints (`token`, `jwks`, ...).
    pub(crate) fn endpoint(&self, name: &str) -> String {
        format!("{}{BASE}/openid/{}/{name}", self.app.base, self.app.app)
    }

    /// An HTTP client for the `openidconnect` crate (made again after a restart).
    pub(crate) fn rp_http(&self) -> RpHttp {
        RpHttp {
            client: self.http.clone(),
            base: self.app.base.clone(),
        }
    }

    /// Client authentication with this provider's client and HTTP Basic.
    pub(crate) fn basic(&self) -> Auth {
        Auth::Basic(self.client_id.clone(), self.secret.clone())
    }

    /// A typical authorize request of this provider's client, with PKCE and a nonce.
    pub(crate) fn authz(&self) -> Authz {
        Authz {
            client_id: self.client_id.clone(),
            redirect_uri: Some(CB.into()),
            scope: "openid profile email".into(),
            state: Some("state-1".into()),
            nonce: Some(format!("nonce-{}", Uuid::new_v4().simple())),
            verifier: Some(verifier()),
            extra: Vec::new(),
        }
    }

    // == Authorize and the OIDC-mode login

    /// GET authorize at the issuer's path.
    pub(crate) async fn authorize(&self, a: &Authz) -> Answer {
        self.authorize_at(&self.endpoint("auth"), a).await
    }

    /// GET authorize at `url` (the issuer's path or the short one).
    pub(crate) async fn authorize_at(&self, url: &str, a: &Authz) -> Answer {
        let query = encode(&a.query());
        let resp = self.http.get(format!("{url}?{query}")).send().await;
        // Not `unwrap`: its message would print the whole (possibly huge) URL.
        let resp =
            resp.unwrap_or_else(|e| panic!("authorize not sent ({} bytes): {e}", query.len()));
        Answer::read(resp).await
    }

    /// Authorize, checked to send the browser to the login page; returns its `htOidTxid`.
    pub(crate) async fn begin(&self, a: &Authz) -> String {
        let answer = self.authorize(a).await;
        let page = format!("{PUBLIC_URL}{BASE}/openid/login?");
        let location = answer.location.as_deref().unwrap_or_default();
        assert!(
            answer.status == StatusCode::FOUND && location.starts_with(&page),
            "authorize should send the browser to the login page: {} {location:?} {}",
            answer.status,
            answer.body
        );
        query_param(location, "htOidTxid").expect("the login page URL has an htOidTxid")
    }

    /// The back end's login in OIDC mode; keeps the device's new authKey on success.
    pub(crate) async fn login_oidc(
        &self,
        device: &mut Device,
        txid: &str,
        nonce: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut query = vec![("htOidTxid", txid.to_owned())];
        if let Some(nonce) = nonce {
            query.push(("nonce", nonce.to_owned()));
        }
        let body = json!({"applicationUuid": self.app.app, "username": device.username,
                          "deviceUuid": device.device_uuid, "authKey": device.auth_key,
                          "hashedPin": device.hashed_pin()});
        let path = format!("/authentication/login?{}", encode(&query));
        let (status, resp) = self.app.backend(&path, &body).await;
        if status == StatusCode::OK {
            device.take(&resp);
        }
        (status, resp)
    }

    /// Authorize and an OIDC-mode login: an authorization code for `a`.
    pub(crate) async fn code(&self, device: &mut Device, a: &Authz) -> String {
        let txid = self.begin(a).await;
        let (status, resp) = self.login_oidc(device, &txid, a.nonce.as_deref()).await;
        assert_eq!(status, StatusCode::OK, "OIDC-mode login: {resp}");
        assert_eq!(resp["accessToken"]["type"], "OAUTH_CODE", "{resp}");
        resp["accessToken"]["token"].as_str().unwrap().to_owned()
    }

    // == Token endpoint, introspection, revocation, userinfo

    /// Exchanges `code` as `a` says (its redirect URI and verifier, if any).
    pub(crate) async fn exchange(&self, code: &str, a: &Authz, auth: &Auth) -> (StatusCode, Value) {
        let mut fields = vec![("grant_type", "authorization_code"), ("code", code)];
        if let Some(uri) = &a.redirect_uri {
            fields.push(("redirect_uri", uri));
        }
        if let Some(verifier) = &a.verifier {
            fields.push(("code_verifier", verifier));
        }
        self.post_form("token", &fields, auth).await
    }

    /// A code flow for `device` up to the tokens (checked to succeed).
    pub(crate) async fn tokens(&self, device: &mut Device, a: &Authz) -> Value {
        let code = self.code(device, a).await;
        let (status, tokens) = self.exchange(&code, a, &self.basic()).await;
        assert_eq!(status, StatusCode::OK, "code exchange: {tokens}");
        tokens
    }

    pub(crate) async fn refresh(&self, refresh_token: &str, auth: &Auth) -> (StatusCode, Value) {
        let fields = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.post_form("token", &fields, auth).await
    }

    /// Introspection by this provider's client; returns whether the token is active.
    pub(crate) async fn active(&self, token: &str) -> bool {
        let (status, answer) = self
            .post_form("introspect", &[("token", token)], &self.basic())
            .await;
        assert_eq!(status, StatusCode::OK, "introspection: {answer}");
        answer["active"]
            .as_bool()
            .unwrap_or_else(|| panic!("no `active` in {answer}"))
    }

    pub(crate) async fn revoke(&self, token: &str) {
        let (status, answer) = self
            .post_form("revoke", &[("token", token)], &self.basic())
            .await;
        assert_eq!(status, StatusCode::OK, "revocation: {answer}");
    }

    pub(crate) async fn userinfo(&self, access_token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.endpoint("userinfo"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a form to one of the issuer's endpoints.
    pub(crate) async fn post_form(
        &self,
        endpoint: &str,
        fields: &[(&str, &str)],
        auth: &Auth,
    ) -> (StatusCode, Value) {
        post_form(&self.http, &self.endpoint(endpoint), fields, auth).await
    }
}

/// How a client authenticates at the token, introspection and revocation endpoints.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// `client_secret_basic`, id and secret form-url-encoded as RFC 6749 2.3.1 says.
    Basic(String, String),
    /// `client_secret_post`.
    Post(String, String),
    /// `none`: a public client names itself.
    Public(String),
    /// An `Authorization` header as given, nothing in the form.
    Header(String),
    /// Basic and `client_secret_post` at once.
    BasicAndPost(String, String),
    /// No client authentication, and no client id.
    Nothing,
}

/// POSTs a form with client authentication; returns the status and the JSON body.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
    auth: &Auth,
) -> (StatusCode, Value) {
    let mut fields: Vec<(&str, String)> =
        fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let mut req = http.post(url);
    match auth {
        Auth::Basic(id, secret) => req = req.header("authorization", basic(id, secret)),
        Auth::Post(id, secret) => {
            fields.push(("client_id", id.clone()));
            fields.push(("client_secret", secret.clone()));
        }
        Auth::Public(id) => fields.push(("client_id", id.clone())),
        Auth::Header(value) => req = req.header("authorization", value),
        Auth::BasicAndPost(id, secret) => {
            req = req.header("authorization", basic(id, secret));
            fields.push(("client_id", id.clone()));
            fields.push(("client_secret", secret.clone()));
        }
        Auth::Nothing => {}
    }
    let resp = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&fields))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An HTTP Basic header with the id and secret form-url-encoded first.
pub(crate) fn basic(id: &str, secret: &str) -> String {
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", form(id), form(secret)))
    )
}

/// An authorize request.
#[derive(Debug, Clone)]
pub(crate) struct Authz {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) scope: String,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    /// The PKCE verifier; the request carries its S256 challenge.
    pub(crate) verifier: Option<String>,
    /// More parameters, as given.
    pub(crate) extra: Vec<(String, String)>,
}

impl Authz {
    fn query(&self) -> Vec<(&str, String)> {
        let mut q = vec![
            ("response_type", "code".to_owned()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        let optional = [
            ("redirect_uri", self.redirect_uri.clone()),
            ("state", self.state.clone()),
            ("nonce", self.nonce.clone()),
            ("code_challenge", self.verifier.as_deref().map(challenge)),
        ];
        q.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        if self.verifier.is_some() {
            q.push(("code_challenge_method", "S256".into()));
        }
        q.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
        q
    }
}

/// A fresh PKCE verifier (64 characters of the RFC 7636 alphabet).
pub(crate) fn verifier() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The S256 challenge of a verifier.
pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An answer read whole: status, `Location` and the body text.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) location: Option<String>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        Self {
            status,
            location,
            body,
        }
    }
}

/// `application/x-www-form-urlencoded` of some pairs.
pub(crate) fn encode(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One query parameter of a URL, decoded; `None` if absent.
pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let url = Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The audiences of a token's claims (`aud` is a string or an array of them).
pub(crate) fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        other => panic!("no aud in the claims: {other}"),
    }
}

/// The claims of a compact JWT, unverified (for tests that look at one claim).
pub(crate) fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a compact JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The JOSE header of a compact JWT.
pub(crate) fn header_of(jwt: &str) -> Value {
    let header = jwt.split('.').next().expect("a compact JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

fn local(url: &str, base: &str) -> String {
    match url.strip_prefix(PUBLIC_URL) {
        Some(rest) => format!("{base}{rest}"),
        None => url.to_owned(),
    }
}

// == The relying party's HTTP client

/// The `openidconnect` crate's HTTP client: reqwest (the tests' own version), no redirects,
/// the provider's public URL mapped to the test server.
#[derive(Debug, Clone)]
pub(crate) struct RpHttp {
    client: reqwest::Client,
    base: String,
}

/// A transport failure of [`RpHttp`].
#[derive(Debug)]
pub(crate) struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

impl<'c> AsyncHttpClient<'c> for RpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let fail = |e: &dyn std::fmt::Display| HttpError(e.to_string());
            let url = local(&request.uri().to_string(), &self.base);
            let mut req = self.client.request(request.method().clone(), url);
            for (name, value) in request.headers() {
                req = req.header(name, value);
            }
            let resp = req
                .body(request.into_body())
                .send()
                .await
                .map_err(|e| fail(&e))?;
            let mut answer = openidconnect::http::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                answer = answer.header(name, value);
            }
            let body = resp.bytes().await.map_err(|e| fail(&e))?;
            answer.body(body.to_vec()).map_err(|e| fail(&e))
        })
    }
}

/// The endpoints RFC 8414 adds to discovery, which openidconnect's core metadata leaves out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MoreEndpoints {
    pub(crate) introspection_endpoint: String,
    pub(crate) revocation_endpoint: String,
    pub(crate) code_challenge_methods_supported: Vec<String>,
}

impl AdditionalProviderMetadata for MoreEndpoints {}

/// Discovery as a relying party reads it.
pub(crate) type Metadata = ProviderMetadata<
    MoreEndpoints,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Discovery by the `openidconnect` crate (it also fetches the JWKS and checks the issuer).
pub(crate) async fn discover(op: &Provider) -> Metadata {
    let issuer = IssuerUrl::new(op.issuer()).unwrap();
    Metadata::discover_async(issuer, &op.rp_http())
        .await
        .unwrap_or_else(|e| panic!("discovery failed: {e:?}"))
}
