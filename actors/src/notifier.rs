//! The NotifierActor: delivers tokens and OTPs by e-mail (SMTP) or webhook from a durable
//! outbox, with retries and exponential backoff.
//!
//! A message is rendered and written to the outbox before the caller answers its HTTP request,
//! so an acknowledged message survives a crash; the actor then delivers it in the background.
//! Sends run in spawned tasks, at most [`MAX_IN_FLIGHT`] at once, and report back to the
//! actor, which deletes the record once delivered or given up, or stores the next try. So a
//! slow or dead mail server delays only its own messages, never a request.
//!
//! Delivery is at least once: a crash between a send and the deletion of its record sends
//! that message again after the restart (webhook receivers can deduplicate by the event `id`).
//!
//! What to send is decided here (`prepare`); which message a flow sends, and when, is decided
//! by the engine.

mod actor;
mod smtp;
mod templates;
mod webhook;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use latchkey_storage::{
    Batch, Record, Space, Store,
    records::{OutboxChannel, OutboxKind, OutboxPayload, OutboxRecord},
};
use ractor::{Actor, ActorRef};
use uuid::Uuid;

use self::actor::{NotifierActor, NotifierMsg, NotifierState};

use crate::{
    Error, Result,
    apps::Application,
    context::Context,
    settings::{Channel, DeliverySettings},
};

/// Deliveries running at once; more wait in the actor's queue.
pub(crate) const MAX_IN_FLIGHT: usize = 16;

/// Longest a single try may take, from connecting to the answer; a relay that accepts the
/// connection and then says nothing must not hold a slot for ever.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a message is about; each kind has its own template and webhook event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// A new user's activation token.
    Activation,
    /// An added device's activation token.
    DeviceActivation,
    /// A reset-PIN token.
    ResetPin,
    /// A one-time PIN (templates per purpose).
    Otp,
    /// A Silent MFA verification link.
    // Reserved for Silent MFA, which has no routes yet.
    #[allow(dead_code)]
    MagicLink,
    /// Someone tried to sign up with the user's username; carries no secret.
    AccountExists,
}

impl MessageKind {
    /// The name in templates (`[delivery.templates.<name>]`) and in webhook events (`type`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            MessageKind::Activation => "activation",
            MessageKind::DeviceActivation => "device_activation",
            MessageKind::ResetPin => "reset_pin",
            MessageKind::Otp => "otp",
            MessageKind::MagicLink => "magic_link",
            MessageKind::AccountExists => "account_exists",
        }
    }

    fn stored(self) -> OutboxKind {
        match self {
            MessageKind::Activation => OutboxKind::Activation,
            MessageKind::DeviceActivation => OutboxKind::DeviceActivation,
            MessageKind::ResetPin => OutboxKind::ResetPin,
            MessageKind::Otp => OutboxKind::Otp,
            MessageKind::MagicLink => OutboxKind::MagicLink,
            MessageKind::AccountExists => OutboxKind::AccountExists,
        }
    }
}

/// A message to deliver: its kind, whom it is for, and the secret it carries.
pub(crate) struct Outgoing {
    /// What it is about.
    pub(crate) kind: MessageKind,
    /// The user, if it is for a known one.
    pub(crate) user: Option<Uuid>,
    /// The username as stored, for `{username}`.
    pub(crate) username: Option<String>,
    /// Where an e-mail goes; required for the SMTP channel.
    pub(crate) email: Option<String>,
    /// Passed on in webhook events, for receivers that send texts.
    pub(crate) mobile: Option<String>,
    /// The OTP's purpose, for `{purpose}` and per-purpose templates.
    pub(crate) purpose: Option<String>,
    /// The token, OTP or link.
    pub(crate) secret: String,
}

impl std::fmt::Debug for Outgoing {
    // The secret and the addresses never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("kind", &self.kind)
            .field("user", &self.user)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// Renders `message` for the application's channel: `None` when the application has no
/// channel (the caller returns the secret instead). Nothing is written.
///
/// # Errors
///
/// [`Error::MissingField`] or [`Error::InvalidField`] (`email`) when the SMTP channel has no
/// usable address to send to; [`Error::Internal`] when the channel is chosen but not
/// configured (the config loader refuses that, so only an embedding can get here).
pub(crate) fn prepare(
    app: &Application,
    message: &Outgoing,
    now: u64,
) -> Result<Option<OutboxRecord>> {
    let delivery = &app.settings.delivery;
    let id = Uuid::now_v7();
    let (channel, recipient, payload) = match delivery.channel {
        Channel::None => return Ok(None),
        Channel::Smtp => {
            if delivery.smtp.is_none() {
                return Err(misconfigured(app, "smtp"));
            }
            let email = message
                .email
                .as_deref()
                .ok_or(Error::MissingField("email"))?;
            if !smtp::deliverable(email) {
                return Err(Error::InvalidField {
                    field: "email",
                    reason: "is not an address mail can be sent to",
                });
            }
            let (subject, body) = templates::render(&delivery.templates, message, &app.name);
            let payload = OutboxPayload::Email { subject, body };
            (OutboxChannel::Smtp, Some(email.to_owned()), payload)
        }
        Channel::Webhook => {
            if delivery.webhook.is_none() {
                return Err(misconfigured(app, "webhook"));
            }
            let event = templates::event(id, app.uuid, message, now);
            (
                OutboxChannel::Webhook,
                None,
                OutboxPayload::Webhook { event },
            )
        }
    };

    Ok(Some(OutboxRecord {
        id,
        app: app.uuid,
        channel,
        kind: message.kind.stored(),
        recipient,
        payload,
        attempts: 0,
        next_attempt: now,
        created: now,
    }))
}

fn misconfigured(app: &Application, channel: &'static str) -> Error {
    tracing::error!(app_id = %app.uuid, channel, "delivery channel chosen but not configured");
    Error::Internal(format!("delivery channel {channel} is not configured").into())
}

/// The handle the engine holds: queues messages and stops the actor.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    actor: ActorRef<NotifierMsg>,
    store: Arc<dyn Store>,
    pending: Arc<AtomicUsize>,
}

impl Notifier {
    /// Starts the actor, which loads the outbox and resumes every pending message.
    pub(crate) async fn start(ctx: Arc<Context>) -> Result<Self> {
        let store = ctx.store.clone();
        let loaded = tokio::task::spawn_blocking(move || load_outbox(store.as_ref()))
            .await
            .map_err(Error::internal)??;
        let pending = Arc::new(AtomicUsize::new(0));
        let mut state = NotifierState::new(ctx.clone(), webhook::client()?, pending.clone());
        if !loaded.is_empty() {
            tracing::info!(pending = loaded.len(), "resuming queued deliveries");
        }
        for record in loaded {
            state.accept(record);
        }
        let (actor, _) = Actor::spawn(None, NotifierActor, state)
            .await
            .map_err(Error::internal)?;
        Ok(Self {
            actor,
            store: ctx.store.clone(),
            pending,
        })
    }

    /// Writes `record` to the outbox and waits until it is durable, then hands it to the
    /// actor. Returns before any delivery is tried.
    pub(crate) async fn enqueue(&self, record: OutboxRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Space::Outbox, record.id.as_bytes().to_vec(), &record)?;
        self.store.commit(batch).await?;
        self.submit(record);
        Ok(())
    }

    /// Hands over a record the caller already made durable (in its own batch).
    pub(crate) fn submit(&self, record: OutboxRecord) {
        let id = record.id;
        let (app_id, kind) = (record.app, record.kind);
        tracing::debug!(outbox_id = %id, %app_id, ?kind, "message queued");
        if self
            .actor
            .cast(NotifierMsg::Submit(Box::new(record)))
            .is_err()
        {
            // Limitation: the notifier is not respawned if it fails; its messages wait in the
            // outbox until the next start.
            tracing::warn!(outbox_id = %id, "notifier not running; message kept for next start");
        }
    }

    /// Messages not yet delivered or given up.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Stops the actor; sends still running are abandoned and their messages stay queued.
    pub(crate) async fn shutdown(&self) {
        let _ = self
            .actor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }
}

/// Reads every queued message, oldest first. A record this build cannot read is left alone.
fn load_outbox(store: &dyn Store) -> Result<Vec<OutboxRecord>> {
    let mut out = Vec::new();
    for (key, value) in store.scan_prefix(Space::Outbox, &[])? {
        match OutboxRecord::decode(&value) {
            Ok(record) => out.push(record),
            Err(err) => {
                let id = Uuid::from_slice(&key).unwrap_or_default();
                tracing::warn!(outbox_id = %id, err = %err, "unreadable outbox record skipped");
            }
        }
    }
    Ok(out)
}

/// The wait before try `failed + 1`: base · 2^(failed − 1), at most the cap.
pub(crate) fn backoff(settings: &DeliverySettings, failed: u32) -> u64 {
    let factor = 1u64
        .checked_shl(failed.saturating_sub(1))
        .unwrap_or(u64::MAX);
    let base = settings.retry_base_secs.max(1);
    base.saturating_mul(factor)
        .min(settings.retry_cap_secs.max(base))
}

/// Why a delivery failed, without the server's text (which may quote the address).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The application or its channel settings are gone.
    #[error("the application has no such channel configured any more")]
    NotConfigured,
    /// The stored address or sender cannot be used.
    #[error("the address cannot be used")]
    BadAddress,
    /// No connection could be made.
    #[error("could not connect")]
    Connect,
    /// The server did not answer in time.
    #[error("timed out")]
    Timeout,
    /// TLS could not be set up or the certificate was refused.
    #[error("TLS failed")]
    Tls,
    /// The SMTP server refused with a reply code.
    #[error("refused with SMTP code {code}")]
    Refused {
        /// The reply code.
        code: u16,
        /// A 5xx code: trying again will not help.
        permanent: bool,
    },
    /// The webhook answered with a non-2xx status.
    #[error("answered HTTP {0}")]
    Status(u16),
}

impl DeliveryError {
    /// Whether trying again cannot help.
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            DeliveryError::NotConfigured
                | DeliveryError::BadAddress
                | DeliveryError::Refused {
                    permanent: true,
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let settings = DeliverySettings::default();
        let waits: Vec<u64> = (1..=10).map(|n| backoff(&settings, n)).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(&settings, 200), 300, "no overflow on absurd counts");
    }

    #[test]
    fn only_hopeless_failures_are_permanent() {
        assert!(DeliveryError::BadAddress.is_permanent());
        assert!(
            DeliveryError::Refused {
                code: 550,
                permanent: true
            }
            .is_permanent()
        );
        assert!(
            !DeliveryError::Refused {
                code: 451,
                permanent: false
            }
            .is_permanent()
        );
        assert!(!DeliveryError::Connect.is_permanent());
        assert!(!DeliveryError::Status(500).is_permanent());
    }
}
