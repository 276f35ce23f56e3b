//! The NotifierActor itself: the in-memory queue of the outbox (due, waiting, in flight),
//! the spawned sends, and the record updates their outcomes cause.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use latchkey_storage::{
    Batch, Space,
    records::{OutboxPayload, OutboxRecord},
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::{task::JoinHandle, time::Instant};
use uuid::Uuid;

use super::{DeliveryError, MAX_IN_FLIGHT, SEND_TIMEOUT, backoff, smtp, webhook};
use crate::context::Context;

pub(crate) enum NotifierMsg {
    /// A durable record to deliver.
    Submit(Box<OutboxRecord>),
    /// The earliest waiting retry may be due.
    Wake,
    /// A send finished.
    Finished {
        id: Uuid,
        outcome: std::result::Result<(), DeliveryError>,
    },
}

pub(crate) struct NotifierState {
    ctx: Arc<Context>,
    http: reqwest::Client,
    /// SMTP relays (each with its idle connections) by application, built on first use.
    mailers: HashMap<Uuid, smtp::Mailer>,
    // Limitation: every queued record is held in memory; a backlog of millions (a mail server
    // down for days under heavy sign-up) costs about a kilobyte each.
    records: HashMap<Uuid, OutboxRecord>,
    /// Records waiting for their next try, by when.
    waiting: BTreeSet<(Instant, Uuid)>,
    /// Records due, waiting for a free delivery slot.
    ready: VecDeque<Uuid>,
    in_flight: HashMap<Uuid, JoinHandle<()>>,
    timer: Option<(Instant, JoinHandle<()>)>,
    pending: Arc<AtomicUsize>,
}

/// The actor that owns the outbox's in-memory queue. See the module doc.
pub(crate) struct NotifierActor;

impl Actor for NotifierActor {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = NotifierState;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMsg>,
        args: NotifierState,
    ) -> std::result::Result<NotifierState, ActorProcessingErr> {
        Ok(args)
    }

    /// Starts the deliveries resumed from the outbox.
    async fn post_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        state: &mut NotifierState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.pump(&myself);
        state.arm(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NotifierMsg>,
        state: &mut NotifierState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if let Some((_, timer)) = state.timer.take() {
            timer.abort();
        }
        for (_, task) in state.in_flight.drain() {
            task.abort();
        }
        Ok(())
    }

    #[tracing::instrument(name = "notifier", skip_all)]
    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        state: &mut NotifierState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            NotifierMsg::Submit(record) => state.accept(*record),
            NotifierMsg::Wake => {
                state.timer = None;
                state.wake();
            }
            NotifierMsg::Finished { id, outcome } => state.finished(id, outcome),
        }
        state.pump(&myself);
        state.arm(&myself);
        Ok(())
    }
}

impl NotifierState {
    pub(super) fn new(ctx: Arc<Context>, http: reqwest::Client, pending: Arc<AtomicUsize>) -> Self {
        Self {
            ctx,
            http,
            mailers: HashMap::new(),
            records: HashMap::new(),
            waiting: BTreeSet::new(),
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            timer: None,
            pending,
        }
    }

    /// Queues a record: due now, or waiting for its next try.
    pub(super) fn accept(&mut self, record: OutboxRecord) {
        let id = record.id;
        let wait = record.next_attempt.saturating_sub(self.ctx.clock.now());
        if self.records.insert(id, record).is_some() {
            return; // already queued (resumed and submitted at once): keep one entry
        }
        self.pending.store(self.records.len(), Ordering::Relaxed);
        if wait == 0 {
            self.ready.push_back(id);
        } else {
            self.waiting
                .insert((Instant::now() + Duration::from_secs(wait), id));
        }
    }

    /// Moves every waiting record whose time has come to the ready queue.
    fn wake(&mut self) {
        let now = Instant::now();
        while let Some(&(due, id)) = self.waiting.first() {
            if due > now {
                break;
            }
            self.waiting.pop_first();
            self.ready.push_back(id);
        }
    }

    /// Starts sends while slots are free.
    fn pump(&mut self, myself: &ActorRef<NotifierMsg>) {
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(record) = self.records.get(&id).cloned() else {
                continue;
            };
            let send = self.send(&record);
            let reply = myself.clone();
            let task = tokio::spawn(async move {
                let outcome = tokio::time::timeout(SEND_TIMEOUT, send)
                    .await
                    .unwrap_or(Err(DeliveryError::Timeout));
                let _ = reply.cast(NotifierMsg::Finished { id, outcome });
            });
            self.in_flight.insert(id, task);
        }
    }

    /// The send of one record, as a future that owns everything it needs.
    fn send(&mut self, record: &OutboxRecord) -> PendingSend {
        let Some(app) = self.ctx.apps.get(record.app) else {
            return failed(DeliveryError::NotConfigured);
        };
        let delivery = &app.settings.delivery;
        match (&record.payload, &record.recipient) {
            (OutboxPayload::Email { subject, body }, Some(to)) => {
                let Some(settings) = delivery.smtp.as_ref() else {
                    return failed(DeliveryError::NotConfigured);
                };
                let mailer = match self.mailers.get(&app.uuid) {
                    Some(mailer) => mailer.clone(),
                    None => match smtp::mailer(settings) {
                        Ok(mailer) => {
                            self.mailers.insert(app.uuid, mailer.clone());
                            mailer
                        }
                        Err(err) => return failed(err),
                    },
                };
                match smtp::message(settings, to, subject, body) {
                    Ok((envelope, bytes)) => Box::pin(smtp::send(mailer, envelope, bytes)),
                    Err(err) => failed(err),
                }
            }
            (OutboxPayload::Webhook { event }, _) => {
                let Some(settings) = delivery.webhook.as_ref() else {
                    return failed(DeliveryError::NotConfigured);
                };
                Box::pin(webhook::post(
                    self.http.clone(),
                    settings.clone(),
                    event.clone(),
                    self.ctx.clock.clone(),
                ))
            }
            (OutboxPayload::Email { .. }, None) => failed(DeliveryError::BadAddress),
        }
    }

    /// Deletes a delivered or hopeless record, or stores its next try.
    fn finished(&mut self, id: Uuid, outcome: std::result::Result<(), DeliveryError>) {
        self.in_flight.remove(&id);
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        let (app, kind) = (record.app, record.kind);

        let err = match outcome {
            Ok(()) => {
                let attempts = record.attempts + 1;
                tracing::debug!(outbox_id = %id, app_id = %app, ?kind, attempts, "delivered");
                self.forget(id);
                return;
            }
            Err(err) => err,
        };
        record.attempts += 1;
        let settings = self
            .ctx
            .apps
            .get(app)
            .map(|a| a.settings.delivery.clone())
            .unwrap_or_default();
        if err.is_permanent() || record.attempts >= settings.max_tries {
            let attempts = record.attempts;
            tracing::warn!(
                outbox_id = %id, app_id = %app, ?kind, attempts, err = %err,
                "delivery given up; message deleted"
            );
            self.forget(id);
            return;
        }

        let wait = backoff(&settings, record.attempts);
        record.next_attempt = self.ctx.clock.now() + wait;
        let attempts = record.attempts;
        tracing::debug!(
            outbox_id = %id, attempts, retry_in_secs = wait, err = %err,
            "delivery failed; will retry"
        );
        let mut batch = Batch::new();
        match batch.put(Space::Outbox, id.as_bytes().to_vec(), &*record) {
            Ok(()) => self.write(batch),
            Err(err) => tracing::error!(outbox_id = %id, err = ?err, "outbox record not encodable"),
        }
        self.waiting
            .insert((Instant::now() + Duration::from_secs(wait), id));
    }

    /// Drops a record from memory and the outbox.
    fn forget(&mut self, id: Uuid) {
        self.records.remove(&id);
        self.pending.store(self.records.len(), Ordering::Relaxed);
        let mut batch = Batch::new();
        batch.delete(Space::Outbox, id.as_bytes().to_vec());
        self.write(batch);
    }

    /// Submits a write without waiting for its fsync, so the actor keeps delivering; the
    /// store applies batches in submission order, so a later write of the same record wins.
    /// A write lost in a crash only means one more try (or one more copy) after the restart.
    fn write(&self, batch: Batch) {
        let commit = self.ctx.store.commit(batch);
        tokio::spawn(async move {
            if let Err(err) = commit.await {
                tracing::error!(err = ?err, "outbox write failed");
            }
        });
    }

    /// Sets one timer for the earliest waiting record.
    fn arm(&mut self, myself: &ActorRef<NotifierMsg>) {
        let Some(&(due, _)) = self.waiting.first() else {
            return;
        };
        if let Some((armed, timer)) = &self.timer {
            if *armed <= due && !timer.is_finished() {
                return;
            }
            timer.abort();
        }
        let wait = due.saturating_duration_since(Instant::now());
        let me = myself.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = me.cast(NotifierMsg::Wake);
        });
        self.timer = Some((due, timer));
    }
}

/// One send as a boxed future that owns what it needs, so both channels fit one queue.
type PendingSend =
    Pin<Box<dyn Future<Output = std::result::Result<(), DeliveryError>> + Send + 'static>>;

fn failed(err: DeliveryError) -> PendingSend {
    Box::pin(std::future::ready(Err(err)))
}
