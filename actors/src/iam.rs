//! The IAM back office: who may call it (the requestor check) and what it may do to users and
//! devices of its application.
//!
//! The requestor proves itself with a token: checked by RFC 7662 introspection when the
//! application names an endpoint (answers are cached briefly), or else it must be a Latchkey
//! access token of a user of the same application holding the `iam-admin` role.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    AdminUserPatch, DevicePatch, DeviceView, Engine, Error, IssuedOtp, Result, UserView, Username,
    apps::Application, otp::OtpSubject, user::UserMsg,
};

/// The role that opens the IAM API.
pub const IAM_ADMIN: &str = "iam-admin";

/// A checked IAM requestor.
#[derive(Debug, Clone)]
pub struct Requestor {
    /// The requestor's username, as the token names it.
    pub username: String,
    /// A stable id for the audit log: the userUuid, or the introspected `sub`; never an
    /// e-mail address.
    pub subject: String,
    /// Its userUuid when the token is Latchkey's own.
    pub user: Option<Uuid>,
}

/// Which user an IAM call is about.
#[derive(Debug, Clone)]
pub enum UserRef {
    /// By username.
    Username(String),
    /// By userUuid.
    Uuid(Uuid),
}

/// Recent introspection answers, keyed by a hash of the token (never the token itself).
#[derive(Debug, Default)]
pub(crate) struct IntrospectionCache {
    answers: Mutex<HashMap<[u8; 32], (Instant, Introspection)>>,
}

const CACHE_CAP: usize = 10_000;

#[derive(Debug, Clone, Deserialize)]
struct Introspection {
    active: bool,
    username: Option<String>,
    sub: Option<String>,
    scope: Option<String>,
}

impl Engine {
    /// Checks an IAM requestor against the application's rules.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJwt`] for a missing, invalid, expired or foreign token;
    /// [`Error::IamForbidden`] for a valid one without the role or naming another user;
    /// [`Error::Unavailable`] when the introspection endpoint does not answer.
    pub async fn iam_requestor(
        &self,
        app: &Application,
        token: Option<&str>,
        requestor_username: Option<&str>,
    ) -> Result<Requestor> {
        let token = token
            .filter(|t| !t.is_empty() && t.len() <= 8192)
            .ok_or(Error::InvalidJwt)?;
        let named = requestor_username.ok_or(Error::MissingField("requestorUsername"))?;
        let named = Username::parse(named).map_err(|_| Error::IamForbidden)?;

        match &app.settings.iam.introspection_url {
            Some(url) => self.introspect(app, url, token, &named).await,
            None => self.own_requestor(app, token, &named).await,
        }
    }

    /// A user's details, by username or userUuid.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`] for a user not of this application.
    pub async fn iam_user(&self, app: &Application, user: &UserRef) -> Result<UserView> {
        let uuid = self.iam_target(app, user)?;
        self.call_user(uuid, UserMsg::View).await
    }

    /// Locks, unlocks or edits a user; a lock ends its sessions at once.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`]; validation errors.
    pub async fn iam_patch_user(
        &self,
        app: &Application,
        user: &UserRef,
        patch: AdminUserPatch,
    ) -> Result<()> {
        let uuid = self.iam_target(app, user)?;
        let patch = AdminUserPatch {
            email: patch
                .email
                .as_deref()
                .map(crate::engine::validate_email)
                .transpose()?,
            mobile_number: patch
                .mobile_number
                .as_deref()
                .map(crate::engine::validate_mobile)
                .transpose()?,
            ..patch
        };
        self.call_user(uuid, |reply| UserMsg::AdminPatch(patch.clone(), reply))
            .await
    }

    /// Deletes a user with everything it owns.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`].
    pub async fn iam_delete_user(&self, app: &Application, user: &UserRef) -> Result<()> {
        let uuid = self.iam_target(app, user)?;
        self.call_user(uuid, UserMsg::Delete).await
    }

    /// A user's devices.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`].
    pub async fn iam_devices(&self, app: &Application, user: &UserRef) -> Result<Vec<DeviceView>> {
        let uuid = self.iam_target(app, user)?;
        let now = self.now();
        self.call_user(uuid, |reply| UserMsg::Devices { now, reply })
            .await
    }

    /// Locks, unlocks or renames a device; only IAM lifts an IAM lock.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], [`Error::DeviceNotFound`].
    pub async fn iam_patch_device(
        &self,
        app: &Application,
        user: &UserRef,
        device: Uuid,
        mut patch: DevicePatch,
    ) -> Result<()> {
        let uuid = self.iam_target(app, user)?;
        patch.device_name = patch
            .device_name
            .as_deref()
            .map(crate::engine::validate_device_name)
            .transpose()?;
        self.call_user(uuid, |reply| UserMsg::AdminPatchDevice {
            device,
            patch: patch.clone(),
            reply,
        })
        .await
    }

    /// Removes a device.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], [`Error::DeviceNotFound`].
    pub async fn iam_delete_device(
        &self,
        app: &Application,
        user: &UserRef,
        device: Uuid,
    ) -> Result<()> {
        let uuid = self.iam_target(app, user)?;
        self.call_user(uuid, |reply| UserMsg::DeleteDevice { device, reply })
            .await
            .map_err(|e| {
                if matches!(e, Error::Forbidden) {
                    Error::DeviceNotFound
                } else {
                    e
                }
            })
    }

    /// Issues an OTP a support desk reads out: always returned, with the user's contacts.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`]; validation errors.
    pub async fn iam_issue_otp(
        &self,
        app: &Application,
        user: &UserRef,
        purpose: &str,
        ttl: Option<u64>,
    ) -> Result<IssuedOtp> {
        let uuid = self.iam_target(app, user)?;
        let record = self.otp_user(app, &OtpSubject::UserUuid(uuid))?;
        let mut issued = self.issue_otp_for(app, &record, purpose, ttl).await?;
        issued.user_email = Some(record.email);
        issued.mobile_number = record.mobile_number;
        Ok(issued)
    }

    /// Gives a user a role (the CLI's `user grant`).
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`].
    pub async fn grant_role(&self, app: &Application, username: &str, role: &str) -> Result<()> {
        let uuid = self.require_user(app, username)?;
        let role = role.to_owned();
        self.call_user(uuid, |reply| UserMsg::GrantRole(role.clone(), reply))
            .await
    }

    // == Internals

    fn iam_target(&self, app: &Application, user: &UserRef) -> Result<Uuid> {
        let subject = match user {
            UserRef::Username(name) => OtpSubject::Username(name.clone()),
            UserRef::Uuid(uuid) => OtpSubject::UserUuid(*uuid),
        };
        Ok(self.otp_user(app, &subject)?.uuid)
    }

    async fn own_requestor(
        &self,
        app: &Application,
        token: &str,
        named: &Username,
    ) -> Result<Requestor> {
        let who = match self.authenticate(token, Some(app.uuid)).await {
            Ok(who) => who,
            Err(Error::Unavailable) => return Err(Error::Unavailable),
            Err(_) => return Err(Error::InvalidJwt),
        };
        let view = self
            .call_user(who.user, UserMsg::View)
            .await
            .map_err(|_| Error::InvalidJwt)?;
        let same_user = Username::parse(&view.username).is_ok_and(|u| u.key() == named.key());
        if !same_user || !view.roles.iter().any(|r| r == IAM_ADMIN) {
            return Err(Error::IamForbidden);
        }
        let subject = who.user.to_string();
        Ok(Requestor {
            username: view.username,
            subject,
            user: Some(who.user),
        })
    }

    async fn introspect(
        &self,
        app: &Application,
        url: &str,
        token: &str,
        named: &Username,
    ) -> Result<Requestor> {
        let settings = &app.settings.iam;
        let key: [u8; 32] = Sha256::digest(format!("{}\0{token}", app.uuid)).into();
        let cached = self
            .inner
            .iam_cache
            .get(&key, Duration::from_secs(settings.introspection_cache_secs));
        let answer = match cached {
            Some(answer) => answer,
            None => {
                let answer = self.call_introspection(app, url, token).await?;
                self.inner.iam_cache.put(key, answer.clone());
                answer
            }
        };

        if !answer.active {
            return Err(Error::InvalidJwt);
        }
        let name = answer
            .username
            .as_deref()
            .or(answer.sub.as_deref())
            .unwrap_or_default();
        let same_user = Username::parse(name).is_ok_and(|u| u.key() == named.key());
        let has_role = answer
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .any(|s| s == IAM_ADMIN);
        if !same_user || !has_role {
            return Err(Error::IamForbidden);
        }
        let subject = answer
            .sub
            .clone()
            .unwrap_or_else(|| "introspected".to_owned());
        Ok(Requestor {
            username: name.to_owned(),
            subject,
            user: None,
        })
    }

    async fn call_introspection(
        &self,
        app: &Application,
        url: &str,
        token: &str,
    ) -> Result<Introspection> {
        let settings = &app.settings.iam;
        let mut request = self
            .inner
            .http
            .post(url)
            .timeout(Duration::from_millis(settings.introspection_timeout_ms))
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        if let Some(id) = &settings.introspection_client_id {
            request = request.basic_auth(id, settings.introspection_client_secret.as_deref());
        }
        let response = request.send().await.map_err(|err| {
            tracing::warn!(app_id = %app.uuid, err = %err, "introspection endpoint unreachable");
            Error::Unavailable
        })?;
        if !response.status().is_success() {
            let status = response.status();
            tracing::warn!(app_id = %app.uuid, status = %status, "introspection refused");
            return Err(Error::Unavailable);
        }
        response
            .json::<Introspection>()
            .await
            .map_err(|_| Error::Unavailable)
    }
}

impl IntrospectionCache {
    fn get(&self, key: &[u8; 32], max_age: Duration) -> Option<Introspection> {
        let answers = self.answers.lock().ok()?;
        let (at, answer) = answers.get(key)?;
        // Limitation: the cache ignores the token's own `exp`; keep `introspection_cache_secs`
        // short so a revoked requestor token is refused soon after.
        #[allow(clippy::disallowed_methods)] // a monotonic age, not wall-clock time
        let fresh = at.elapsed() < max_age;
        fresh.then(|| answer.clone())
    }

    fn put(&self, key: [u8; 32], answer: Introspection) {
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= CACHE_CAP {
                answers.clear();
            }
            #[allow(clippy::disallowed_methods)] // a monotonic age, not wall-clock time
            answers.insert(key, (Instant::now(), answer));
        }
    }
}
