//! The credential rules: login with lockout, activation, PIN reset, sessions.
//!
//! Every rule works on a copy of the record, writes the copy, and only then replaces the
//! in-memory state, so a failed write leaves memory equal to disk.

use latchkey_storage::{
    Batch, Space, pair_key,
    records::{DeviceRecord, SessionKind, SessionRecord},
};
use uuid::Uuid;

use super::UserState;
use crate::{
    Error, HashedPin, Result,
    audit::{AuditEvent, AuditKind},
    crypto::{self, Purpose},
    notifier::{MessageKind, Outgoing},
    session::{SessionMsg, Verdict, ids},
};

/// How a login proves the user.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// The device's PIN hash.
    Pin(HashedPin),
    /// A pinless device: the authKey alone.
    Pinless,
}

impl Credential {
    /// What the PIN check hashes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Credential::Pin(pin) => pin.bytes(),
            Credential::Pinless => b"",
        }
    }
}

/// What a successful proof yields: the new one-time authKey and the session for the JWT.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) user: Uuid,
    pub(crate) device: Uuid,
    pub(crate) sid: Uuid,
    pub(crate) auth_key: String,
    pub(crate) auth_key_uuid: Uuid,
}

/// A one-time token just issued for a device, with what its message needs.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) user: Uuid,
    pub(crate) device: Uuid,
    pub(crate) username: String,
    pub(crate) email: String,
    pub(crate) mobile: Option<String>,
}

impl Issued {
    /// The message that carries the token to the user.
    pub(crate) fn into_message(self, kind: MessageKind) -> Outgoing {
        Outgoing {
            kind,
            user: Some(self.user),
            username: Some(self.username),
            email: Some(self.email),
            mobile: self.mobile,
            purpose: None,
            secret: self.token,
        }
    }
}

impl UserState {
    pub(super) async fn login(
        &mut self,
        device: Uuid,
        auth_key: &str,
        credential: &Credential,
        now: u64,
    ) -> Result<Grant> {
        let secrets = &self.shared.ctx.secrets;
        let known = self.user().ok();
        let found = known
            .and(self.loaded.as_ref())
            .and_then(|l| l.devices.get(&device))
            .filter(|d| d.active);

        // == Checks, in the contract's order: device, locks, authKey, PIN
        let (Some((user, app)), Some(dev)) = (known, found) else {
            // The same hashing as for a known device, so timing does not tell an unknown
            // user or device from a known one.
            secrets.verify(Purpose::AuthKey, auth_key.as_bytes(), None);
            secrets.verify(Purpose::Pin, credential.bytes(), None);
            return Err(Error::DeviceNotFound);
        };
        let settings = &app.settings;
        if user.locked || dev.admin_locked {
            return Err(Error::AdminLocked);
        }
        if dev.user_locked || dev.locked_until.is_some_and(|until| until > now) {
            return Err(Error::TemporarilyLocked);
        }
        if !secrets.verify(
            Purpose::AuthKey,
            auth_key.as_bytes(),
            dev.auth_key_hash.as_deref(),
        ) {
            return Err(Error::StaleAuthKey);
        }
        let pin_ok = match credential {
            Credential::Pin(pin) => {
                secrets.verify(Purpose::Pin, pin.bytes(), dev.pin_hash.as_deref())
            }
            Credential::Pinless => dev.pin_hash.is_none(),
        };

        // == A wrong PIN is counted before the answer goes out
        let mut next = dev.clone();
        if !pin_ok {
            next.failed_logins += 1;
            let outcome = if next.failed_logins >= settings.max_failed_logins {
                next.failed_logins = 0;
                next.locked_until = Some(now + settings.lock_period_secs);
                Error::NowLocked(settings.lock_period_secs)
            } else if next.failed_logins + 1 == settings.max_failed_logins {
                Error::LastAttempt
            } else {
                Error::LoginFailed
            };
            self.persist(None, &[&next]).await?;
            self.store_device(next);
            tracing::info!(device_id = %device, code = outcome.code(), "login refused");
            return Err(outcome);
        }

        // == Success: rotate the authKey
        let mut user = user.clone();
        user.last_login = Some(now);
        next.failed_logins = 0;
        next.locked_until = None;
        next.last_login = Some(now);
        let grant = self.rotate(&mut next)?;
        self.persist(Some(&user), &[&next]).await?;
        self.store_user(user);
        self.store_device(next);
        tracing::debug!(device_id = %device, "login succeeded");
        Ok(grant)
    }

    pub(super) async fn activate_user(
        &mut self,
        token: &str,
        pin: &HashedPin,
        device_name: String,
        now: u64,
    ) -> Result<Grant> {
        let (user, _) = self.user()?;
        if user.locked {
            return Err(Error::AdminLocked);
        }
        let user_uuid = user.uuid;
        self.redeem(ids::activate_user(user_uuid), token, now)
            .await?;

        let mut user = user.clone();
        user.active = true;
        user.last_login = Some(now);
        let mut device = new_device(user_uuid, device_name, now);
        device.active = true;
        device.last_login = Some(now);
        device.pin_hash = Some(self.shared.ctx.secrets.hash(Purpose::Pin, pin.bytes()));
        let grant = self.rotate(&mut device)?;

        self.persist(Some(&user), &[&device]).await?;
        self.store_user(user);
        self.store_device(device);
        tracing::info!(device_id = %grant.device, "user activated");
        Ok(grant)
    }

    pub(super) async fn add_device(&mut self, name: String, now: u64) -> Result<Issued> {
        let (user, app) = self.user()?;
        if user.forbid_adding_devices {
            return Err(Error::AddingDevicesForbidden);
        }
        let (username, email) = (user.username.clone(), user.email.clone());
        let mobile = user.mobile_number.clone();
        let settings = &app.settings;

        let device = new_device(user.uuid, name, now);
        let token = crypto::random_code(settings.token_digits)?;
        let session = SessionRecord {
            id: ids::activate_device(device.uuid),
            kind: SessionKind::ActivateDevice,
            app: app.uuid,
            user: user.uuid,
            device: Some(device.uuid),
            secret_hash: self
                .shared
                .ctx
                .secrets
                .hash(Purpose::Token, token.as_bytes()),
            created: now,
            deadline: now + settings.activation_token_ttl_secs,
            attempts: 0,
            max_attempts: settings.token_attempts,
            used: false,
            purpose: None,
            otp_uuid: None,
        };

        // A new device id has no live session actor, so its session is written with it.
        let mut batch = Batch::new();
        batch.put(Space::Devices, pair_key(device.user, device.uuid), &device)?;
        batch.put(Space::Sessions, session.id.as_bytes(), &session)?;
        self.shared.ctx.store.commit(batch).await?;

        let issued = Issued {
            token,
            user: device.user,
            device: device.uuid,
            username,
            email,
            mobile,
        };
        self.store_device(device);
        Ok(issued)
    }

    pub(super) async fn activate_device(
        &mut self,
        device: Uuid,
        token: &str,
        pin: &HashedPin,
        now: u64,
    ) -> Result<Grant> {
        if self.user()?.0.locked {
            return Err(Error::AdminLocked);
        }
        let pending = self.device(device).filter(|d| !d.active).cloned();
        let Some(mut next) = pending else {
            return Err(Error::DeviceNotFound);
        };
        self.redeem(ids::activate_device(device), token, now)
            .await?;

        next.active = true;
        next.last_login = Some(now);
        next.pin_hash = Some(self.shared.ctx.secrets.hash(Purpose::Pin, pin.bytes()));
        let grant = self.rotate(&mut next)?;
        self.persist(None, &[&next]).await?;
        self.store_device(next);
        Ok(grant)
    }

    pub(super) async fn forgot_pin(&mut self, device: Uuid, now: u64) -> Result<Issued> {
        let (user, app) = self.user()?;
        let settings = app.settings.clone();
        let (user_uuid, app_uuid) = (user.uuid, app.uuid);
        let (username, email) = (user.username.clone(), user.email.clone());
        let mobile = user.mobile_number.clone();
        let dev = self
            .device(device)
            .filter(|d| d.active)
            .ok_or(Error::DeviceNotFound)?;
        if user.locked || dev.admin_locked {
            return Err(Error::AdminLocked);
        }
        if dev.reset_blocked_until.is_some_and(|until| until > now) {
            return Err(Error::ResetBlocked);
        }

        let token = crypto::random_code(settings.token_digits)?;
        let session = SessionRecord {
            id: ids::reset_pin(device),
            kind: SessionKind::ResetPin,
            app: app_uuid,
            user: user_uuid,
            device: Some(device),
            secret_hash: self
                .shared
                .ctx
                .secrets
                .hash(Purpose::Token, token.as_bytes()),
            created: now,
            deadline: now + settings.reset_token_ttl_secs,
            attempts: 0,
            max_attempts: settings.token_attempts,
            used: false,
            purpose: None,
            otp_uuid: None,
        };
        let id = session.id.clone();
        let session = Box::new(session);
        self.shared
            .sessions
            .call(&id, |reply| SessionMsg::Issue(session.clone(), reply))
            .await??;
        Ok(Issued {
            token,
            user: user_uuid,
            device,
            username,
            email,
            mobile,
        })
    }

    pub(super) async fn reset_pin(
        &mut self,
        device: Uuid,
        token: &str,
        pin: &HashedPin,
        now: u64,
    ) -> Result<Grant> {
        let (user, app) = self.user()?;
        let settings = app.settings.clone();
        let (user_locked, user_uuid, app_uuid) = (user.locked, user.uuid, app.uuid);
        let dev = self
            .device(device)
            .filter(|d| d.active)
            .ok_or(Error::DeviceNotFound)?;
        if user_locked || dev.admin_locked {
            return Err(Error::AdminLocked);
        }
        if dev.reset_blocked_until.is_some_and(|until| until > now) {
            return Err(Error::ResetBlocked);
        }
        let mut next = dev.clone();

        match self.redeem(ids::reset_pin(device), token, now).await {
            Ok(()) => {}
            Err(Error::InvalidToken) => {
                // Bad tokens count per device, so guessing across new tokens is bounded too.
                next.bad_reset_tokens += 1;
                let outcome = if next.bad_reset_tokens >= settings.max_bad_reset_tokens {
                    next.bad_reset_tokens = 0;
                    next.reset_blocked_until = Some(now + settings.reset_block_secs);
                    Error::ResetBlocked
                } else {
                    Error::InvalidToken
                };
                self.persist(None, &[&next]).await?;
                self.store_device(next);
                if matches!(outcome, Error::ResetBlocked) {
                    let blocked = AuditEvent::failure(app_uuid, AuditKind::ResetBlocked, &outcome)
                        .user(user_uuid)
                        .device(device)
                        .field("block_secs", settings.reset_block_secs.to_string());
                    self.shared.ctx.audit.record(blocked);
                }
                return Err(outcome);
            }
            Err(other) => return Err(other),
        }

        next.pin_hash = Some(self.shared.ctx.secrets.hash(Purpose::Pin, pin.bytes()));
        next.failed_logins = 0;
        next.locked_until = None;
        next.bad_reset_tokens = 0;
        next.last_login = Some(now);
        next.sid = None; // a new PIN ends the sessions opened with the old one
        // The reset proved the user holds the device and receives its tokens: it also lifts
        // the user's own lock, the way out for a user whose only device is self-locked.
        next.user_locked = false;
        let grant = self.rotate(&mut next)?;
        self.persist(None, &[&next]).await?;
        self.store_device(next);
        tracing::info!(device_id = %device, "PIN reset");
        Ok(grant)
    }

    /// Whether tokens of this device session are still honoured.
    pub(super) fn check_session(&self, device: Uuid, sid: Uuid) -> Result<()> {
        let (user, _) = self.user().map_err(|_| Error::RevokedJwt)?;
        let dev = self.device(device).ok_or(Error::RevokedJwt)?;
        if user.locked || dev.admin_locked || dev.user_locked || dev.sid != Some(sid) {
            return Err(Error::RevokedJwt);
        }
        Ok(())
    }

    pub(super) async fn logout(&mut self, device: Uuid, sid: Uuid) -> Result<()> {
        self.check_session(device, sid)?;
        let mut next = self.device(device).ok_or(Error::RevokedJwt)?.clone();
        next.sid = None;
        self.persist(None, &[&next]).await?;
        self.store_device(next);
        Ok(())
    }

    /// Verifies a one-time token with its session actor and maps the verdict.
    async fn redeem(&self, session: String, token: &str, now: u64) -> Result<()> {
        let secret = token.to_owned();
        let verdict = self
            .shared
            .sessions
            .call(&session, |reply| SessionMsg::Verify {
                secret: secret.clone(),
                now,
                reply,
            })
            .await??;
        match verdict {
            Verdict::Accepted => Ok(()),
            Verdict::Wrong { .. } | Verdict::Missing => Err(Error::InvalidToken),
            Verdict::Dead => Err(Error::TokenDead),
        }
    }

    /// Issues a new authKey (and a session if the device has none) on `device`.
    fn rotate(&self, device: &mut DeviceRecord) -> Result<Grant> {
        let auth_key = crypto::random_secret()?;
        let auth_key_uuid = Uuid::new_v4();
        device.auth_key_hash = Some(
            self.shared
                .ctx
                .secrets
                .hash(Purpose::AuthKey, auth_key.as_bytes()),
        );
        device.auth_key_uuid = Some(auth_key_uuid);
        let sid = *device.sid.get_or_insert_with(Uuid::new_v4);
        Ok(Grant {
            user: device.user,
            device: device.uuid,
            sid,
            auth_key,
            auth_key_uuid,
        })
    }

    pub(super) fn device(&self, device: Uuid) -> Option<&DeviceRecord> {
        self.loaded.as_ref()?.devices.get(&device)
    }

    pub(super) fn store_device(&mut self, device: DeviceRecord) {
        if let Ok(loaded) = self.loaded_mut() {
            loaded.devices.insert(device.uuid, device);
        }
    }

    pub(super) fn store_user(&mut self, user: latchkey_storage::records::UserRecord) {
        if let Ok(loaded) = self.loaded_mut() {
            loaded.user = Some(user);
        }
    }
}

fn new_device(user: Uuid, name: String, now: u64) -> DeviceRecord {
    DeviceRecord {
        uuid: Uuid::new_v4(),
        user,
        name,
        active: false,
        pin_hash: None,
        auth_key_hash: None,
        auth_key_uuid: None,
        sid: None,
        failed_logins: 0,
        locked_until: None,
        user_locked: false,
        admin_locked: false,
        bad_reset_tokens: 0,
        reset_blocked_until: None,
        created: now,
        last_login: None,
    }
}
