//! Per-application settings, with the contract's defaults.

mod delivery;

use serde::{Deserialize, Serialize};

pub use delivery::{
    Channel, DeliverySettings, OtpTemplates, SecretText, SmtpSettings, SmtpTls, Template,
    Templates, WebhookSettings,
};

/// Signing algorithm for access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// ECDSA P-256: the cheapest widely supported signature, so the default.
    #[default]
    ES256,
    /// ECDSA P-384, for clients that pin the original's choice.
    ES384,
    /// Ed25519.
    EdDSA,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048-bit keys.
    RS256,
}

impl JwtAlgorithm {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
            JwtAlgorithm::RS256 => "RS256",
        }
    }

    /// Parses a JOSE name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::ES256, Self::ES384, Self::EdDSA, Self::RS256]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// Lockout counts and periods, token lifetimes, the JWT algorithm and the delivery channel of
/// one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    /// Wrong PINs in a row that lock a device.
    pub max_failed_logins: u32,
    /// How long that lock lasts, in seconds.
    pub lock_period_secs: u64,
    /// Bad reset-PIN tokens that block forgot/reset on a device.
    pub max_bad_reset_tokens: u32,
    /// How long that block lasts, in seconds.
    pub reset_block_secs: u64,
    /// Lifetime of an activation token, in seconds.
    pub activation_token_ttl_secs: u64,
    /// Lifetime of a reset-PIN token, in seconds.
    pub reset_token_ttl_secs: u64,
    /// Wrong tries an activation or reset token survives.
    pub token_attempts: u32,
    /// Digits of activation and reset tokens.
    pub token_digits: u32,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a one-time PIN, in seconds.
    pub otp_ttl_secs: u64,
    /// Wrong tries a one-time PIN survives.
    pub otp_attempts: u32,
    /// Digits of a one-time PIN.
    pub otp_digits: u32,
    /// Where IAM requestor tokens are checked; without it, requestors must hold a Latchkey
    /// access token of a user with the `iam-admin` role.
    pub iam: IamSettings,
    /// Signing algorithm of access tokens.
    pub jwt_algorithm: JwtAlgorithm,
    /// How tokens and OTPs reach users; by default they are returned to the back end.
    pub delivery: DeliverySettings,
    /// Whether the built-in login page may sign new users up; unset: on for the default
    /// application the server creates at first start, off for the others.
    pub open_signup: Option<bool>,
    /// The application's own login page for OpenID Connect; unset: the built-in one.
    pub oidc_login_url: Option<String>,
    /// How long an authorize request waits for the user to log in, in seconds.
    pub oidc_request_ttl_secs: u64,
    /// Lifetime of an authorization code, in seconds.
    pub authorization_code_ttl_secs: u64,
    /// Lifetime of an ID token, in seconds.
    pub id_token_ttl_secs: u64,
    /// Lifetime of a refresh-token family from its code exchange, in seconds (rotation does
    /// not extend it).
    pub refresh_token_ttl_secs: u64,
    /// Seconds after a refresh during which the refresh token it replaced may be presented
    /// once more (a client retrying a refresh whose answer was lost) and rotate again instead
    /// of revoking the grant. 0 (default): any reuse revokes.
    pub refresh_token_reuse_grace_secs: u64,
}

impl AppSettings {
    /// Checks that the settings can work: a value outside these ranges would make tokens
    /// impossible to use or locks impossible to end.
    ///
    /// # Errors
    ///
    /// A message naming the first setting out of range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let checks: [(&str, bool); 10] = [
            (
                "token_digits must be 4 to 12",
                (4..=12).contains(&self.token_digits),
            ),
            (
                "otp_digits must be 4 to 12",
                (4..=12).contains(&self.otp_digits),
            ),
            (
                "token_attempts must be at least 1",
                self.token_attempts >= 1,
            ),
            ("otp_attempts must be at least 1", self.otp_attempts >= 1),
            (
                "max_failed_logins must be at least 1",
                self.max_failed_logins >= 1,
            ),
            (
                "max_bad_reset_tokens must be at least 1",
                self.max_bad_reset_tokens >= 1,
            ),
            (
                "token lifetimes must be at least 1 second",
                [
                    self.activation_token_ttl_secs,
                    self.reset_token_ttl_secs,
                    self.access_token_ttl_secs,
                    self.otp_ttl_secs,
                    self.oidc_request_ttl_secs,
                    self.authorization_code_ttl_secs,
                    self.id_token_ttl_secs,
                    self.refresh_token_ttl_secs,
                ]
                .iter()
                .all(|t| *t >= 1),
            ),
            (
                "refresh_token_reuse_grace_secs must be at most 300",
                self.refresh_token_reuse_grace_secs <= 300,
            ),
            (
                "authorization_code_ttl_secs must be at most 600 (RFC 6749 4.1.2)",
                self.authorization_code_ttl_secs <= 600,
            ),
            (
                "oidc_login_url must be an absolute http(s) URL",
                self.oidc_login_url.as_deref().is_none_or(|u| {
                    url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                }),
            ),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((message, _)) => Err((*message).to_owned()),
            None => Ok(()),
        }
    }
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            max_failed_logins: 3,
            lock_period_secs: 300,
            max_bad_reset_tokens: 3,
            reset_block_secs: 24 * 3600,
            activation_token_ttl_secs: 24 * 3600,
            reset_token_ttl_secs: 3600,
            token_attempts: 5,
            token_digits: 6,
            access_token_ttl_secs: 900,
            otp_ttl_secs: 300,
            otp_attempts: 5,
            otp_digits: 6,
            iam: IamSettings::default(),
            jwt_algorithm: JwtAlgorithm::ES256,
            delivery: DeliverySettings::default(),
            open_signup: None,
            oidc_login_url: None,
            oidc_request_ttl_secs: 1800,
            authorization_code_ttl_secs: 60,
            id_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_token_reuse_grace_secs: 0,
        }
    }
}

impl AppSettings {
    /// How long a retired signing key must keep verifying: the longest lifetime of a token
    /// it may have signed, plus a minute for clock skew.
    pub fn key_keep_secs(&self) -> u64 {
        self.access_token_ttl_secs.max(self.id_token_ttl_secs) + 60
    }
}

/// How IAM requestor tokens are checked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IamSettings {
    /// RFC 7662 introspection endpoint; `None` means Latchkey's own tokens and roles.
    pub introspection_url: Option<String>,
    /// Client id for introspection (HTTP Basic), if the endpoint wants one.
    pub introspection_client_id: Option<String>,
    /// Client secret for introspection.
    pub introspection_client_secret: Option<String>,
    /// Introspection timeout, in milliseconds.
    pub introspection_timeout_ms: u64,
    /// How long an introspection answer is reused, in seconds.
    pub introspection_cache_secs: u64,
}

impl Default for IamSettings {
    fn default() -> Self {
        Self {
            introspection_url: None,
            introspection_client_id: None,
            introspection_client_secret: None,
            introspection_timeout_ms: 2000,
            introspection_cache_secs: 30,
        }
    }
}

impl std::fmt::Debug for IamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamSettings")
            .field("introspection_url", &self.introspection_url)
            .field("introspection_client_id", &self.introspection_client_id)
            .field(
                "introspection_client_secret",
                &self
                    .introspection_client_secret
                    .as_ref()
                    .map(|_| "[redacted]"),
            )
            .finish()
    }
}
