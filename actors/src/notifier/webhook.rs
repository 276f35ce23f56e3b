//! The webhook channel: a signed HTTP POST of the event's JSON.
//!
//! `X-Latchkey-Signature: t=<epoch secs>,v1=<hex HMAC-SHA-256 of "<t>.<body>">`, keyed with
//! the webhook secret. The timestamp is part of what is signed, so a receiver that refuses
//! old timestamps also refuses replays of a captured request.

use std::{fmt::Write as _, time::Duration};

use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use sha2::Sha256;

use super::DeliveryError;
use crate::{Clock, Error, Result, settings::WebhookSettings};

/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "X-Latchkey-Signature";

/// Longest wait for the receiver's answer; a slow receiver is retried later.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client every webhook send shares (and its connection pool). It follows no
/// redirects, so a signed event goes only where it was configured to go.
pub(super) fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(Error::internal)
}

/// The header value for `body` sent at `t`.
pub(crate) fn signature(secret: &[u8], t: u64, body: &str) -> Result<String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(Error::internal)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in mac.finalize().into_bytes() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(format!("t={t},v1={hex}"))
}

/// Posts `event`, signed at the time of this try. Any 2xx answer is a delivery.
pub(super) async fn post(
    client: reqwest::Client,
    settings: WebhookSettings,
    event: String,
    clock: Clock,
) -> std::result::Result<(), DeliveryError> {
    let header = signature(settings.secret.expose().as_bytes(), clock.now(), &event)
        .map_err(|_| DeliveryError::NotConfigured)?;
    let answer = client
        .post(&settings.url)
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, header)
        .body(event)
        .send()
        .await
        .map_err(|err| {
            if err.is_timeout() {
                DeliveryError::Timeout
            } else {
                DeliveryError::Connect
            }
        })?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(answer.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Reference from Python: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
        let header = signature(b"key", 1_700_000_000, "{}").unwrap();
        assert_eq!(
            header,
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn another_body_or_time_gives_another_signature() {
        let sign = |key: &[u8], t, body| signature(key, t, body).unwrap();
        let one = sign(b"key", 1, "{\"a\":1}");
        assert_ne!(one, sign(b"key", 1, "{\"a\":2}"));
        assert_ne!(one, sign(b"key", 2, "{\"a\":1}"));
        assert_ne!(one, sign(b"other", 1, "{\"a\":1}"));
    }
}
