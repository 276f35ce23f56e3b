//! The stored records. Each carries its schema version through [`Record`].
//!
//! Secrets the server only verifies appear here as keyed hashes (`*_hash`), never as values.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Record;

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
    /// Whether this is the key new tokens are signed with.
    pub current: bool,
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
}
