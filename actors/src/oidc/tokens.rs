//! The provider's documents and tokens, built with openidconnect's types: discovery, JWKS,
//! ID tokens, userinfo; and the access tokens it issues (JWTs on the application's
//! access-token key, tied to a refresh-token family so that revocation reaches them).

use chrono::{DateTime, Utc};
use openidconnect::{
    AccessToken, AdditionalProviderMetadata, Audience, AuthUrl, AuthenticationContextClass,
    AuthenticationMethodReference, ClientId, EmptyAdditionalClaims, EndUserEmail, EndUserUsername,
    IssuerUrl, JsonWebKeySetUrl, Nonce, ProviderMetadata, ResponseTypes, Scope, StandardClaims,
    SubjectIdentifier, TokenUrl, UserInfoUrl,
    core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
        CoreIdToken, CoreIdTokenClaims, CoreJsonWebKey, CoreJsonWebKeySet,
        CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
        CoreResponseType, CoreSubjectIdentifierType, CoreUserInfoClaims,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{Application, Error, Result, UserView};

/// Claims of an access token the provider issues to a client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ClientAccessClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: String,
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
    pub(crate) jti: Uuid,
    /// The refresh-token family (the grant) the token belongs to.
    pub(crate) gid: String,
}

/// How a user proved themselves, for `acr` and `amr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A PIN on an activated device holding its one-time authKey.
    DevicePin,
    /// A device made passwordless (`pinlessDevice`): the device key alone.
    Device,
    /// A one-time token delivered out of band (activation, PIN reset) and a new PIN.
    DeliveredToken,
}

impl Proof {
    /// RFC 8176 method references.
    pub(crate) fn amr(self) -> Vec<String> {
        let methods: &[&str] = match self {
            Proof::DevicePin => &["pin", "swk", "mfa"],
            Proof::Device => &["swk"],
            Proof::DeliveredToken => &["otp", "pin"],
        };
        methods.iter().map(|m| (*m).to_owned()).collect()
    }

    /// The authentication context class, from the method references.
    pub(crate) fn acr(amr: &[String]) -> &'static str {
        if amr.iter().any(|m| m == "mfa") {
            "urn:latchkey:acr:device-pin"
        } else if amr.iter().any(|m| m == "otp") {
            "urn:latchkey:acr:delivered-token"
        } else {
            "urn:latchkey:acr:device"
        }
    }
}

/// What an ID token says beyond the issuer and the keys.
#[derive(Debug, Clone)]
pub(crate) struct IdTokenFacts<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) user: Uuid,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) auth_time: u64,
    pub(crate) amr: &'a [String],
    pub(crate) access_token: &'a str,
    pub(crate) now: u64,
}

/// Signs an ID token with the application's ID-token key (RS256 by default).
pub(crate) fn id_token(app: &Application, facts: &IdTokenFacts<'_>) -> Result<String> {
    let issuer = IssuerUrl::new(app.issuer.clone()).map_err(Error::internal)?;
    let claims = CoreIdTokenClaims::new(
        issuer,
        vec![Audience::new(facts.client_id.to_owned())],
        time(facts.now + app.settings.id_token_ttl_secs),
        time(facts.now),
        StandardClaims::new(SubjectIdentifier::new(facts.user.to_string())),
        EmptyAdditionalClaims {},
    )
    .set_nonce(facts.nonce.map(|n| Nonce::new(n.to_owned())))
    .set_auth_time(Some(time(facts.auth_time)))
    .set_auth_method_refs(Some(
        facts
            .amr
            .iter()
            .map(|m| AuthenticationMethodReference::new(m.clone()))
            .collect(),
    ))
    .set_auth_context_ref(Some(AuthenticationContextClass::new(
        Proof::acr(facts.amr).to_owned(),
    )))
    .set_authorized_party(Some(ClientId::new(facts.client_id.to_owned())));

    let key = app.keys.id_token_key();
    let access = AccessToken::new(facts.access_token.to_owned());
    let token = CoreIdToken::new(claims, key.as_ref(), key.core_alg(), Some(&access), None)
        .map_err(Error::internal)?;
    Ok(token.to_string())
}

/// The userinfo answer: `sub` always, the name and e-mail when their scopes were granted.
/// `email_verified` is claimed only when the application sends its tokens by e-mail: a user
/// then proved the address by activating with what was sent to it. A back end that delivers
/// tokens itself, or a webhook, proves nothing about the address, and a relying party that
/// links accounts by verified e-mail must not be told otherwise.
pub(crate) fn userinfo(user: &UserView, scope: &str, mails_tokens: bool) -> Result<Value> {
    let has = |s: &str| scope.split(' ').any(|granted| granted == s);
    let mut standard = StandardClaims::new(SubjectIdentifier::new(user.user_uuid.to_string()));
    if has("profile") {
        standard =
            standard.set_preferred_username(Some(EndUserUsername::new(user.username.clone())));
    }
    if has("email") {
        // Limitation: an address changed through the admin API after activation still counts
        // as verified when the application mails its tokens.
        standard = standard
            .set_email(Some(EndUserEmail::new(user.email.clone())))
            .set_email_verified(Some(mails_tokens));
    }
    serde_json::to_value(CoreUserInfoClaims::new(standard, EmptyAdditionalClaims {}))
        .map_err(Error::internal)
}

/// Endpoints RFC 8414 names that openidconnect's core metadata leaves out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExtraMetadata {
    introspection_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    authorization_response_iss_parameter_supported: bool,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
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

/// The discovery document of an application's issuer.
pub(crate) fn discovery(app: &Application) -> Result<Value> {
    let at = |path: &str| format!("{}/{path}", app.issuer);
    let bad = |_| Error::Internal("the issuer URL does not parse".into());
    let confidential = vec![
        "client_secret_basic".to_owned(),
        "client_secret_post".into(),
    ];
    // A public client may revoke its own tokens but not introspect: it holds no secret.
    let mut any_client = confidential.clone();
    any_client.push("none".into());
    let extra = ExtraMetadata {
        introspection_endpoint: at("introspect"),
        revocation_endpoint: at("revoke"),
        introspection_endpoint_auth_methods_supported: confidential,
        revocation_endpoint_auth_methods_supported: any_client,
        code_challenge_methods_supported: vec!["S256".into()],
        authorization_response_iss_parameter_supported: true,
    };
    let metadata = Metadata::new(
        IssuerUrl::new(app.issuer.clone()).map_err(bad)?,
        AuthUrl::new(at("auth")).map_err(bad)?,
        JsonWebKeySetUrl::new(at("jwks")).map_err(bad)?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![app.keys.id_token_key().core_alg()],
        extra,
    )
    .set_token_endpoint(Some(TokenUrl::new(at("token")).map_err(bad)?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(at("userinfo")).map_err(bad)?))
    .set_scopes_supported(Some(
        ["openid", "profile", "email", "offline_access"]
            .map(|s| Scope::new(s.into()))
            .to_vec(),
    ))
    .set_response_modes_supported(Some(vec![CoreResponseMode::Query]))
    .set_grant_types_supported(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
    ]))
    .set_token_endpoint_auth_methods_supported(Some(vec![
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
        CoreClientAuthMethod::None,
    ]))
    .set_claims_supported(Some(
        [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "azp",
            "preferred_username",
            "email",
            "email_verified",
        ]
        .map(|c| CoreClaimName::new(c.into()))
        .to_vec(),
    ))
    .set_claims_parameter_supported(Some(false))
    .set_request_parameter_supported(Some(false))
    .set_request_uri_parameter_supported(Some(false));
    serde_json::to_value(&metadata).map_err(Error::internal)
}

/// The JWK set of an application: every key a relying party may still need.
pub(crate) fn jwks(app: &Application, now: u64) -> Result<Value> {
    let keep = app.settings.key_keep_secs();
    let keys = app
        .keys
        .published(now, keep)
        .map(|k| k.core_jwk().clone())
        .collect();
    serde_json::to_value(CoreJsonWebKeySet::new(keys)).map_err(Error::internal)
}

fn time(epoch: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::try_from(epoch).unwrap_or(i64::MAX), 0).unwrap_or_default()
}
