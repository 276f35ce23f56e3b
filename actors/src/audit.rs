//! The audit log: security events (sign-up, activation, logins, lockouts, resets, changes to
//! users and devices) appended to their own keyspace, and read back by `latchkey audit tail`.
//!
//! An entry names ids, an event, an outcome and a contract code; never a secret, PIN hash,
//! token, OTP or e-mail address. Deciding *when* something is worth an entry belongs to the
//! callers (engine, actors, later the IAM routes); this module only builds and writes entries.
//!
//! # Durability trade-off
//!
//! [`Audit::record`] hands its entry to the group-commit writer and returns without waiting
//! (`Store::submit`): an audit write never adds an fsync wait to a login, nor an fsync of its
//! own to the disk's load. The writer is FIFO, so the entry is applied in order with the
//! writes around it and becomes durable with the next fsync that some waiting write asks for,
//! or about 100 ms after the writer falls idle. The price: an entry recorded after its
//! operation was acknowledged can be lost if the machine (not just the process) dies in that
//! window, and a store that refuses writes (poisoned) loses entries silently here, because
//! the writer has already logged the failure that poisoned it.

use std::{collections::BTreeMap, sync::Arc};

use latchkey_storage::{
    Batch, Durability, Record, Space, Store, pair_key,
    records::{AuditOutcome, AuditRecord},
};
use uuid::Uuid;

use crate::{Clock, Error, Result};

/// What happened. Stored by name, so entries stay readable when variants are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditKind {
    /// A user signed up (or was refused, e.g. a taken username).
    SignUp,
    /// A pending device was added to a user.
    DeviceAdded,
    /// A user's first device or an added device was activated with its token.
    Activation,
    /// A login succeeded.
    LoginSucceeded,
    /// A login was refused; the code says why.
    LoginFailed,
    /// Wrong PINs locked a device for the lock period.
    DeviceLockedOut,
    /// A reset-PIN token was requested.
    PinResetRequested,
    /// A PIN reset with a token (succeeded or refused).
    PinReset,
    /// Bad reset tokens blocked forgot/reset on a device for the block period.
    ResetBlocked,
    /// A device was renamed, locked or unlocked.
    DeviceChanged,
    /// A device was removed.
    DeviceDeleted,
    /// A user's details changed.
    UserChanged,
    /// A user was deleted.
    UserDeleted,
    /// A device session ended.
    Logout,
    /// A one-time PIN was issued (never the code itself).
    OtpIssued,
    /// A one-time PIN was validated.
    OtpUsed,
    /// A one-time PIN was refused (wrong, expired, used, out of tries); the code says which.
    OtpFailed,
    /// A back-office (IAM) call, with its requestor.
    IamCall,
    /// An OpenID Connect authorization code was exchanged for tokens.
    OidcCodeExchanged,
    /// An OpenID Connect grant was revoked (`reason`: code_replay, refresh_reuse, revocation).
    OidcGrantRevoked,
}

impl AuditKind {
    /// The event's stored name.
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::SignUp => "sign_up",
            AuditKind::DeviceAdded => "device_added",
            AuditKind::Activation => "activation",
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::DeviceLockedOut => "device_locked_out",
            AuditKind::PinResetRequested => "pin_reset_requested",
            AuditKind::PinReset => "pin_reset",
            AuditKind::ResetBlocked => "reset_blocked",
            AuditKind::DeviceChanged => "device_changed",
            AuditKind::DeviceDeleted => "device_deleted",
            AuditKind::UserChanged => "user_changed",
            AuditKind::UserDeleted => "user_deleted",
            AuditKind::Logout => "logout",
            AuditKind::OtpIssued => "otp_issued",
            AuditKind::OtpUsed => "otp_used",
            AuditKind::OtpFailed => "otp_failed",
            AuditKind::IamCall => "iam_call",
            AuditKind::OidcCodeExchanged => "oidc_code_exchanged",
            AuditKind::OidcGrantRevoked => "oidc_grant_revoked",
        }
    }
}

/// An entry being built. Only ids, names and codes go in: the setters take no free text
/// except [`AuditEvent::field`] and [`AuditEvent::requestor`], whose callers must pass
/// non-secret values.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    app: Uuid,
    kind: AuditKind,
    user: Option<Uuid>,
    device: Option<Uuid>,
    outcome: AuditOutcome,
    code: Option<&'static str>,
    requestor: Option<String>,
    fields: BTreeMap<String, String>,
}

impl AuditEvent {
    /// A successful `kind` in application `app`.
    pub fn success(app: Uuid, kind: AuditKind) -> Self {
        Self {
            app,
            kind,
            user: None,
            device: None,
            outcome: AuditOutcome::Success,
            code: None,
            requestor: None,
            fields: BTreeMap::new(),
        }
    }

    /// A refused or failed `kind`, with the contract code of `err`.
    pub fn failure(app: Uuid, kind: AuditKind, err: &Error) -> Self {
        Self {
            outcome: AuditOutcome::Failure,
            code: Some(err.code()),
            ..Self::success(app, kind)
        }
    }

    /// Success or failure, after `result`.
    pub fn of<T>(app: Uuid, kind: AuditKind, result: &Result<T>) -> Self {
        match result {
            Ok(_) => Self::success(app, kind),
            Err(err) => Self::failure(app, kind, err),
        }
    }

    /// The user concerned.
    pub fn user(self, user: impl Into<Option<Uuid>>) -> Self {
        Self {
            user: user.into().or(self.user),
            ..self
        }
    }

    /// The device concerned.
    pub fn device(self, device: impl Into<Option<Uuid>>) -> Self {
        Self {
            device: device.into().or(self.device),
            ..self
        }
    }

    /// Who asked, for back-office calls: a userUuid or an introspected subject id, never an
    /// e-mail address.
    pub fn requestor(mut self, requestor: impl Into<String>) -> Self {
        self.requestor = Some(requestor.into());
        self
    }

    /// A further detail. Never a secret, token, OTP or e-mail address.
    pub fn field(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Names the fields a change set (`changed = "email,mobileNumber"`), never their values.
    pub fn changed(self, fields: &[(&'static str, bool)]) -> Self {
        let set: Vec<&str> = fields
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect();
        self.field("changed", set.join(","))
    }

    fn into_record(self, time: u64) -> AuditRecord {
        AuditRecord {
            time,
            app: self.app,
            event: self.kind.name().to_owned(),
            user: self.user,
            device: self.device,
            outcome: self.outcome,
            code: self.code.map(str::to_owned),
            requestor: self.requestor,
            fields: self.fields,
        }
    }
}

/// Writes audit entries. Cheap to clone; shared through the engine's context.
// Limitation: entries are never pruned; the audit keyspace grows by a few hundred bytes per
// event (two per login) for as long as the data directory lives.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
    clock: Clock,
}

impl Audit {
    pub(crate) fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Appends `event` without waiting for it to be durable (see the module doc for why, and
    /// what that costs).
    pub fn record(&self, event: AuditEvent) {
        let kind = event.kind;
        let record = event.into_record(self.clock.now());
        // The same entry on the `audit` log target, for operators who follow logs instead
        // (`LATCHKEY_LOG=info,audit=debug`); debug, because it fires on every login.
        tracing::debug!(
            target: "audit",
            event = kind.name(),
            app_id = %record.app,
            user_id = record.user.map(|u| u.to_string()),
            device_id = record.device.map(|d| d.to_string()),
            outcome = ?record.outcome,
            code = record.code.as_deref(),
        );
        // Uuid v7 ids are ordered by creation within the process, so an application's
        // entries sort oldest first under its prefix.
        let key = pair_key(record.app, Uuid::now_v7());
        let mut batch = Batch::new();
        if let Err(err) = batch.put(Space::Audit, key, &record) {
            tracing::warn!(err = ?err, event = kind.name(), "audit entry not encoded");
            return;
        }
        self.store.submit(batch);
    }

    /// Records `kind` for `user` and `device` with the outcome of `result`.
    pub(crate) fn outcome<T>(
        &self,
        app: Uuid,
        kind: AuditKind,
        user: impl Into<Option<Uuid>>,
        device: impl Into<Option<Uuid>>,
        result: &Result<T>,
    ) {
        self.record(AuditEvent::of(app, kind, result).user(user).device(device));
    }

    /// Records a login's outcome, and the lockout when this failure started one.
    pub(crate) fn login<T>(&self, app: Uuid, user: Option<Uuid>, device: Uuid, res: &Result<T>) {
        let kind = match res {
            Ok(_) => AuditKind::LoginSucceeded,
            Err(_) => AuditKind::LoginFailed,
        };
        self.record(AuditEvent::of(app, kind, res).user(user).device(device));
        if let Err(err @ Error::NowLocked(secs)) = res {
            let locked = AuditEvent::failure(app, AuditKind::DeviceLockedOut, err)
                .user(user)
                .device(device)
                .field("lock_secs", secs.to_string());
            self.record(locked);
        }
    }
}

/// Opens the data directory of a stopped server, reads its [`tail`], and closes it again.
///
/// # Errors
///
/// [`Error::DataDirLocked`] while a server holds the directory; storage errors otherwise.
pub async fn tail_dir(
    data_dir: std::path::PathBuf,
    app: Option<Uuid>,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    tokio::task::spawn_blocking(move || {
        let store = latchkey_storage::FjallStore::open(&data_dir, Durability::Sync)?;
        let entries = tail(&store, app, limit);
        store.close()?;
        entries
    })
    .await
    .map_err(Error::internal)?
}

/// Reads the newest `limit` entries, of one application or of all, and returns them oldest
/// first (so the newest is the last line of a tail).
///
/// # Errors
///
/// Storage errors, including an entry of a format this build does not know.
pub fn tail(store: &dyn Store, app: Option<Uuid>, limit: usize) -> Result<Vec<AuditRecord>> {
    let apps = match app {
        Some(app) => vec![app],
        None => store
            .scan_prefix(Space::Apps, &[])?
            .iter()
            .filter_map(|(key, _)| Uuid::from_slice(key).ok())
            .collect(),
    };

    // Each application's newest `limit`, merged by entry id (time order), newest `limit` kept.
    let mut entries = Vec::new();
    for app in apps {
        for (key, value) in store.scan_prefix_rev(Space::Audit, app.as_bytes(), limit)? {
            let id = key.get(16..).map(<[u8]>::to_vec).unwrap_or_default();
            entries.push((id, AuditRecord::decode(&value)?));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let skip = entries.len().saturating_sub(limit);
    Ok(entries.into_iter().skip(skip).map(|(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use latchkey_storage::FjallStore;

    use super::*;

    fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), Durability::Buffered).unwrap();
        (dir, Arc::new(store))
    }

    async fn settle(store: &Arc<dyn Store>) {
        store.commit(Batch::new()).await.unwrap();
    }

    #[tokio::test]
    async fn entries_come_back_oldest_first_and_limited_to_the_newest() {
        let (_dir, store) = open();
        let audit = Audit::new(store.clone(), Clock::default());
        let app = Uuid::new_v4();
        for i in 0..5 {
            audit.record(AuditEvent::success(app, AuditKind::Logout).field("n", i.to_string()));
        }
        settle(&store).await;

        let last = tail(store.as_ref(), Some(app), 3).unwrap();
        let ns: Vec<_> = last.iter().map(|e| e.fields["n"].as_str()).collect();
        assert_eq!(ns, ["2", "3", "4"]);
        assert!(
            tail(store.as_ref(), Some(Uuid::new_v4()), 3)
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_lockout_is_recorded_with_the_failure_that_caused_it() {
        let (_dir, store) = open();
        let audit = Audit::new(store.clone(), Clock::default());
        let (app, user, device) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        audit.login::<()>(app, Some(user), device, &Err(Error::NowLocked(300)));
        audit.login::<()>(app, None, device, &Err(Error::DeviceNotFound));
        audit.login(app, Some(user), device, &Ok(()));
        settle(&store).await;

        let entries = tail(store.as_ref(), Some(app), 10).unwrap();
        let summary: Vec<_> = entries
            .iter()
            .map(|e| (e.event.as_str(), e.code.as_deref(), e.user.is_some()))
            .collect();
        assert_eq!(
            summary,
            [
                ("login_failed", Some("AN-AUTH-1030"), true),
                ("device_locked_out", Some("AN-AUTH-1030"), true),
                ("login_failed", Some("AN-HENG-1005"), false),
                ("login_succeeded", None, true),
            ]
        );
        assert_eq!(entries[1].fields["lock_secs"], "300");
        assert_eq!(entries[3].outcome, AuditOutcome::Success);
    }
}
