//! The stored records. Each carries its schema version through [`Record`].
//!
//! Secrets the server only verifies appear here as keyed hashes (`*_hash`), never as values.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Record;

mod oidc;

pub use oidc::{
    AuthRequestRecord, ClientRecord, CodeRecord, DeviceSession, FamilyRecord, GrantRecord,
};

/// Server-wide keys for keyed hashes, generated at first start. Key `"secrets"` in `Meta`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerSecrets {
    /// HMAC key for PIN hashes, authKeys and one-time tokens.
    pub credential_key: Vec<u8>,
    /// HMAC key for application API keys.
    pub api_key_key: Vec<u8>,
}

impl Record for ServerSecrets {
    const KIND: &'static str = "server-secrets";
    const VERSION: u8 = 1;
}

/// An application: a tenant with its own users, keys and API key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRecord {
    /// The applicationUuid.
    pub uuid: Uuid,
    /// A display name.
    pub name: String,
    /// Keyed hash of the API key.
    pub api_key_hash: Vec<u8>,
    /// Epoch seconds.
    pub created: u64,
    /// Whether the built-in login page may sign new users up (configuration can override).
    #[serde(default)]
    pub open_signup: bool,
}

impl Record for AppRecord {
    const KIND: &'static str = "application";
    const VERSION: u8 = 1;
}

/// A user of one application. Devices are separate records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    /// The userUuid.
    pub uuid: Uuid,
    /// The owning application.
    pub app: Uuid,
    /// The username as first given.
    pub username: String,
    /// The matching key of the username (NFKC, lower case), as in the username index.
    pub username_key: String,
    /// E-mail address.
    pub email: String,
    /// Mobile number, if given.
    pub mobile_number: Option<String>,
    /// Whether a first device has been activated.
    pub active: bool,
    /// Locked by an administrator.
    pub locked: bool,
    /// Whether new devices may be added.
    pub forbid_adding_devices: bool,
    /// Roles such as `iam-admin`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Epoch seconds.
    pub created: u64,
    /// Epoch seconds of the last successful login of any device.
    pub last_login: Option<u64>,
}

impl Record for UserRecord {
    const KIND: &'static str = "user";
    const VERSION: u8 = 1;
}

/// One device of a user, with its credentials and counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The deviceUuid.
    pub uuid: Uuid,
    /// The owning user.
    pub user: Uuid,
    /// Display name.
    pub name: String,
    /// Activated (has credentials).
    pub active: bool,
    /// Keyed hash of the hashedPin; `None` for a pinless or not yet activated device.
    pub pin_hash: Option<Vec<u8>>,
    /// Keyed hash of the current authKey.
    pub auth_key_hash: Option<Vec<u8>>,
    /// Id of the current auth-key record.
    pub auth_key_uuid: Option<Uuid>,
    /// The current login session (what its JWTs carry as `sid`); `None` after logout.
    pub sid: Option<Uuid>,
    /// Consecutive wrong PINs.
    pub failed_logins: u32,
    /// Temporarily locked until this epoch second.
    pub locked_until: Option<u64>,
    /// Locked by its user.
    pub user_locked: bool,
    /// Locked by an administrator.
    pub admin_locked: bool,
    /// Consecutive bad reset-PIN tokens.
    pub bad_reset_tokens: u32,
    /// Forgot/reset PIN blocked until this epoch second.
    pub reset_blocked_until: Option<u64>,
    /// Epoch seconds.
    pub created: u64,
    /// Epoch seconds of the last successful login.
    pub last_login: Option<u64>,
}

impl Record for DeviceRecord {
    const KIND: &'static str = "device";
    const VERSION: u8 = 1;
}

/// What a pending session is for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// The activation token of a new user's first device.
    ActivateUser,
    /// The activation token of an added device.
    ActivateDevice,
    /// A reset-PIN token.
    ResetPin,
    /// A one-time PIN of a user for one purpose.
    Otp,
    /// A one-time PIN bound only to its otpUuid (no user).
    AnonymousOtp,
}

/// A pending flow with a deadline and an attempt count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id (also its key).
    pub id: String,
    /// What it is for.
    pub kind: SessionKind,
    /// The owning application.
    pub app: Uuid,
    /// The user it is bound to.
    pub user: Uuid,
    /// The device it is bound to, if any.
    pub device: Option<Uuid>,
    /// Keyed hash of the secret.
    pub secret_hash: Vec<u8>,
    /// Epoch seconds.
    pub created: u64,
    /// Epoch seconds after which it is dead.
    pub deadline: u64,
    /// Wrong tries so far.
    pub attempts: u32,
    /// Wrong tries allowed.
    pub max_attempts: u32,
    /// Used: kept as a tombstone until the deadline, so a second use is recognised.
    pub used: bool,
    /// What a one-time PIN is for.
    #[serde(default)]
    pub purpose: Option<String>,
    /// The public id of a one-time PIN.
    #[serde(default)]
    pub otp_uuid: Option<Uuid>,
}

impl Record for SessionRecord {
    const KIND: &'static str = "session";
    const VERSION: u8 = 1;
}

/// A JWT signing key of one application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// The owning application.
    pub app: Uuid,
    /// The `kid`.
    pub kid: String,
    /// JOSE algorithm name (`ES256`, `ES384`, `EdDSA`, `RS256`).
    pub alg: String,
    /// PKCS#8 DER of the private key.
    // Limitation: signing keys are stored unencrypted in the data directory; protect it like
    // any private-key file.
    pub pkcs8: Vec<u8>,
    /// Epoch seconds.
    pub created: u64,
    /// Whether this is the key new tokens of its algorithm are signed with.
    pub current: bool,
    /// When a rotation replaced it; it keeps verifying (and stays in the JWKS) until every
    /// token it signed has expired.
    #[serde(default)]
    pub retired: Option<u64>,
}

impl Record for KeyRecord {
    const KIND: &'static str = "signing-key";
    const VERSION: u8 = 1;
}

/// Whether an audited operation succeeded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It did what was asked.
    Success,
    /// It was refused or failed; the entry's `code` says why.
    Failure,
}

/// One entry of the audit log: who did what to which user or device, and how it ended.
///
/// IMPORTANT: no field ever holds a secret (PIN hash, authKey, token, OTP, API key) or an
/// e-mail address: entries carry ids, names of events and contract codes only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// Epoch seconds, from the engine's clock.
    pub time: u64,
    /// The application.
    pub app: Uuid,
    /// What happened, e.g. `login_succeeded`, `device_locked_out`.
    pub event: String,
    /// The user, when known (an unknown username has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    /// The device, when the event concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Uuid>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The contract's error code of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Who asked, for back-office calls: an id, never an e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requestor: Option<String>,
    /// Further non-secret details (e.g. `purpose`, `changed`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
}

impl Record for AuditRecord {
    const KIND: &'static str = "audit-entry";
    const VERSION: u8 = 1;
}

/// The way a queued message leaves the server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxChannel {
    /// E-mail through the application's SMTP relay.
    Smtp,
    /// A signed HTTP POST to the application's webhook.
    Webhook,
}

/// What a queued message is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// The activation token of a new user.
    Activation,
    /// The activation token of an added device.
    DeviceActivation,
    /// A reset-PIN token.
    ResetPin,
    /// A one-time PIN.
    Otp,
    /// A Silent MFA verification link.
    MagicLink,
    /// A notice that someone tried to sign up with a taken username (no secret).
    AccountExists,
}

/// A queued message, rendered once at enqueue time so that every try sends the same bytes.
/// Its `Debug` output shows only the format: the text carries the code.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum OutboxPayload {
    /// A plain-text e-mail.
    Email {
        /// The subject line.
        subject: String,
        /// The text body.
        body: String,
    },
    /// A webhook event: the exact JSON body that is signed and posted.
    Webhook {
        /// The JSON text.
        event: String,
    },
}

/// A message waiting for delivery. Key: `id` (UUIDv7) in `Outbox`.
///
/// The record is deleted as soon as the message is delivered or given up.
// Limitation: the payload holds the one-time token or OTP in plaintext until then (a message
// delivered later must carry it); anyone who reads the data directory in that window can read
// the pending codes. Protect the directory like the signing keys.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxRecord {
    /// A UUIDv7, so that the outbox scans in the order messages were queued.
    pub id: Uuid,
    /// The application whose settings say how to deliver it.
    pub app: Uuid,
    /// SMTP or webhook.
    pub channel: OutboxChannel,
    /// What it is about (for logs and metrics).
    pub kind: OutboxKind,
    /// The e-mail address it goes to; `None` for a webhook event.
    pub recipient: Option<String>,
    /// The rendered message.
    pub payload: OutboxPayload,
    /// Failed tries so far.
    pub attempts: u32,
    /// Epoch seconds of the next try.
    pub next_attempt: u64,
    /// Epoch seconds when it was queued.
    pub created: u64,
}

impl std::fmt::Debug for OutboxPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboxPayload::Email { .. } => f.write_str("Email([redacted])"),
            OutboxPayload::Webhook { .. } => f.write_str("Webhook([redacted])"),
        }
    }
}

impl std::fmt::Debug for OutboxRecord {
    // The recipient and the payload (which carries the code) never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRecord")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("channel", &self.channel)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .field("next_attempt", &self.next_attempt)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Record for OutboxRecord {
    const KIND: &'static str = "outbox";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first released audit format, as bytes on disk: later builds must keep reading it.
    const AUDIT_V1: &[u8] =
        b"\x01{\"time\":1700000000,\"app\":\"0190a3f2-0000-7000-8000-000000000001\",\
\"event\":\"login_failed\",\"device\":\"0190a3f2-0000-7000-8000-000000000002\",\
\"outcome\":\"failure\",\"code\":\"AN-AUTH-1006\",\"fields\":{\"reason\":\"wrong_pin\"}}";

    #[test]
    fn the_first_audit_format_still_decodes() {
        let entry = AuditRecord::decode(AUDIT_V1).unwrap();
        assert_eq!(entry.event, "login_failed");
        assert_eq!(entry.user, None);
        assert_eq!(entry.outcome, AuditOutcome::Failure);
        assert_eq!(entry.code.as_deref(), Some("AN-AUTH-1006"));
        assert_eq!(entry.fields["reason"], "wrong_pin");
        assert_eq!(
            AuditRecord::decode(&entry.encode().unwrap()).unwrap(),
            entry
        );
    }
    fn outbox() -> OutboxRecord {
        OutboxRecord {
            id: Uuid::now_v7(),
            app: Uuid::new_v4(),
            channel: OutboxChannel::Smtp,
            kind: OutboxKind::ResetPin,
            recipient: Some("someone@example.test".into()),
            payload: OutboxPayload::Email {
                subject: "Reset".into(),
                body: "code 493021".into(),
            },
            attempts: 2,
            next_attempt: 1_700_000_100,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn an_outbox_record_survives_encoding() {
        let record = outbox();
        let back = OutboxRecord::decode(&record.encode().unwrap()).unwrap();
        assert_eq!(back, record);
        let webhook = OutboxRecord {
            channel: OutboxChannel::Webhook,
            recipient: None,
            payload: OutboxPayload::Webhook {
                event: r#"{"type":"otp"}"#.into(),
            },
            ..record
        };
        assert_eq!(
            OutboxRecord::decode(&webhook.encode().unwrap()).unwrap(),
            webhook
        );
    }

    #[test]
    fn debug_output_of_an_outbox_record_hides_the_address_and_the_code() {
        let shown = format!("{:?}", outbox());
        assert!(!shown.contains("someone@example.test"), "{shown}");
        assert!(!shown.contains("493021"), "{shown}");
    }
}
