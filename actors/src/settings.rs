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
    /// Signing algorithm of access tokens.
    pub jwt_algorithm: JwtAlgorithm,
    /// How tokens and OTPs reach users; by default they are returned to the back end.
    pub delivery: DeliverySettings,
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
            jwt_algorithm: JwtAlgorithm::ES256,
            delivery: DeliverySettings::default(),
        }
    }
}
