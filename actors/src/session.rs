//! SessionActor: one pending flow with a deadline and an attempt limit (activation and
//! reset-PIN tokens today; OTPs and other ceremonies later).
//!
//! The actor is the only writer of its record, so attempts are counted exactly however many
//! requests race. A used or expired session stays as a tombstone for [`TOMBSTONE_SECS`]
//! after its deadline, so that a second or late use is told apart from a wrong guess; then
//! the record deletes itself.

use std::{sync::Arc, time::Duration};

use latchkey_storage::{Batch, Space, StoreExt, records::SessionRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::{Error, Result, context::Context, crypto::Purpose, directory::Child};

/// How long a dead session's record outlives its deadline. Until then a late or second use
/// answers "expired or used" (and is not counted as a guess); afterwards the record is
/// swept and a use looks like any wrong token.
pub(crate) const TOMBSTONE_SECS: u64 = 7 * 24 * 3600;

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Right secret: the session is now used.
    Accepted,
    /// Wrong secret, counted; `left` tries remain.
    Wrong { left: u32 },
    /// Expired, used, or out of attempts: nothing was evaluated.
    Dead,
    /// No such session.
    Missing,
}

pub(crate) enum SessionMsg {
    /// Creates the session, replacing any earlier one under the same id.
    Issue(Box<SessionRecord>, RpcReplyPort<Result<()>>),
    /// Checks a secret against the session at time `now`.
    Verify {
        secret: String,
        now: u64,
        reply: RpcReplyPort<Result<Verdict>>,
    },
    /// Removes the session (its user or device is gone).
    Revoke(RpcReplyPort<Result<()>>),
    /// The deadline timer fired.
    Expire,
    /// Stop if idle.
    Passivate,
}

pub(crate) struct SessionState {
    ctx: Arc<Context>,
    id: String,
    respawn: bool,
    loaded: bool,
    record: Option<SessionRecord>,
    timer:
        Option<tokio::task::JoinHandle<std::result::Result<(), ractor::MessagingErr<SessionMsg>>>>,
}

#[derive(Default)]
pub(crate) struct SessionActor;

impl Child for SessionActor {
    type Key = String;
    type Shared = Arc<Context>;

    fn args(shared: &Arc<Context>, key: &String, respawn: bool) -> SessionState {
        SessionState {
            ctx: shared.clone(),
            id: key.clone(),
            respawn,
            loaded: false,
            record: None,
            timer: None,
        }
    }

    fn passivate() -> SessionMsg {
        SessionMsg::Passivate
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionState;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionState,
    ) -> std::result::Result<SessionState, ActorProcessingErr> {
        Ok(args)
    }

    #[tracing::instrument(name = "session", skip_all, fields(session_id = %state.id))]
    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if let SessionMsg::Passivate = msg {
            myself.stop(None);
            return Ok(());
        }
        state.ensure_loaded(&myself).await?;

        match msg {
            SessionMsg::Issue(record, reply) => {
                let _ = reply.send(state.issue(&myself, *record).await);
            }
            SessionMsg::Verify { secret, now, reply } => {
                // A finished session stays until passivated: stopping it here would drop the
                // requests queued behind this one, and a burst would turn into retries.
                let _ = reply.send(state.verify(&secret, now).await);
            }
            SessionMsg::Revoke(reply) => {
                let result = state.delete().await;
                let _ = reply.send(result);
                myself.stop(None);
            }
            SessionMsg::Expire => {
                let now = state.ctx.clock.now();
                match state.record.as_ref().map(|r| r.deadline) {
                    Some(deadline) if deadline > now => state.arm(&myself, deadline - now),
                    Some(deadline) if deadline.saturating_add(TOMBSTONE_SECS) <= now => {
                        state.delete().await?;
                        myself.stop(None);
                    }
                    // Past its deadline the record stays as a tombstone, so that a late use
                    // is told "expired" rather than "wrong"; the actor need not stay.
                    _ => myself.stop(None),
                }
            }
            SessionMsg::Passivate => {}
        }
        Ok(())
    }
}

impl SessionState {
    async fn ensure_loaded(&mut self, myself: &ActorRef<SessionMsg>) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        if self.respawn {
            // A failed predecessor may have a write in the queue: wait for it to land.
            self.ctx.store.commit(Batch::new()).await?;
        }
        let store = self.ctx.store.clone();
        let id = self.id.clone();
        let record = tokio::task::spawn_blocking(move || {
            store.load::<SessionRecord>(Space::Sessions, id.as_bytes())
        })
        .await
        .map_err(Error::internal)??;

        self.loaded = true;
        self.record = record;
        if let Some(deadline) = self.record.as_ref().map(|r| r.deadline) {
            self.arm(myself, deadline.saturating_sub(self.ctx.clock.now()));
        }
        Ok(())
    }

    async fn issue(&mut self, myself: &ActorRef<SessionMsg>, record: SessionRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Space::Sessions, self.id.as_bytes(), &record)?;
        self.ctx.store.commit(batch).await?;

        let ttl = record.deadline.saturating_sub(record.created);
        self.record = Some(record);
        self.arm(myself, ttl);
        Ok(())
    }

    async fn verify(&mut self, secret: &str, now: u64) -> Result<Verdict> {
        let Some(record) = self.record.as_mut() else {
            return Ok(Verdict::Missing);
        };
        if record.used || record.deadline <= now || record.attempts >= record.max_attempts {
            return Ok(Verdict::Dead);
        }

        let right =
            self.ctx
                .secrets
                .verify(Purpose::Token, secret.as_bytes(), Some(&record.secret_hash));
        let mut next = record.clone();
        let verdict = if right {
            next.used = true;
            Verdict::Accepted
        } else {
            next.attempts += 1;
            Verdict::Wrong {
                left: next.max_attempts.saturating_sub(next.attempts),
            }
        };

        let mut batch = Batch::new();
        batch.put(Space::Sessions, self.id.as_bytes(), &next)?;
        self.ctx.store.commit(batch).await?;
        *record = next;
        Ok(verdict)
    }

    async fn delete(&mut self) -> Result<()> {
        if self.record.take().is_some() {
            let mut batch = Batch::new();
            batch.delete(Space::Sessions, self.id.as_bytes());
            self.ctx.store.commit(batch).await?;
        }
        Ok(())
    }

    /// Timers are a convenience: every check compares the deadline with the clock too, and a
    /// passivated session's timer is cancelled (its record is checked when next loaded).
    fn arm(&mut self, myself: &ActorRef<SessionMsg>, secs: u64) {
        if let Some(old) = self.timer.take() {
            old.abort();
        }
        let delay = Duration::from_secs(secs.clamp(1, 7 * 24 * 3600));
        self.timer = Some(myself.send_after(delay, || SessionMsg::Expire));
    }
}

/// The session id of each flow, derived from what it is bound to, so that issuing a new
/// token replaces the old one.
pub(crate) mod ids {
    use uuid::Uuid;

    pub(crate) fn activate_user(user: Uuid) -> String {
        format!("activate-user/{user}")
    }

    pub(crate) fn activate_device(device: Uuid) -> String {
        format!("activate-device/{device}")
    }

    pub(crate) fn reset_pin(device: Uuid) -> String {
        format!("reset-pin/{device}")
    }
}
