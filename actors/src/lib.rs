//! Latchkey's domain: users, devices, credentials and pending sessions, each owned by an
//! actor that persists its state before it answers.
//!
//! # Layout
//!
//! - [`Engine`]: the entry point the HTTP façade calls; it routes a request to its actor and
//!   signs tokens.
//! - `user`: the UserActor (login and lockout, activation, PIN reset, device management).
//! - `session`: the SessionActor (one-time tokens with deadlines and attempt limits).
//! - `directory`: supervisors that spawn, find, passivate and respawn those actors.
//! - [`KeyRing`]: signing keys of an application; [`apps`]: the application registry.
//! - `notifier`: the NotifierActor, which delivers tokens and OTPs by e-mail or webhook from a
//!   durable outbox, with retries.
//! - [`Username`], [`HashedPin`]: validated inputs; `crypto`: keyed hashes and randomness.
//! - [`Clock`]: the single reader of wall-clock time.
//! - [`audit`]: the audit log's entries, written without waiting, and its tail.
//! - `oidc`: the OpenID Connect provider; each authorize request, code and refresh-token
//!   family is a GrantActor.
//!
//! Nothing here knows about HTTP.

pub mod apps;
pub mod audit;
mod clock;
mod context;
mod crypto;
mod directory;
mod engine;
mod error;
mod iam;
mod input;
mod keyring;
mod notifier;
mod oidc;
mod otp;
mod session;
mod settings;
mod user;

pub use apps::{Application, SettingsTable};
pub use audit::{Audit, AuditEvent, AuditKind};
pub use clock::Clock;
pub use crypto::Secrets;
pub use engine::{
    Activation, Engine, EngineOptions, LoginRequest, Principal, PublicKeyInfo, SignUp, Tokens,
};
pub use error::{Error, Result};
pub use iam::{IAM_ADMIN, Requestor, UserRef};
pub use input::{HashedPin, Username, parse_code};
pub use keyring::{AccessClaims, KeyRing, SigningKey};
pub use latchkey_storage::{
    Durability, StoreStats,
    records::{AuditOutcome, AuditRecord},
};
pub use oidc::{
    AuthorizeError, AuthorizeParams, ClientAuth, CodeIssued, LoginContext, MAX_PARAM_BYTES,
    OAuthError, OidcLogin, Proof, TokenParams, TokenResponse,
};
pub use otp::{IssuedOtp, OtpSubject, PendingOtp};
pub use settings::{
    AppSettings, Channel, DeliverySettings, JwtAlgorithm, OtpTemplates, SecretText, SmtpSettings,
    SmtpTls, Template, Templates, WebhookSettings,
};
pub use user::{AdminUserPatch, DevicePatch, DeviceView, UserPatch, UserView};
