//! The domain error: every way a request can fail, each with its stable contract code.

/// A failed operation. Client-caused variants carry the code the contract names; the
/// façade maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wrong PIN, or the generic login failure.
    #[error("Login failed")]
    LoginFailed,
    /// A wrong PIN with one attempt left before the device locks.
    #[error("Login failed: one attempt left before the device is locked")]
    LastAttempt,
    /// A wrong PIN that locked the device.
    #[error("Login failed: the device is locked for {0} seconds")]
    NowLocked(u64),
    /// The device is temporarily locked.
    #[error("The device is locked; try again later or reset the PIN")]
    TemporarilyLocked,
    /// The device or user is locked by an administrator.
    #[error("The device or user is locked by an administrator")]
    AdminLocked,
    /// A wrong activation or reset-PIN token.
    #[error("Invalid token")]
    InvalidToken,
    /// Too many bad reset-PIN tokens: forgot and reset are blocked for a while.
    #[error("Too many invalid reset tokens; PIN reset is blocked for this device for now")]
    ResetBlocked,
    /// The token expired, was used, or ran out of attempts.
    #[error("The token has expired, was already used, or has no attempts left")]
    TokenDead,
    /// The authKey is not the device's current one.
    #[error("Invalid authKey")]
    StaleAuthKey,
    /// Unknown device, or unknown username on an unauthenticated route (same message).
    #[error("Device not found")]
    DeviceNotFound,
    /// Unknown user.
    #[error("Invalid userUuid or unknown user")]
    UserNotFound,
    /// The username is taken in this application.
    #[error("Username already exists")]
    UsernameTaken,
    /// The user may not add devices.
    #[error("Adding devices is forbidden for this user")]
    AddingDevicesForbidden,
    /// Unknown application.
    #[error("Invalid applicationUuid")]
    UnknownApp,
    /// Missing or wrong API key.
    #[error("Missing or invalid API key")]
    BadApiKey,
    /// A required field is missing.
    #[error("Missing field: {0}")]
    MissingField(&'static str),
    /// A field has the wrong format.
    #[error("Invalid {field}: {reason}")]
    InvalidField {
        /// The field's wire name.
        field: &'static str,
        /// What is wrong, without echoing the value.
        reason: &'static str,
    },
    /// The username breaks the username rules.
    #[error("Invalid username: {0}")]
    BadUsername(&'static str),
    /// The JWT is malformed, badly signed, not yet valid or of another application.
    #[error("Invalid JWT")]
    InvalidJwt,
    /// The JWT has expired.
    #[error("Expired JWT")]
    ExpiredJwt,
    /// The JWT's device session was logged out, or its device or user removed or locked.
    #[error("Revoked JWT")]
    RevokedJwt,
    /// Authenticated, but not the owner of the resource.
    #[error("Not allowed to act on another user's resources")]
    Forbidden,
    /// An OTP request lacks what it needs.
    #[error("Empty or incomplete OTP request: {0}")]
    OtpIncomplete(&'static str),
    /// A wrong OTP; the attempt was evaluated and counted.
    #[error("Wrong OTP")]
    OtpWrong,
    /// The OTP expired, was used or superseded, or has no attempts left; nothing evaluated.
    #[error("The OTP has expired, was used or replaced, or has no attempts left")]
    OtpDead,
    /// The IAM requestor is authenticated but not allowed.
    #[error("The requestor is not allowed to use the IAM API")]
    IamForbidden,
    /// An actor did not answer in time or the engine is shutting down.
    #[error("The service is busy or shutting down")]
    Unavailable,
    /// The data directory is held by another process.
    #[error("the data directory is in use by another process (a running server?)")]
    DataDirLocked,
    /// The `htOidTxid` names no live sign-in request (unknown, finished, expired, or
    /// being finished by another request right now).
    #[error("The sign-in request is unknown, expired or already finished")]
    OidcRequestDead,
    /// The `nonce` sent with an OIDC-mode call is not the one of its authorize request.
    #[error("The nonce does not match the sign-in request")]
    OidcNonceMismatch,
    /// The built-in login page may not sign users up for this application.
    #[error("{0}")]
    SignUpClosed(&'static str),
    /// The built-in login page cannot offer a flow whose token must be delivered, because the
    /// application has no delivery channel.
    #[error("This application delivers no e-mail; ask its administrator to configure delivery")]
    NoDelivery,
    /// No such OpenID Connect client (CLI and configuration only).
    #[error("Unknown OpenID Connect client")]
    UnknownClient,
    /// Our fault: storage or an invariant failed.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::LoginFailed => "AN-AUTH-1006",
            Error::LastAttempt => "AN-AUTH-1029",
            Error::NowLocked(_) => "AN-AUTH-1030",
            Error::TemporarilyLocked => "AN-AUTH-1031",
            Error::AdminLocked => "AN-AUTH-1040",
            Error::InvalidToken => "AN-AUTH-1022",
            Error::ResetBlocked => "AN-AUTH-1025",
            Error::TokenDead => "AN-AUTH-1041",
            Error::StaleAuthKey => "AN-HENG-1001",
            Error::DeviceNotFound => "AN-HENG-1005",
            Error::UserNotFound | Error::AddingDevicesForbidden => "AN-USER-1000",
            Error::UsernameTaken => "AN-USER-1001",
            Error::UnknownApp => "AN-APLI-1005",
            Error::BadApiKey => "AN-APLI-1010",
            Error::MissingField(_) => "AN-VALI-1001",
            Error::InvalidField { .. } => "AN-VALI-1002",
            Error::BadUsername(_) => "AN-VALI-1003",
            Error::InvalidJwt => "AN-JWTT-1001",
            Error::ExpiredJwt => "AN-JWTT-1002",
            Error::RevokedJwt => "AN-JWTT-1003",
            Error::Forbidden => "AN-USER-1000",
            Error::OtpIncomplete(_) => "AN-UOTP-1006",
            Error::OtpWrong => "AN-UOTP-1010",
            Error::OtpDead => "AN-UOTP-1011",
            Error::IamForbidden => "AN-IAM-1001",
            Error::Unavailable => "AN-SYST-1001",
            Error::DataDirLocked => "AN-SYST-1000",
            Error::OidcRequestDead => "AN-OIDC-1001",
            Error::OidcNonceMismatch => "AN-OIDC-1002",
            Error::SignUpClosed(_) => "AN-OIDC-1003",
            Error::UnknownClient => "AN-OIDC-1004",
            Error::NoDelivery => "AN-OIDC-1005",
            Error::Internal(_) => "AN-SYST-1000",
        }
    }

    /// Wraps an unexpected failure.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Internal(Box::new(err))
    }
}

impl From<latchkey_storage::Error> for Error {
    fn from(err: latchkey_storage::Error) -> Self {
        match err {
            latchkey_storage::Error::Locked => Error::DataDirLocked,
            other => Error::internal(other),
        }
    }
}

/// The crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_codes_follow_the_contract() {
        assert_eq!(Error::LoginFailed.code(), "AN-AUTH-1006");
        assert_eq!(Error::LastAttempt.code(), "AN-AUTH-1029");
        assert_eq!(Error::NowLocked(300).code(), "AN-AUTH-1030");
        assert_eq!(Error::TemporarilyLocked.code(), "AN-AUTH-1031");
        assert_eq!(Error::DeviceNotFound.to_string(), "Device not found");
    }
}
