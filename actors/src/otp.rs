//! One-time PINs: issued per user and purpose (or anonymously, by otpUuid), each held by a
//! session actor that counts attempts exactly, so a burst of guesses gets no more than the
//! allowed tries evaluated.

use latchkey_storage::{
    Record, Space,
    records::{SessionKind, SessionRecord, UserRecord},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    AuditEvent, AuditKind, Engine, Error, Principal, Result,
    apps::Application,
    crypto::{self, Purpose},
    engine::owner,
    notifier::{MessageKind, Outgoing},
    session::{SessionMsg, Verdict},
};

/// Who an OTP belongs to.
#[derive(Debug, Clone)]
pub enum OtpSubject {
    /// A user, by username.
    Username(String),
    /// A user, by userUuid.
    UserUuid(Uuid),
}

/// An issued OTP, as the routes answer it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedOtp {
    /// The code, present only when it is not delivered by the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp: Option<String>,
    /// Its public id.
    pub otp_uuid: Uuid,
    /// Epoch seconds.
    pub date_created: u64,
    /// Epoch seconds.
    pub date_expired: u64,
    /// Seconds it lives.
    pub ttl: u64,
    /// The user's e-mail address (IAM answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    /// The user's mobile number (IAM answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_number: Option<String>,
}

/// A pending OTP in a listing (never the code).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingOtp {
    /// Its public id.
    pub otp_uuid: Uuid,
    /// What it is for.
    pub purpose: String,
    /// Epoch seconds.
    pub date_created: u64,
    /// Epoch seconds.
    pub date_expired: u64,
}

impl Engine {
    /// Issues an OTP for a user and purpose, replacing any earlier one for the same pair.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], validation and storage errors.
    pub async fn issue_user_otp(
        &self,
        app: &Application,
        subject: OtpSubject,
        purpose: &str,
    ) -> Result<IssuedOtp> {
        let user = self.otp_user(app, &subject)?;
        let issued = self.issue_otp_for(app, &user, purpose, None).await?;
        self.deliver_otp(app, Some(&user), None, purpose, issued)
            .await
    }

    /// Issues an OTP for the caller's own user.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for another user.
    pub async fn issue_own_otp(
        &self,
        who: &Principal,
        user: Uuid,
        purpose: &str,
    ) -> Result<IssuedOtp> {
        owner(who, user)?;
        let user = self.otp_user(&who.app, &OtpSubject::UserUuid(user))?;
        let issued = self.issue_otp_for(&who.app, &user, purpose, None).await?;
        self.deliver_otp(&who.app, Some(&user), None, purpose, issued)
            .await
    }

    /// Issues an OTP that is bound only to its otpUuid.
    ///
    /// # Errors
    ///
    /// Validation and storage errors.
    pub async fn issue_anonymous_otp(
        &self,
        app: &Application,
        purpose: &str,
        contact: (Option<String>, Option<String>),
    ) -> Result<IssuedOtp> {
        let purpose = parse_purpose(purpose)?;
        let otp_uuid = Uuid::new_v4();
        let id = anonymous_id(otp_uuid);
        let issued = self
            .issue(
                app,
                id,
                SessionKind::AnonymousOtp,
                None,
                &purpose,
                otp_uuid,
                None,
            )
            .await;
        self.deliver_otp(app, None, Some(contact), &purpose, issued?)
            .await
    }

    /// Checks a user's OTP for a purpose.
    ///
    /// # Errors
    ///
    /// [`Error::OtpWrong`] (evaluated and counted), [`Error::OtpDead`] (nothing evaluated).
    pub async fn validate_user_otp(
        &self,
        app: &Application,
        subject: OtpSubject,
        purpose: &str,
        otp: &str,
    ) -> Result<()> {
        let user = match self.otp_user(app, &subject) {
            Ok(user) => user,
            Err(Error::UserNotFound) => return Err(Error::OtpDead),
            Err(other) => return Err(other),
        };
        let purpose = parse_purpose(purpose)?;
        self.redeem_otp(app.uuid, user_id(user.uuid, &purpose), otp)
            .await
    }

    /// Checks the caller's own OTP.
    ///
    /// # Errors
    ///
    /// As [`Engine::validate_user_otp`]; [`Error::Forbidden`] for another user.
    pub async fn validate_own_otp(
        &self,
        who: &Principal,
        user: Uuid,
        purpose: &str,
        otp: &str,
    ) -> Result<()> {
        owner(who, user)?;
        self.validate_user_otp(&who.app, OtpSubject::UserUuid(user), purpose, otp)
            .await
    }

    /// Checks an anonymous OTP.
    ///
    /// # Errors
    ///
    /// As [`Engine::validate_user_otp`].
    pub async fn validate_anonymous_otp(
        &self,
        app: &Application,
        otp_uuid: Uuid,
        purpose: &str,
        otp: &str,
    ) -> Result<()> {
        let purpose = parse_purpose(purpose)?;
        let id = anonymous_id(otp_uuid);
        let record = self.inner.ctx.store.get(Space::Sessions, id.as_bytes())?;
        let bound = record
            .and_then(|bytes| SessionRecord::decode(&bytes).ok())
            .is_some_and(|r| r.app == app.uuid && r.purpose.as_deref() == Some(purpose.as_str()));
        if !bound {
            return Err(Error::OtpDead);
        }
        self.redeem_otp(app.uuid, id, otp).await
    }

    /// The caller's pending OTPs (never the codes).
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for another user.
    pub fn pending_otps(&self, who: &Principal, user: Uuid) -> Result<Vec<PendingOtp>> {
        owner(who, user)?;
        let now = self.now();
        let prefix = format!("otp/{user}/");
        let pending = self
            .inner
            .ctx
            .store
            .scan_prefix(Space::Sessions, prefix.as_bytes())?
            .into_iter()
            .filter_map(|(_, bytes)| SessionRecord::decode(&bytes).ok())
            .filter(|r| !r.used && r.deadline > now && r.attempts < r.max_attempts)
            .filter_map(|r| {
                Some(PendingOtp {
                    otp_uuid: r.otp_uuid?,
                    purpose: r.purpose?,
                    date_created: r.created,
                    date_expired: r.deadline,
                })
            })
            .collect();
        Ok(pending)
    }

    // == Internals shared with IAM

    /// Issues a user's OTP; `ttl` overrides the application's lifetime (IAM).
    pub(crate) async fn issue_otp_for(
        &self,
        app: &Application,
        user: &UserRecord,
        purpose: &str,
        ttl: Option<u64>,
    ) -> Result<IssuedOtp> {
        let purpose = parse_purpose(purpose)?;
        let id = user_id(user.uuid, &purpose);
        self.issue(
            app,
            id,
            SessionKind::Otp,
            Some(user.uuid),
            &purpose,
            Uuid::new_v4(),
            ttl,
        )
        .await
    }

    pub(crate) fn otp_user(&self, app: &Application, subject: &OtpSubject) -> Result<UserRecord> {
        let uuid = match subject {
            OtpSubject::Username(name) => self.require_user(app, name)?,
            OtpSubject::UserUuid(uuid) => *uuid,
        };
        let store = &self.inner.ctx.store;
        let user = store
            .get(Space::Users, uuid.as_bytes())?
            .map(|b| UserRecord::decode(&b))
            .transpose()?;
        user.filter(|u| u.app == app.uuid)
            .ok_or(Error::UserNotFound)
    }

    #[allow(clippy::too_many_arguments)] // one call site per kind; a struct would only rename them
    async fn issue(
        &self,
        app: &Application,
        id: String,
        kind: SessionKind,
        user: Option<Uuid>,
        purpose: &str,
        otp_uuid: Uuid,
        ttl: Option<u64>,
    ) -> Result<IssuedOtp> {
        let settings = &app.settings;
        let now = self.now();
        let ttl = ttl.unwrap_or(settings.otp_ttl_secs).clamp(1, 7 * 24 * 3600);
        let code = crypto::random_code(settings.otp_digits)?;
        let record = SessionRecord {
            id: id.clone(),
            kind,
            app: app.uuid,
            user: user.unwrap_or(Uuid::nil()),
            device: None,
            secret_hash: self.inner.ctx.secrets.hash(Purpose::Token, code.as_bytes()),
            created: now,
            deadline: now + ttl,
            attempts: 0,
            max_attempts: settings.otp_attempts,
            used: false,
            purpose: Some(purpose.to_owned()),
            otp_uuid: Some(otp_uuid),
        };

        let record = Box::new(record);
        self.inner
            .sessions
            .call(&id, |reply| SessionMsg::Issue(record.clone(), reply))
            .await??;
        tracing::info!(app_id = %app.uuid, otp_id = %otp_uuid, purpose, "OTP issued");
        self.audit().record(
            AuditEvent::success(app.uuid, AuditKind::OtpIssued)
                .user(user)
                .field("otpUuid", otp_uuid.to_string())
                .field("purpose", purpose),
        );
        Ok(IssuedOtp {
            otp: Some(code),
            otp_uuid,
            date_created: now,
            date_expired: now + ttl,
            ttl,
            user_email: None,
            mobile_number: None,
        })
    }

    /// Hands the code to the application's delivery channel, if it has one: then the code
    /// leaves the answer. Without a channel it stays, for the back end to deliver.
    async fn deliver_otp(
        &self,
        app: &Application,
        user: Option<&UserRecord>,
        contact: Option<(Option<String>, Option<String>)>,
        purpose: &str,
        mut issued: IssuedOtp,
    ) -> Result<IssuedOtp> {
        let Some(code) = issued.otp.take() else {
            return Ok(issued);
        };
        let (email, mobile) = match (user, contact) {
            (Some(user), _) => (Some(user.email.clone()), user.mobile_number.clone()),
            (None, Some(contact)) => contact,
            (None, None) => (None, None),
        };
        let message = Outgoing {
            kind: MessageKind::Otp,
            user: user.map(|u| u.uuid),
            username: user.map(|u| u.username.clone()),
            email,
            mobile,
            purpose: Some(purpose.to_owned()),
            secret: code,
        };
        issued.otp = self.deliver(app, message).await?;
        Ok(issued)
    }

    async fn redeem_otp(&self, app: Uuid, id: String, otp: &str) -> Result<()> {
        if otp.is_empty() {
            return Err(Error::OtpIncomplete("otp is empty"));
        }
        if otp.len() > 64 {
            return Err(Error::OtpWrong);
        }
        let now = self.now();
        let secret = otp.to_owned();
        let verdict = self
            .inner
            .sessions
            .call(&id, |reply| SessionMsg::Verify {
                secret: secret.clone(),
                now,
                reply,
            })
            .await??;
        let result = match verdict {
            Verdict::Accepted => Ok(()),
            Verdict::Wrong { .. } => Err(Error::OtpWrong),
            Verdict::Dead | Verdict::Missing => Err(Error::OtpDead),
        };
        let kind = if result.is_ok() {
            AuditKind::OtpUsed
        } else {
            AuditKind::OtpFailed
        };
        self.audit()
            .record(AuditEvent::of(app, kind, &result).field("otp", id_kind(&id)));
        result
    }
}

/// Which kind of OTP a session id names, for the audit log (the id itself carries a userUuid
/// or otpUuid, which the entry's own fields hold where known).
fn id_kind(id: &str) -> &'static str {
    if id.starts_with("otp-anon/") {
        "anonymous"
    } else {
        "user"
    }
}

fn user_id(user: Uuid, purpose: &str) -> String {
    format!("otp/{user}/{purpose}")
}

fn anonymous_id(otp_uuid: Uuid) -> String {
    format!("otp-anon/{otp_uuid}")
}

/// A purpose names what an OTP is for: 1 to 64 of `A-Z a-z 0-9 _ . -`.
fn parse_purpose(raw: &str) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::OtpIncomplete("purpose is empty"));
    }
    let ok = raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Error::InvalidField {
            field: "purpose",
            reason: "must be 1 to 64 of A-Z a-z 0-9 _ . -",
        })
    }
}
