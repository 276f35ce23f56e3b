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
