//! The SMTP channel: one pooled lettre transport per application, and the mapping of lettre's
//! errors to [`DeliveryError`] (without the server's text, which may quote the address).

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        PoolConfig,
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};

use super::{DeliveryError, MAX_IN_FLIGHT};
use crate::settings::{SmtpSettings, SmtpTls};

/// Longest wait for any one step of an SMTP conversation.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled SMTP transport; clones share the pool.
pub(super) type Mailer = AsyncSmtpTransport<Tokio1Executor>;

/// Builds the transport for `settings`. STARTTLS is required, never opportunistic: a relay
/// that does not offer it gets nothing.
pub(super) fn mailer(settings: &SmtpSettings) -> Result<Mailer, DeliveryError> {
    let tls = match settings.tls {
        SmtpTls::Starttls => Tls::Required(
            TlsParameters::new_rustls(settings.host.clone()).map_err(|_| DeliveryError::Tls)?,
        ),
        SmtpTls::Plain => Tls::None,
    };
    let mut builder = Mailer::builder_dangerous(settings.host.as_str())
        .port(settings.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT))
        .pool_config(PoolConfig::new().max_size(MAX_IN_FLIGHT as u32));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    Ok(builder.build())
}

/// A plain-text e-mail from the configured sender to `to`.
pub(super) fn message(
    settings: &SmtpSettings,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<Message, DeliveryError> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|_| DeliveryError::BadAddress)?;
    let to: Mailbox = to.parse().map_err(|_| DeliveryError::BadAddress)?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .map_err(|_| DeliveryError::BadAddress)
}

/// Sends one message over a pooled connection.
pub(super) async fn send(mailer: Mailer, message: Message) -> Result<(), DeliveryError> {
    mailer.send(message).await.map(|_| ()).map_err(|err| {
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
    })
}
