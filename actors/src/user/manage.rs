//! Reading and changing a user and its devices on the user's own behalf.

use latchkey_storage::{Batch, Space, pair_key};
use serde::Serialize;
use uuid::Uuid;

use super::UserState;
use crate::{
    Error, Result,
    session::{SessionMsg, ids},
};

/// A user as the user routes show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// userUuid.
    pub user_uuid: Uuid,
    /// As first given.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Mobile number, if any.
    pub mobile_number: Option<String>,
    /// Has an activated device.
    pub active: bool,
    /// Locked by an administrator.
    pub locked: bool,
    /// Epoch seconds.
    pub date_created: u64,
    /// Epoch seconds.
    pub last_login: Option<u64>,
    /// Whether new devices may be added.
    pub forbid_adding_devices: bool,
    /// Roles such as `iam-admin`.
    pub roles: Vec<String>,
}

/// A device as the device list shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    /// deviceUuid.
    pub device_uuid: Uuid,
    /// Display name.
    pub device_name: String,
    /// Activated.
    pub active: bool,
    /// Locked in any way right now.
    pub locked: bool,
    /// Epoch seconds.
    pub date_created: u64,
    /// Epoch seconds.
    pub last_login: Option<u64>,
    /// Consecutive wrong PINs.
    pub failed_login_attempts: u32,
}

/// A change to the user's own details.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New e-mail address.
    pub email: Option<String>,
    /// New mobile number.
    pub mobile_number: Option<String>,
}

/// An administrator's change to a user (IAM).
#[derive(Debug, Clone, Default)]
pub struct AdminUserPatch {
    /// Lock or unlock (the administrator's lock only).
    pub locked: Option<bool>,
    /// New e-mail address.
    pub email: Option<String>,
    /// New mobile number.
    pub mobile_number: Option<String>,
    /// Forbid or allow adding devices.
    pub forbid_adding_devices: Option<bool>,
}

/// A change to one of the user's devices.
#[derive(Debug, Clone, Default)]
pub struct DevicePatch {
    /// Lock or unlock (the user's own lock only).
    pub locked: Option<bool>,
    /// Rename.
    pub device_name: Option<String>,
}

impl UserState {
    pub(super) fn view(&self) -> Result<UserView> {
        let (user, _) = self.user()?;
        Ok(UserView {
            user_uuid: user.uuid,
            username: user.username.clone(),
            email: user.email.clone(),
            mobile_number: user.mobile_number.clone(),
            active: user.active,
            locked: user.locked,
            date_created: user.created,
            last_login: user.last_login,
            forbid_adding_devices: user.forbid_adding_devices,
            roles: user.roles.clone(),
        })
    }

    pub(super) fn device_views(&self, now: u64) -> Result<Vec<DeviceView>> {
        self.user()?;
        let devices = self
            .loaded
            .as_ref()
            .map(|l| l.devices.values())
            .into_iter()
            .flatten();
        Ok(devices
            .map(|d| DeviceView {
                device_uuid: d.uuid,
                device_name: d.name.clone(),
                active: d.active,
                locked: d.user_locked || d.admin_locked || d.locked_until.is_some_and(|t| t > now),
                date_created: d.created,
                last_login: d.last_login,
                failed_login_attempts: d.failed_logins,
            })
            .collect())
    }

    pub(super) async fn patch(&mut self, patch: UserPatch) -> Result<()> {
        let (user, _) = self.user()?;
        let mut next = user.clone();
        if let Some(email) = patch.email {
            next.email = email;
        }
        if let Some(mobile) = patch.mobile_number {
            next.mobile_number = Some(mobile);
        }
        self.persist(Some(&next), &[]).await?;
        self.store_user(next);
        Ok(())
    }

    /// Removes the user, its index entry, devices and pending sessions in one batch.
    pub(super) async fn delete(&mut self) -> Result<()> {
        let (user, _) = self.user()?;
        let mut batch = Batch::new();
        batch.delete(Space::Users, user.uuid.as_bytes().to_vec());
        batch.delete(
            Space::Usernames,
            latchkey_storage::uuid_str_key(user.app, &user.username_key),
        );
        let mut sessions = vec![ids::activate_user(user.uuid)];
        for device in self
            .loaded
            .as_ref()
            .map(|l| l.devices.keys())
            .into_iter()
            .flatten()
        {
            batch.delete(Space::Devices, pair_key(user.uuid, *device));
            sessions.extend([ids::activate_device(*device), ids::reset_pin(*device)]);
        }
        self.shared.ctx.store.commit(batch).await?;

        if let Ok(loaded) = self.loaded_mut() {
            loaded.user = None;
            loaded.devices.clear();
        }
        self.revoke_sessions(sessions).await;
        tracing::info!("user deleted");
        Ok(())
    }

    pub(super) async fn patch_device(&mut self, device: Uuid, patch: DevicePatch) -> Result<()> {
        self.user()?;
        let mut next = self.device(device).ok_or(Error::Forbidden)?.clone();
        if let Some(name) = patch.device_name {
            next.name = name;
        }
        match patch.locked {
            Some(true) => {
                next.user_locked = true;
                next.sid = None; // a lock revokes the device's tokens, for good
            }
            Some(false) => next.user_locked = false,
            None => {}
        }
        self.persist(None, &[&next]).await?;
        self.store_device(next);
        Ok(())
    }

    pub(super) async fn delete_device(&mut self, device: Uuid) -> Result<()> {
        let (user, _) = self.user()?;
        self.device(device).ok_or(Error::Forbidden)?;
        let mut batch = Batch::new();
        batch.delete(Space::Devices, pair_key(user.uuid, device));
        self.shared.ctx.store.commit(batch).await?;

        if let Ok(loaded) = self.loaded_mut() {
            loaded.devices.remove(&device);
        }
        self.revoke_sessions(vec![ids::activate_device(device), ids::reset_pin(device)])
            .await;
        Ok(())
    }

    /// A device holds exactly one auth-key record, so this only confirms `keep` is current.
    pub(super) fn keep_only_auth_key(&self, device: Uuid, keep: Uuid) -> Result<()> {
        self.user()?;
        let dev = self.device(device).ok_or(Error::Forbidden)?;
        if dev.auth_key_uuid == Some(keep) {
            Ok(())
        } else {
            Err(Error::StaleAuthKey)
        }
    }

    /// An administrator's lock ends every session of the user, for good.
    pub(super) async fn admin_patch(&mut self, patch: AdminUserPatch) -> Result<()> {
        let (user, _) = self.user()?;
        let mut next = user.clone();
        let mut devices = Vec::new();
        if let Some(email) = patch.email {
            next.email = email;
        }
        if let Some(mobile) = patch.mobile_number {
            next.mobile_number = Some(mobile);
        }
        if let Some(forbid) = patch.forbid_adding_devices {
            next.forbid_adding_devices = forbid;
        }
        if let Some(locked) = patch.locked {
            next.locked = locked;
            if locked {
                let all = self
                    .loaded
                    .as_ref()
                    .map(|l| l.devices.values())
                    .into_iter()
                    .flatten();
                devices = all.filter(|d| d.sid.is_some()).cloned().collect();
                devices.iter_mut().for_each(|d| d.sid = None);
            }
        }
        self.persist(Some(&next), &devices.iter().collect::<Vec<_>>())
            .await?;
        self.store_user(next);
        devices.into_iter().for_each(|d| self.store_device(d));
        Ok(())
    }

    /// An administrator's lock of one device, which only an administrator lifts.
    pub(super) async fn admin_patch_device(
        &mut self,
        device: Uuid,
        patch: DevicePatch,
    ) -> Result<()> {
        self.user()?;
        let mut next = self.device(device).ok_or(Error::DeviceNotFound)?.clone();
        if let Some(name) = patch.device_name {
            next.name = name;
        }
        match patch.locked {
            Some(true) => {
                next.admin_locked = true;
                next.sid = None;
            }
            Some(false) => next.admin_locked = false,
            None => {}
        }
        self.persist(None, &[&next]).await?;
        self.store_device(next);
        Ok(())
    }

    pub(super) async fn grant_role(&mut self, role: String) -> Result<()> {
        let (user, _) = self.user()?;
        if user.roles.contains(&role) {
            return Ok(());
        }
        let mut next = user.clone();
        next.roles.push(role);
        self.persist(Some(&next), &[]).await?;
        self.store_user(next);
        Ok(())
    }

    async fn revoke_sessions(&self, ids: Vec<String>) {
        for id in ids {
            let revoked = self.shared.sessions.call(&id, SessionMsg::Revoke).await;
            if !matches!(revoked, Ok(Ok(()))) {
                tracing::warn!(session_id = %id, "pending session not removed; it will expire");
            }
        }
    }
}
