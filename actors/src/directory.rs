//! Directories: supervisors that spawn a child actor per id on demand, find it again without
//! a mailbox hop, passivate it when idle, and respawn it from storage when it fails.
//!
//! Each directory keeps its own map of live children rather than ractor's process-wide name
//! registry, so that several engines can run in one process (tests, embedding appliances).

use std::{
    collections::HashMap,
    fmt::Debug,
    hash::Hash,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort,
    SupervisionEvent, rpc::CallResult,
};

use crate::{Error, Result};

/// How a directory builds and talks to its children.
pub(crate) trait Child: Actor + Default {
    /// The id a child is found by.
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// What every child is built from besides its key.
    type Shared: Clone + Send + Sync + 'static;

    /// Start arguments; `respawn` is true when a failed predecessor is being replaced.
    fn args(shared: &Self::Shared, key: &Self::Key, respawn: bool) -> Self::Arguments;

    /// The message that asks an idle child to stop.
    fn passivate() -> Self::Msg;
}

struct Entry<M: ractor::Message> {
    actor: ActorRef<M>,
    last_used: AtomicU64,
}

type Children<C> = RwLock<HashMap<<C as Child>::Key, Arc<Entry<<C as Actor>::Msg>>>>;

/// A handle to a directory: finds children and calls them, retrying when a child is
/// passivating or being respawned underneath the call.
pub(crate) struct Directory<C: Child> {
    actor: ActorRef<DirMsg<C>>,
    children: Arc<Children<C>>,
    ticks: Arc<AtomicU64>,
    timeout: Duration,
}

impl<C: Child> Clone for Directory<C> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            children: self.children.clone(),
            ticks: self.ticks.clone(),
            timeout: self.timeout,
        }
    }
}

impl<C: Child> Debug for Directory<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

/// Options for a directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectoryOptions {
    /// A child unused this long is stopped.
    pub(crate) idle: Duration,
    /// Longest wait for a child's answer.
    pub(crate) call_timeout: Duration,
}

const MAX_TRIES: usize = 8;

impl<C: Child> Directory<C> {
    pub(crate) async fn start(shared: C::Shared, options: DirectoryOptions) -> Result<Self> {
        let children: Arc<Children<C>> = Arc::default();
        let ticks = Arc::new(AtomicU64::new(0));
        let state = DirState::<C> {
            shared,
            children: children.clone(),
            ids: HashMap::new(),
            ticks: ticks.clone(),
            idle_ticks: (options.idle.as_millis() / SWEEP.as_millis()).max(1) as u64,
        };
        let (actor, _) = Actor::spawn(None, DirectoryActor::<C>::default(), state)
            .await
            .map_err(Error::internal)?;
        actor.send_interval(SWEEP, || DirMsg::Sweep);
        Ok(Self {
            actor,
            children,
            ticks,
            timeout: options.call_timeout,
        })
    }

    /// Sends a request to the child for `key` and waits for its answer. `make` may run more
    /// than once: a request that a stopping child dropped unprocessed is sent again.
    pub(crate) async fn call<R, F>(&self, key: &C::Key, make: F) -> Result<R>
    where
        R: Send + 'static,
        F: Fn(RpcReplyPort<R>) -> C::Msg,
    {
        let mut fresh = false;
        for attempt in 0..MAX_TRIES {
            let child = self.find(key, fresh).await?;
            match child.call(&make, Some(self.timeout)).await {
                Ok(CallResult::Success(reply)) => return Ok(reply),
                Ok(CallResult::Timeout) => return Err(Error::Unavailable),
                Ok(CallResult::SenderError) | Err(_) => {
                    fresh = true;
                    tokio::time::sleep(Duration::from_millis(1 << attempt.min(6))).await;
                }
            }
        }
        Err(Error::Unavailable)
    }

    async fn find(&self, key: &C::Key, fresh: bool) -> Result<ActorRef<C::Msg>> {
        if !fresh {
            let entry = self.children.read().ok().and_then(|m| m.get(key).cloned());
            if let Some(entry) = entry {
                entry
                    .last_used
                    .store(self.ticks.load(Ordering::Relaxed), Ordering::Relaxed);
                return Ok(entry.actor.clone());
            }
        }
        let key = key.clone();
        match self
            .actor
            .call(|reply| DirMsg::Get(key, reply), Some(self.timeout))
            .await
        {
            Ok(CallResult::Success(found)) => found,
            _ => Err(Error::Unavailable),
        }
    }

    /// The live children, for tests and metrics.
    pub(crate) fn live(&self) -> usize {
        self.children.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Stops every child, waiting for each, then the directory itself.
    pub(crate) async fn shutdown(&self) {
        let _ = self
            .actor
            .call(DirMsg::Shutdown, Some(Duration::from_secs(30)))
            .await;
        let _ = self
            .actor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }

    /// The live child for `key`, if any.
    pub(crate) fn child_ref(&self, key: &C::Key) -> Option<ActorRef<C::Msg>> {
        self.children
            .read()
            .ok()
            .and_then(|m| m.get(key).map(|e| e.actor.clone()))
    }
}

const SWEEP: Duration = Duration::from_millis(500);

pub(crate) enum DirMsg<C: Child> {
    Get(C::Key, RpcReplyPort<Result<ActorRef<C::Msg>>>),
    Sweep,
    Shutdown(RpcReplyPort<()>),
}

pub(crate) struct DirState<C: Child> {
    shared: C::Shared,
    children: Arc<Children<C>>,
    ids: HashMap<ActorId, C::Key>,
    ticks: Arc<AtomicU64>,
    idle_ticks: u64,
}

pub(crate) struct DirectoryActor<C>(std::marker::PhantomData<fn() -> C>);

impl<C> Default for DirectoryActor<C> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<C: Child> Actor for DirectoryActor<C> {
    type Msg = DirMsg<C>;
    type State = DirState<C>;
    type Arguments = DirState<C>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: DirState<C>,
    ) -> std::result::Result<DirState<C>, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut DirState<C>,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            DirMsg::Get(key, reply) => {
                let found = state.get_or_spawn(&myself, key, false).await;
                let _ = reply.send(found);
            }
            DirMsg::Sweep => state.sweep(),
            DirMsg::Shutdown(reply) => {
                let live: Vec<_> = match state.children.write() {
                    Ok(mut map) => map.drain().map(|(_, e)| e.actor.clone()).collect(),
                    Err(_) => Vec::new(),
                };
                for child in live {
                    let _ = child
                        .stop_and_wait(None, Some(Duration::from_secs(10)))
                        .await;
                }
                state.ids.clear();
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut DirState<C>,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(key) = state.forget(&cell) else {
                    return Ok(());
                };
                tracing::warn!(key = ?key, err = %err, "child actor failed; respawning it");
                if let Err(err) = state.get_or_spawn(&myself, key, true).await {
                    tracing::error!(err = ?err, "respawn failed; the next request retries");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(&cell);
            }
            _ => {}
        }
        Ok(())
    }
}

impl<C: Child> DirState<C> {
    async fn get_or_spawn(
        &mut self,
        myself: &ActorRef<DirMsg<C>>,
        key: C::Key,
        respawn: bool,
    ) -> Result<ActorRef<C::Msg>> {
        let now = self.ticks.load(Ordering::Relaxed);
        let existing = self.children.read().ok().and_then(|m| m.get(&key).cloned());
        if let Some(entry) = existing {
            // A child that is stopping has finished every request it took, so its writes
            // are done and a successor may load from storage.
            if matches!(
                entry.actor.get_status(),
                ActorStatus::Running | ActorStatus::Starting | ActorStatus::Upgrading
            ) {
                entry.last_used.store(now, Ordering::Relaxed);
                return Ok(entry.actor.clone());
            }
            self.forget(&entry.actor.get_cell());
        }

        let args = C::args(&self.shared, &key, respawn);
        let (child, _) = Actor::spawn_linked(None, C::default(), args, myself.get_cell())
            .await
            .map_err(Error::internal)?;
        self.ids.insert(child.get_id(), key.clone());
        let entry = Arc::new(Entry {
            actor: child.clone(),
            last_used: AtomicU64::new(now),
        });
        if let Ok(mut map) = self.children.write() {
            map.insert(key, entry);
        }
        Ok(child)
    }

    /// Drops a child from the maps if it is the one registered under its key.
    fn forget(&mut self, cell: &ActorCell) -> Option<C::Key> {
        let key = self.ids.remove(&cell.get_id())?;
        if let Ok(mut map) = self.children.write()
            && map
                .get(&key)
                .is_some_and(|e| e.actor.get_id() == cell.get_id())
        {
            map.remove(&key);
        }
        Some(key)
    }

    fn sweep(&mut self) {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(map) = self.children.read() else {
            return;
        };
        for entry in map.values() {
            if now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) > self.idle_ticks {
                let _ = entry.actor.cast(C::passivate());
            }
        }
    }
}
