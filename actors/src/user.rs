//! UserActor: one per active user. It owns the user record and its devices, so every change
//! to them (a login rotating an authKey, a wrong PIN counted, a lock) is serialised without
//! locks, and is on disk before the caller hears of it.

mod credentials;
mod manage;

use std::{collections::BTreeMap, sync::Arc};

use latchkey_storage::{
    Batch, Space, StoreExt, pair_key,
    records::{DeviceRecord, UserRecord},
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use crate::{
    Error, HashedPin, Result,
    apps::Application,
    context::Context,
    directory::{Child, Directory},
    session::SessionActor,
};

pub(crate) use credentials::{Credential, Grant, Issued};
pub use manage::{AdminUserPatch, DevicePatch, DeviceView, UserPatch, UserView};

pub(crate) enum UserMsg {
    Login {
        device: Uuid,
        auth_key: String,
        credential: Credential,
        now: u64,
        reply: RpcReplyPort<Result<Grant>>,
    },
    ActivateUser {
        token: String,
        pin: HashedPin,
        device_name: String,
        now: u64,
        reply: RpcReplyPort<Result<Grant>>,
    },
    AddDevice {
        name: String,
        now: u64,
        reply: RpcReplyPort<Result<Issued>>,
    },
    ActivateDevice {
        device: Uuid,
        token: String,
        pin: HashedPin,
        now: u64,
        reply: RpcReplyPort<Result<Grant>>,
    },
    ForgotPin {
        device: Uuid,
        now: u64,
        reply: RpcReplyPort<Result<Issued>>,
    },
    ResetPin {
        device: Uuid,
        token: String,
        pin: HashedPin,
        now: u64,
        reply: RpcReplyPort<Result<Grant>>,
    },
    CheckSession {
        device: Uuid,
        sid: Uuid,
        reply: RpcReplyPort<Result<()>>,
    },
    Logout {
        device: Uuid,
        sid: Uuid,
        reply: RpcReplyPort<Result<()>>,
    },
    View(RpcReplyPort<Result<UserView>>),
    /// The user, if the device session is still live (one call for what a grant checks).
    ViewInSession {
        device: Uuid,
        sid: Uuid,
        reply: RpcReplyPort<Result<UserView>>,
    },
    Devices {
        now: u64,
        reply: RpcReplyPort<Result<Vec<DeviceView>>>,
    },
    Patch(UserPatch, RpcReplyPort<Result<()>>),
    Delete(RpcReplyPort<Result<()>>),
    PatchDevice {
        device: Uuid,
        patch: DevicePatch,
        reply: RpcReplyPort<Result<()>>,
    },
    DeleteDevice {
        device: Uuid,
        reply: RpcReplyPort<Result<()>>,
    },
    KeepOnlyAuthKey {
        device: Uuid,
        keep: Uuid,
        reply: RpcReplyPort<Result<()>>,
    },
    AdminPatch(AdminUserPatch, RpcReplyPort<Result<()>>),
    AdminPatchDevice {
        device: Uuid,
        patch: DevicePatch,
        reply: RpcReplyPort<Result<()>>,
    },
    GrantRole(String, RpcReplyPort<Result<()>>),
    /// Fails the actor as a bug would; the supervision test's hook.
    Crash,
    Passivate,
}

/// What a user actor is built from.
#[derive(Clone)]
pub(crate) struct UserShared {
    pub(crate) ctx: Arc<Context>,
    pub(crate) sessions: Directory<SessionActor>,
}

pub(crate) struct UserState {
    shared: UserShared,
    uuid: Uuid,
    respawn: bool,
    loaded: Option<Loaded>,
}

/// The user as loaded from storage; `None` in `UserState::loaded` means not loaded yet.
pub(crate) struct Loaded {
    /// `None` if no such user exists (or it was deleted).
    user: Option<UserRecord>,
    devices: BTreeMap<Uuid, DeviceRecord>,
    app: Option<Arc<Application>>,
}

#[derive(Default)]
pub(crate) struct UserActor;

impl Child for UserActor {
    type Key = Uuid;
    type Shared = UserShared;

    fn args(shared: &UserShared, key: &Uuid, respawn: bool) -> UserState {
        UserState {
            shared: shared.clone(),
            uuid: *key,
            respawn,
            loaded: None,
        }
    }

    fn passivate() -> UserMsg {
        UserMsg::Passivate
    }
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserState;
    type Arguments = UserState;

    async fn pre_start(
        &self,
        _myself: ActorRef<UserMsg>,
        args: UserState,
    ) -> std::result::Result<UserState, ActorProcessingErr> {
        Ok(args)
    }

    #[tracing::instrument(name = "user", skip_all, fields(user_id = %state.uuid))]
    async fn handle(
        &self,
        myself: ActorRef<UserMsg>,
        msg: UserMsg,
        state: &mut UserState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            UserMsg::Passivate => {
                myself.stop(None);
                return Ok(());
            }
            UserMsg::Crash => return Err("simulated failure of a user actor".into()),
            _ => {}
        }
        state.ensure_loaded().await?;

        // An actor for a user that does not exist stays until passivated, like any other:
        // it stands in for unknown usernames at login, and must cost what a real one costs.
        // Limitation: probing many unknown usernames keeps many stand-ins in memory until
        // they are passivated (`actor_idle_secs`); rate limits bound how many.
        if state.dispatch(msg).await {
            myself.stop(None);
        }
        Ok(())
    }
}

impl UserState {
    async fn ensure_loaded(&mut self) -> Result<()> {
        if self.loaded.is_some() {
            return Ok(());
        }
        let ctx = self.shared.ctx.clone();
        if self.respawn {
            // A failed predecessor may have a write in the queue: wait for it to land.
            ctx.store.commit(Batch::new()).await?;
        }

        let uuid = self.uuid;
        let store = ctx.store.clone();
        let (user, devices) = tokio::task::spawn_blocking(move || -> Result<_> {
            let user = store.load::<UserRecord>(Space::Users, uuid.as_bytes())?;
            let devices = store
                .scan_prefix(Space::Devices, uuid.as_bytes())?
                .into_iter()
                .map(|(_, v)| <DeviceRecord as latchkey_storage::Record>::decode(&v))
                .collect::<latchkey_storage::Result<Vec<_>>>()?;
            Ok((user, devices))
        })
        .await
        .map_err(Error::internal)??;

        let app = user.as_ref().and_then(|u| ctx.apps.get(u.app));
        self.loaded = Some(Loaded {
            user: if app.is_some() { user } else { None },
            devices: devices.into_iter().map(|d| (d.uuid, d)).collect(),
            app,
        });
        Ok(())
    }

    /// Runs one request; returns true if the user was deleted by it.
    async fn dispatch(&mut self, msg: UserMsg) -> bool {
        match msg {
            UserMsg::Login {
                device,
                auth_key,
                credential,
                now,
                reply,
            } => {
                let _ = reply.send(self.login(device, &auth_key, &credential, now).await);
            }
            UserMsg::ActivateUser {
                token,
                pin,
                device_name,
                now,
                reply,
            } => {
                let _ = reply.send(self.activate_user(&token, &pin, device_name, now).await);
            }
            UserMsg::AddDevice { name, now, reply } => {
                let _ = reply.send(self.add_device(name, now).await);
            }
            UserMsg::ActivateDevice {
                device,
                token,
                pin,
                now,
                reply,
            } => {
                let _ = reply.send(self.activate_device(device, &token, &pin, now).await);
            }
            UserMsg::ForgotPin { device, now, reply } => {
                let _ = reply.send(self.forgot_pin(device, now).await);
            }
            UserMsg::ResetPin {
                device,
                token,
                pin,
                now,
                reply,
            } => {
                let _ = reply.send(self.reset_pin(device, &token, &pin, now).await);
            }
            UserMsg::CheckSession { device, sid, reply } => {
                let _ = reply.send(self.check_session(device, sid));
            }
            UserMsg::Logout { device, sid, reply } => {
                let _ = reply.send(self.logout(device, sid).await);
            }
            UserMsg::View(reply) => {
                let _ = reply.send(self.view());
            }
            UserMsg::ViewInSession { device, sid, reply } => {
                let _ = reply.send(self.check_session(device, sid).and_then(|()| self.view()));
            }
            UserMsg::Devices { now, reply } => {
                let _ = reply.send(self.device_views(now));
            }
            UserMsg::Patch(patch, reply) => {
                let _ = reply.send(self.patch(patch).await);
            }
            UserMsg::Delete(reply) => {
                let result = self.delete().await;
                let deleted = result.is_ok();
                let _ = reply.send(result);
                return deleted;
            }
            UserMsg::PatchDevice {
                device,
                patch,
                reply,
            } => {
                let _ = reply.send(self.patch_device(device, patch).await);
            }
            UserMsg::DeleteDevice { device, reply } => {
                let _ = reply.send(self.delete_device(device).await);
            }
            UserMsg::KeepOnlyAuthKey {
                device,
                keep,
                reply,
            } => {
                let _ = reply.send(self.keep_only_auth_key(device, keep));
            }
            UserMsg::AdminPatch(patch, reply) => {
                let _ = reply.send(self.admin_patch(patch).await);
            }
            UserMsg::AdminPatchDevice {
                device,
                patch,
                reply,
            } => {
                let _ = reply.send(self.admin_patch_device(device, patch).await);
            }
            UserMsg::GrantRole(role, reply) => {
                let _ = reply.send(self.grant_role(role).await);
            }
            UserMsg::Crash | UserMsg::Passivate => {}
        }
        false
    }

    /// The loaded user and its application, or `UserNotFound`.
    fn user(&self) -> Result<(&UserRecord, &Arc<Application>)> {
        let loaded = self.loaded.as_ref().ok_or(Error::UserNotFound)?;
        match (&loaded.user, &loaded.app) {
            (Some(user), Some(app)) => Ok((user, app)),
            _ => Err(Error::UserNotFound),
        }
    }

    fn loaded_mut(&mut self) -> Result<&mut Loaded> {
        self.loaded.as_mut().ok_or(Error::UserNotFound)
    }

    /// Writes the user and the given devices in one batch and waits until it is durable.
    async fn persist(&self, user: Option<&UserRecord>, devices: &[&DeviceRecord]) -> Result<()> {
        let mut batch = Batch::new();
        if let Some(user) = user {
            batch.put(Space::Users, user.uuid.as_bytes().to_vec(), user)?;
        }
        for device in devices {
            batch.put(Space::Devices, pair_key(device.user, device.uuid), *device)?;
        }
        self.shared.ctx.store.commit(batch).await?;
        Ok(())
    }
}
