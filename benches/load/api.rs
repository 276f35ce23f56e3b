//! The calls the driver makes (sign-up, activate user, login, and an OTP issued and validated),
//! as the original clients or a customer's back end make them, and the labels failures are
//! counted under.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use uuid::Uuid;

use crate::server::Target;

const BASE: &str = "/authenticate/v1-2";

/// A failed request, as the label it is counted under: status and code, or the transport error.
pub(crate) type Failure = String;

/// Counted failures by label, in a stable order for printing.
pub(crate) type Failures = BTreeMap<Failure, u64>;

/// A device as its owner's phone holds it: the authKey changes after every login.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) username: String,
    device_uuid: String,
    pub(crate) auth_key: String,
    hashed_pin: String,
    /// False once the server refused the authKey as stale: nothing can log that device in again.
    pub(crate) usable: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignUp<'a> {
    application_uuid: &'a str,
    username: &'a str,
    email: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignUpReply {
    activation_token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActivateUser<'a> {
    application_uuid: &'a str,
    username: &'a str,
    activation_token: &'a str,
    hashed_pin: &'a str,
    device_name: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivateReply {
    device_uuid: String,
    auth_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Login<'a> {
    application_uuid: &'a str,
    username: &'a str,
    device_uuid: &'a str,
    auth_key: &'a str,
    hashed_pin: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginReply {
    auth_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IssueOtp<'a> {
    application_uuid: &'a str,
    username: &'a str,
    purpose: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssueOtpReply {
    /// Absent when the application delivers OTPs itself; the bench app has no channel.
    otp: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ValidateOtp<'a> {
    application_uuid: &'a str,
    username: &'a str,
    purpose: &'a str,
    otp: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorEnvelope {
    response_status: ResponseStatus,
}

#[derive(Deserialize)]
struct ResponseStatus {
    code: String,
}

/// Signs user `index` up and activates its first device.
pub(crate) async fn register(
    client: &reqwest::Client,
    target: &Target,
    index: usize,
) -> Result<Device, Failure> {
    let app = target.app.application_uuid.as_str();
    let username = format!("bench-{index:07}");
    let email = format!("{username}@example.com");
    let sign_up = SignUp {
        application_uuid: app,
        username: &username,
        email: &email,
    };
    let reply: SignUpReply = post(client, target, "/self-service/user", &sign_up).await?;

    // A v4 UUID is 16 random bytes, enough for a salt, without another dependency.
    let hashed_pin = hash_pin(Uuid::new_v4().as_bytes(), &format!("{:04}", index % 10_000));
    let activate = ActivateUser {
        application_uuid: app,
        username: &username,
        activation_token: &reply.activation_token,
        hashed_pin: &hashed_pin,
        device_name: "bench",
    };
    let path = "/authentication/activate/user";
    let reply: ActivateReply = post(client, target, path, &activate).await?;

    let (device_uuid, auth_key) = (reply.device_uuid, reply.auth_key);
    Ok(Device {
        username,
        device_uuid,
        auth_key,
        hashed_pin,
        usable: true,
    })
}

/// Logs the device in and returns the authKey that replaces the one it presented.
pub(crate) async fn login(
    client: &reqwest::Client,
    target: &Target,
    device: &Device,
) -> Result<String, Failure> {
    let login = Login {
        application_uuid: &target.app.application_uuid,
        username: &device.username,
        device_uuid: &device.device_uuid,
        auth_key: &device.auth_key,
        hashed_pin: &device.hashed_pin,
    };
    let reply: LoginReply = post(client, target, "/authentication/login", &login).await?;
    Ok(reply.auth_key)
}

/// Has an OTP issued for `username` through the back-end route, as a customer's back end would,
/// then validates it: one pair. A failure is labelled with the step that failed.
pub(crate) async fn otp_pair(
    client: &reqwest::Client,
    target: &Target,
    username: &str,
    purpose: &str,
) -> Result<(), Failure> {
    let app = target.app.application_uuid.as_str();
    let issue = IssueOtp {
        application_uuid: app,
        username,
        purpose,
    };
    let reply: IssueOtpReply = post(client, target, "/self-service/otp", &issue)
        .await
        .map_err(|failure| format!("issue: {failure}"))?;
    let otp = reply
        .otp
        .ok_or_else(|| "issue: 200 without an otp (delivered by the server?)".to_owned())?;

    let validate = ValidateOtp {
        application_uuid: app,
        username,
        purpose,
        otp: &otp,
    };
    let _: IgnoredAny = post(client, target, "/self-service/otp/validate", &validate)
        .await
        .map_err(|failure| format!("validate: {failure}"))?;
    Ok(())
}

/// What the original clients send: Base64 of SHA-512 over the device's salt, then the PIN.
fn hash_pin(salt: &[u8], pin: &str) -> String {
    let mut hasher = Sha512::new();
    hasher.update(salt);
    hasher.update(pin.as_bytes());
    STANDARD.encode(hasher.finalize())
}

async fn post<B: Serialize, R: DeserializeOwned>(
    client: &reqwest::Client,
    target: &Target,
    path: &str,
    body: &B,
) -> Result<R, Failure> {
    let response = client
        .post(format!("{}{BASE}{path}", target.url))
        .header("x-api-key", &target.app.api_key)
        .json(body)
        .send()
        .await
        .map_err(|err| transport_failure(&err))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|err| transport_failure(&err))?;

    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(envelope) => format!("{} {}", status.as_u16(), envelope.response_status.code),
            Err(_) => format!("{} without an envelope", status.as_u16()),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| format!("{} with an unexpected body", status.as_u16()))
}

fn transport_failure(err: &reqwest::Error) -> Failure {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    kind.to_owned()
}
