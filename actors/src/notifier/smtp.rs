//! The SMTP channel: lettre's SMTP client over connections this module opens and pools
//! (one small pool per application), and the mapping of lettre's errors to
//! [`DeliveryError`] without the server's text, which may quote the address.
//!
//! Connections are opened here rather than by lettre's own pooled transport so that they can
//! set `TCP_NODELAY`: lettre writes a message's body and its end mark in two writes, and with
//! Nagle's algorithm on, the end mark waits for the server's delayed ACK (about 40 ms on
//! Linux) on every message, which capped delivery near 16 / 40 ms = 400 messages/s.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use lettre::{
    Address, Message,
    address::Envelope,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use tokio::{net::TcpStream, time::Instant};

use super::{DeliveryError, MAX_IN_FLIGHT};
use crate::settings::{SmtpSettings, SmtpTls};

/// A pooled connection unused this long is closed rather than reused: relays drop idle
/// clients, and a send on a dropped connection would cost a try.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// An application's SMTP relay and its idle connections; clones share the pool.
#[derive(Clone)]
pub(super) struct Mailer {
    inner: Arc<Relay>,
}

struct Relay {
    host: String,
    port: u16,
    /// `Some`: STARTTLS is required, never opportunistic.
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<(Instant, AsyncSmtpConnection)>>,
}

/// Builds the relay for `settings`; no connection is opened yet.
pub(super) fn mailer(settings: &SmtpSettings) -> Result<Mailer, DeliveryError> {
    let tls = match settings.tls {
        SmtpTls::Starttls => {
            Some(TlsParameters::new_rustls(settings.host.clone()).map_err(|_| DeliveryError::Tls)?)
        }
        SmtpTls::Plain => None,
    };
    let credentials = match (&settings.username, &settings.password) {
        (Some(user), Some(password)) => {
            Some(Credentials::new(user.clone(), password.expose().to_owned()))
        }
        _ => None,
    };
    Ok(Mailer {
        inner: Arc::new(Relay {
            host: settings.host.clone(),
            port: settings.port,
            tls,
            credentials,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }),
    })
}

/// A plain-text e-mail from the configured sender to `to`: its envelope and its bytes.
pub(super) fn message(
    settings: &SmtpSettings,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<(Envelope, Vec<u8>), DeliveryError> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|_| DeliveryError::BadAddress)?;
    let to: Mailbox = to.parse().map_err(|_| DeliveryError::BadAddress)?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .map_err(|_| DeliveryError::BadAddress)?;
    Ok((message.envelope().clone(), message.formatted()))
}

/// Sends one message, on an idle connection if there is one. A pooled connection that turns
/// out to be dead is replaced once, so a relay's idle disconnect never costs a try.
pub(super) async fn send(
    mailer: Mailer,
    envelope: Envelope,
    bytes: Vec<u8>,
) -> Result<(), DeliveryError> {
    let relay = &mailer.inner;
    if let Some(mut conn) = relay.take_idle() {
        match conn.send(&envelope, &bytes).await {
            Ok(_) => {
                relay.put_back(conn);
                return Ok(());
            }
            // The relay answered: the connection was alive and its answer stands.
            Err(err) if err.status().is_some() => {
                conn.abort().await;
                return Err(classify(&err));
            }
            Err(_) => conn.abort().await,
        }
    }

    let mut conn = relay.connect().await?;
    match conn.send(&envelope, &bytes).await {
        Ok(_) => {
            relay.put_back(conn);
            Ok(())
        }
        Err(err) => {
            conn.abort().await;
            Err(classify(&err))
        }
    }
}

impl Relay {
    /// Opens a connection: greeting, EHLO, STARTTLS if required, then AUTH if configured.
    /// A refusal here (a bad password, a relay that turns clients away) says nothing about
    /// the message, so it is never permanent: the message is tried again.
    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|_| DeliveryError::Connect)?;
        stream
            .set_nodelay(true)
            .map_err(|_| DeliveryError::Connect)?;
        let setup = |e: lettre::transport::smtp::Error| match classify(&e) {
            DeliveryError::Refused { code, .. } => DeliveryError::Refused {
                code,
                permanent: false,
            },
            other => other,
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
            .await
            .map_err(setup)?;
        if let Some(tls) = &self.tls {
            conn.starttls(tls.clone(), &self.hello)
                .await
                .map_err(|_| DeliveryError::Tls)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(setup)?;
        }
        Ok(conn)
    }

    /// The most recently used idle connection that is still fresh; stale ones are dropped.
    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((since, conn)) = idle.pop() {
            if since.elapsed() < IDLE_LIMIT && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IN_FLIGHT
        {
            idle.push((Instant::now(), conn));
        }
    }
}

fn classify(err: &lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(code) = err.status() {
        DeliveryError::Refused {
            code: code.into(),
            permanent: err.is_permanent(),
        }
    } else if err.is_timeout() {
        DeliveryError::Timeout
    } else if err.is_tls() {
        DeliveryError::Tls
    } else {
        DeliveryError::Connect
    }
}

/// Whether `address` is one an e-mail can be sent to.
pub(super) fn deliverable(address: &str) -> bool {
    address.parse::<Address>().is_ok()
}
