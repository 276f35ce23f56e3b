//! Records of the OpenID Connect provider: registered clients and the grants a login leaves
//! behind (the pending authorization request, the code, the refresh-token family).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Record;

/// A client registered to an application, beside its default client (client id = the
/// applicationUuid), which is stored here too once its redirect URIs are set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client id.
    pub client_id: String,
    /// The owning application.
    pub app: Uuid,
    /// Absolute redirect URIs, matched byte for byte.
    pub redirect_uris: Vec<String>,
    /// Keyed hash of the secret; `None` for a public client (and for the default client,
    /// which authenticates with the application's API key).
    pub secret_hash: Option<Vec<u8>>,
    /// A public client (no secret; PKCE required).
    pub public: bool,
    /// Epoch seconds.
    pub created: u64,
}

impl Record for ClientRecord {
    const KIND: &'static str = "oidc-client";
    const VERSION: u8 = 1;
}

/// One OpenID Connect grant, owned by one actor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "grant", rename_all = "snake_case")]
pub enum GrantRecord {
    /// An authorize request waiting for the user to log in (its id is the `htOidTxid`).
    Request(AuthRequestRecord),
    /// An authorization code waiting for its exchange.
    Code(CodeRecord),
    /// The refresh tokens of one code exchange.
    Family(FamilyRecord),
}

impl Record for GrantRecord {
    const KIND: &'static str = "oidc-grant";
    const VERSION: u8 = 1;
}

impl GrantRecord {
    /// Epoch seconds after which the grant is dead.
    pub fn deadline(&self) -> u64 {
        match self {
            GrantRecord::Request(r) => r.deadline,
            GrantRecord::Code(c) => c.deadline,
            GrantRecord::Family(f) => f.deadline,
        }
    }

    /// Epoch seconds after which the record may be deleted: a dead request or family is
    /// refused the same whether or not its record exists, but a used code stays a day past
    /// its deadline, so that a late replay still revokes the tokens of its first use.
    pub fn forgettable_after(&self) -> u64 {
        match self {
            GrantRecord::Code(c) => c.deadline.saturating_add(24 * 3600),
            other => other.deadline(),
        }
    }
}

/// What the authorize endpoint was asked, kept until a login finishes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthRequestRecord {
    /// The application.
    pub app: Uuid,
    /// The client.
    pub client_id: String,
    /// The checked redirect URI.
    pub redirect_uri: String,
    /// Whether the request named it (then the code exchange must name it too).
    #[serde(default)]
    pub redirect_uri_given: bool,
    /// Requested scopes, space separated.
    pub scope: String,
    /// `state`, returned as given.
    pub state: Option<String>,
    /// `nonce`, put into the ID token as given.
    pub nonce: Option<String>,
    /// The S256 PKCE challenge.
    pub code_challenge: Option<String>,
    /// `login_hint`, passed on to the login page.
    #[serde(default)]
    pub login_hint: Option<String>,
    /// Epoch seconds.
    pub created: u64,
    /// Epoch seconds.
    pub deadline: u64,
    /// A login finished it (one code per request).
    pub used: bool,
}

/// An authorization code: the request it answers and who logged in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeRecord {
    /// The request this code finishes.
    pub request: AuthRequestRecord,
    /// Keyed hash of the code's secret part.
    pub secret_hash: Vec<u8>,
    /// The user.
    pub user: Uuid,
    /// When the user proved themselves (epoch seconds).
    pub auth_time: u64,
    /// How (`amr` values, RFC 8176).
    pub amr: Vec<String>,
    /// Epoch seconds.
    pub deadline: u64,
    /// The family its exchange started; set once used, so that a second use revokes it.
    pub family: Option<String>,
    /// The device session the user signed in with; its end (logout, lock, removal, a new
    /// PIN) ends the grant. Absent in records written before grants were bound to one.
    #[serde(default)]
    pub session: Option<DeviceSession>,
}

/// A device and its session id (`sid`), as the device's own access tokens carry them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceSession {
    /// deviceUuid.
    pub device: Uuid,
    /// The session.
    pub sid: Uuid,
}

/// A refresh-token family: every rotation of one code exchange's refresh token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FamilyRecord {
    /// The application.
    pub app: Uuid,
    /// The client.
    pub client_id: String,
    /// The user.
    pub user: Uuid,
    /// Granted scopes, space separated.
    pub scope: String,
    /// When the user proved themselves.
    pub auth_time: u64,
    /// How.
    pub amr: Vec<String>,
    /// Keyed hash of the current refresh token's secret part.
    pub current_hash: Vec<u8>,
    /// Keyed hashes of earlier secrets (newest last, bounded): presenting one is reuse.
    pub previous_hashes: Vec<Vec<u8>>,
    /// Rotations so far.
    pub generation: u64,
    /// Access tokens revoked one by one: (jti, exp), dropped after exp.
    pub revoked_jtis: Vec<(Uuid, u64)>,
    /// Revoked (reuse, code replay, or RFC 7009): nothing of the family works.
    pub revoked: bool,
    /// Epoch seconds.
    pub created: u64,
    /// Epoch seconds: the family's refresh tokens stop working then.
    pub deadline: u64,
    /// As [`CodeRecord::session`].
    #[serde(default)]
    pub session: Option<DeviceSession>,
    /// Epoch seconds: when the current refresh token was issued.
    #[serde(default)]
    pub rotated_at: u64,
    /// The current refresh token came from a retry of a lost refresh: the token it replaced
    /// gets no retry of its own.
    #[serde(default)]
    pub retried: bool,
}
