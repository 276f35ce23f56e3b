//! The engine: the one entry point of the domain. It finds the actor a request belongs to,
//! sends it the request, and turns a proof of possession into a signed access token.
//!
//! Signing happens here, outside the user actor, so that signatures of different users run
//! on all cores while each user's state changes stay serialised in its actor.

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use latchkey_storage::{
    Batch, Durability, FjallStore, Record, Space, Store, StoreExt, StoreStats,
    records::{ServerSecrets, SessionKind, SessionRecord, UserRecord},
    uuid_str_key,
};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    AccessClaims, Clock, Error, HashedPin, Result, SettingsTable, Username,
    apps::{Application, Apps},
    audit::{Audit, AuditEvent, AuditKind},
    context::Context,
    crypto::{self, Purpose, Secrets},
    directory::{Directory, DirectoryOptions},
    keyring::kid_of,
    notifier::{self, MessageKind, Notifier, Outgoing},
    session::{SessionActor, TOMBSTONE_SECS, ids},
    user::{
        Credential, DevicePatch, DeviceView, Grant, UserActor, UserMsg, UserPatch, UserShared,
        UserView,
    },
};

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where fjall keeps its files.
    pub data_dir: PathBuf,
    /// When a write counts as done.
    pub durability: Durability,
    /// Per-application settings.
    pub settings: SettingsTable,
    /// Public base URL, for token issuers.
    pub public_url: String,
    /// A user or session actor unused this long is stopped.
    pub actor_idle: Duration,
    /// Longest wait for an actor's answer.
    pub call_timeout: Duration,
    /// Hash keys shared by several nodes; generated and stored on first start if absent.
    pub secrets: Option<(Vec<u8>, Vec<u8>)>,
    /// The clock (tests move it forward).
    pub clock: Clock,
}

impl EngineOptions {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Sync,
            settings: SettingsTable::default(),
            public_url: "http://127.0.0.1:8080".into(),
            actor_idle: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            secrets: None,
            clock: Clock::default(),
        }
    }
}

/// Proof of a successful activation, login or reset: a signed access token and the device's
/// next one-time authKey.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Signed JWT.
    pub access_token: String,
    /// The new authKey (the old one no longer works).
    pub auth_key: String,
    /// Id of the auth-key record.
    pub auth_key_uuid: Uuid,
    /// The device.
    pub device_uuid: Uuid,
    /// The user.
    pub user_uuid: Uuid,
    /// The device session the access token belongs to.
    pub sid: Uuid,
}

/// The caller behind a valid, unrevoked access token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The application.
    pub app: Arc<Application>,
    /// userUuid.
    pub user: Uuid,
    /// deviceUuid.
    pub device: Uuid,
    /// The device session.
    pub sid: Uuid,
}

/// The public-key answer.
#[derive(Debug, Clone)]
pub struct PublicKeyInfo {
    /// SPKI PEM of the current key.
    pub public_key: String,
    /// Its JOSE algorithm.
    pub algorithm: &'static str,
    /// Its `kid`.
    pub kid: String,
    /// Every verifying key as a JWK set.
    pub jwks: Value,
}

/// What sign-up or adding a device returns.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The one-time activation token, for the back end to deliver; `None` when Latchkey
    /// delivered it through the application's channel.
    pub token: Option<String>,
    /// The user.
    pub user_uuid: Uuid,
    /// The pending device, when one was added.
    pub device_uuid: Option<Uuid>,
    /// The user's e-mail address.
    pub email: String,
}

/// A new user's details.
#[derive(Debug, Clone)]
pub struct SignUp {
    /// Username as given.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Mobile number.
    pub mobile_number: Option<String>,
}

/// A login request.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// Username as typed.
    pub username: String,
    /// The device.
    pub device: Uuid,
    /// Its current authKey.
    pub auth_key: String,
    /// The PIN hash, or `None` for a pinless device.
    pub pin: Option<HashedPin>,
}

const SIGNUP_STRIPES: usize = 64;

/// The domain engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) ctx: Arc<Context>,
    pub(crate) users: Directory<UserActor>,
    pub(crate) sessions: Directory<SessionActor>,
    pub(crate) iam_cache: crate::iam::IntrospectionCache,
    pub(crate) http: reqwest::Client,
    pub(crate) notifier: Notifier,
    pub(crate) grants: Directory<crate::oidc::GrantActor>,
    pub(crate) clients: crate::oidc::Clients,
    grant_sweeper: tokio::task::JoinHandle<()>,
    signup: Vec<tokio::sync::Mutex<()>>,
}

impl Engine {
    /// Opens the store, loads applications, starts the directories and the notifier (which
    /// resumes the deliveries a previous run left queued).
    ///
    /// # Errors
    ///
    /// Storage errors, notably a data directory held by another process.
    pub async fn open(options: EngineOptions) -> Result<Self> {
        let dir = options.data_dir.clone();
        let durability = options.durability;
        let store: Arc<dyn Store> = Arc::new(
            tokio::task::spawn_blocking(move || FjallStore::open(&dir, durability))
                .await
                .map_err(Error::internal)??,
        );
        let secrets = load_secrets(&store, options.secrets.clone()).await?;
        let apps = Apps::new(options.settings.clone(), &options.public_url);
        apps.load_all(&store, options.clock.now()).await?;
        sweep_expired_sessions(&store, options.clock.now()).await?;
        sweep_expired_grants(&store, options.clock.now()).await?;
        let clients = crate::oidc::Clients::load(&store)?;

        let ctx = Arc::new(Context {
            audit: Audit::new(store.clone(), options.clock.clone()),
            store,
            secrets,
            clock: options.clock.clone(),
            apps,
        });
        let dir_options = DirectoryOptions {
            idle: options.actor_idle,
            call_timeout: options.call_timeout,
        };
        let sessions = Directory::<SessionActor>::start(ctx.clone(), dir_options).await?;
        let shared = UserShared {
            ctx: ctx.clone(),
            sessions: sessions.clone(),
        };
        let users = Directory::<UserActor>::start(shared, dir_options).await?;
        let grants = Directory::<crate::oidc::GrantActor>::start(ctx.clone(), dir_options).await?;
        let notifier = Notifier::start(ctx.clone()).await?;
        let signup = (0..SIGNUP_STRIPES)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect();

        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(Error::internal)?;
        let iam_cache = crate::iam::IntrospectionCache::default();
        let grant_sweeper = tokio::spawn(sweep_grants_hourly(ctx.clone()));
        let inner = Inner {
            ctx,
            users,
            sessions,
            iam_cache,
            http,
            notifier,
            grants,
            clients,
            grant_sweeper,
            signup,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Stops every actor and makes all writes durable; the data directory is free once the
    /// last clone of this engine is dropped.
    ///
    /// # Errors
    ///
    /// The store's error if the final flush fails.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.users.shutdown().await;
        self.inner.sessions.shutdown().await;
        self.inner.grants.shutdown().await;
        self.inner.grant_sweeper.abort();
        self.inner.notifier.shutdown().await;
        let store = self.inner.ctx.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(Error::internal)??;
        Ok(())
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.ctx.clock
    }

    /// Writer counters.
    pub fn store_stats(&self) -> StoreStats {
        self.inner.ctx.store.stats()
    }

    /// Live user and session actors.
    pub fn live_actors(&self) -> (usize, usize) {
        (self.inner.users.live(), self.inner.sessions.live())
    }

    /// Messages queued for delivery and not yet delivered or given up.
    pub fn pending_deliveries(&self) -> usize {
        self.inner.notifier.pending()
    }

    /// Number of applications.
    pub fn app_count(&self) -> usize {
        self.inner.ctx.apps.count()
    }

    /// The audit log, for callers outside the actors (the façade's back-office routes).
    pub fn audit(&self) -> &Audit {
        &self.inner.ctx.audit
    }

    // == Applications

    /// Creates an application; returns it and its API key, which is shown only now.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn create_app(&self, name: &str) -> Result<(Arc<Application>, String)> {
        self.create_app_with(name, false).await
    }

    /// Creates an application whose built-in login page may sign users up (unless its
    /// settings say otherwise), as the default application of a fresh server is.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn create_app_with(
        &self,
        name: &str,
        open_signup: bool,
    ) -> Result<(Arc<Application>, String)> {
        let ctx = &self.inner.ctx;
        ctx.apps
            .create(&ctx.store, &ctx.secrets, name, open_signup, ctx.clock.now())
            .await
    }

    /// The application, if it exists.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownApp`].
    pub fn app(&self, uuid: Uuid) -> Result<Arc<Application>> {
        self.inner.ctx.apps.get(uuid).ok_or(Error::UnknownApp)
    }

    /// Checks a back-end caller's API key in constant time.
    ///
    /// # Errors
    ///
    /// [`Error::BadApiKey`].
    pub fn check_api_key(&self, app: &Application, key: Option<&str>) -> Result<()> {
        match key {
            Some(key) if app.api_key_matches(&self.inner.ctx.secrets, key) => Ok(()),
            _ => Err(Error::BadApiKey),
        }
    }

    /// The application's current public key and its JWK set.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownApp`].
    pub fn public_key(&self, app: Uuid) -> Result<PublicKeyInfo> {
        let app = self.app(app)?;
        let current = app.keys.current();
        Ok(PublicKeyInfo {
            public_key: current.public_pem().to_owned(),
            algorithm: current.alg.name(),
            kid: current.kid.clone(),
            jwks: app.keys.jwks(),
        })
    }

    // == Self-service

    /// Registers a user and delivers the activation token of its first device, or returns it
    /// when the application has no delivery channel.
    ///
    /// # Errors
    ///
    /// Validation errors (including an e-mail address the SMTP channel cannot send to),
    /// [`Error::UsernameTaken`], storage errors.
    pub async fn sign_up(&self, app: &Application, request: SignUp) -> Result<Activation> {
        let ctx = &self.inner.ctx;
        let username = Username::parse(&request.username)?;
        let email = validate_email(&request.email)?;
        let mobile = request
            .mobile_number
            .as_deref()
            .map(validate_mobile)
            .transpose()?;
        let now = ctx.clock.now();

        let _guard = self.signup_stripe(app.uuid, username.key()).lock().await;
        if self.lookup(app.uuid, &username)?.is_some() {
            self.audit().record(AuditEvent::failure(
                app.uuid,
                AuditKind::SignUp,
                &Error::UsernameTaken,
            ));
            return Err(Error::UsernameTaken);
        }

        let user = UserRecord {
            uuid: Uuid::new_v4(),
            app: app.uuid,
            username: username.display().to_owned(),
            username_key: username.key().to_owned(),
            email: email.clone(),
            mobile_number: mobile,
            active: false,
            locked: false,
            forbid_adding_devices: false,
            roles: Vec::new(),
            created: now,
            last_login: None,
        };
        let token = crypto::random_code(app.settings.token_digits)?;
        let session = SessionRecord {
            id: ids::activate_user(user.uuid),
            kind: SessionKind::ActivateUser,
            app: app.uuid,
            user: user.uuid,
            device: None,
            secret_hash: ctx.secrets.hash(Purpose::Token, token.as_bytes()),
            created: now,
            deadline: now + app.settings.activation_token_ttl_secs,
            attempts: 0,
            max_attempts: app.settings.token_attempts,
            used: false,
            purpose: None,
            otp_uuid: None,
        };
        let message = Outgoing {
            kind: MessageKind::Activation,
            user: Some(user.uuid),
            username: Some(user.username.clone()),
            email: Some(email.clone()),
            mobile: user.mobile_number.clone(),
            purpose: None,
            secret: token,
        };
        let queued = notifier::prepare(app, &message, now)?;

        // The user, its index entry, its activation session and its message land together or
        // not at all: this is `deliver` with the outbox write joined to the sign-up's batch,
        // so that a crash cannot leave a user whose token was never sent.
        let mut batch = Batch::new();
        batch.put(Space::Users, user.uuid.as_bytes().to_vec(), &user)?;
        batch.put_raw(
            Space::Usernames,
            uuid_str_key(app.uuid, username.key()),
            user.uuid.as_bytes().to_vec(),
        );
        batch.put(Space::Sessions, session.id.as_bytes(), &session)?;
        if let Some(record) = &queued {
            batch.put(Space::Outbox, record.id.as_bytes().to_vec(), record)?;
        }
        ctx.store.commit(batch).await?;

        let token = match queued {
            Some(record) => {
                self.inner.notifier.submit(record);
                None
            }
            None => Some(message.secret),
        };
        tracing::info!(app_id = %app.uuid, user_id = %user.uuid, "user signed up");
        self.audit()
            .record(AuditEvent::success(app.uuid, AuditKind::SignUp).user(user.uuid));
        Ok(Activation {
            token,
            user_uuid: user.uuid,
            device_uuid: None,
            email,
        })
    }

    /// Sign-up for callers who must not learn whether a username is taken (the login page,
    /// which anyone can call): a taken username gets the same answer as a new one, and its
    /// owner an e-mail saying someone tried. Needs a delivery channel (the new user's token
    /// is never returned).
    ///
    /// # Errors
    ///
    /// Validation and storage errors, as [`Engine::sign_up`], but never
    /// [`Error::UsernameTaken`].
    pub async fn sign_up_quietly(&self, app: &Application, request: SignUp) -> Result<()> {
        let username = Username::parse(&request.username)?;
        match self.sign_up(app, request).await {
            Ok(_) => Ok(()),
            Err(Error::UsernameTaken) => self.tell_owner_of(app, &username).await,
            Err(e) => Err(e),
        }
    }

    async fn tell_owner_of(&self, app: &Application, username: &Username) -> Result<()> {
        // The user may have been deleted since the sign-up found it: then nobody is told.
        let Some(user) = self.lookup(app.uuid, username)? else {
            return Ok(());
        };
        let view = match self.call_user(user, UserMsg::View).await {
            Ok(view) => view,
            Err(Error::UserNotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let notice = Outgoing {
            kind: MessageKind::AccountExists,
            user: Some(user),
            username: Some(view.username),
            email: Some(view.email),
            mobile: view.mobile_number,
            purpose: None,
            secret: String::new(),
        };
        self.deliver(app, notice).await?;
        tracing::info!(
            app_id = %app.uuid,
            user_id = %user,
            "sign-up with a taken username; its owner is told"
        );
        Ok(())
    }

    /// Adds a pending device to a user and delivers its activation token (or returns it when
    /// the application has no delivery channel).
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], [`Error::AddingDevicesForbidden`], storage errors.
    pub async fn add_device(
        &self,
        app: &Application,
        username: &str,
        name: &str,
    ) -> Result<Activation> {
        let user = self.require_user(app, username)?;
        let name = validate_device_name(name)?;
        let now = self.now();
        let issued = self
            .call_user(user, |reply| UserMsg::AddDevice {
                name: name.clone(),
                now,
                reply,
            })
            .await;
        let device = issued.as_ref().ok().map(|issued| issued.device);
        self.audit()
            .outcome(app.uuid, AuditKind::DeviceAdded, user, device, &issued);
        let issued = issued?;
        let (device, email) = (issued.device, issued.email.clone());
        let token = self
            .deliver(app, issued.into_message(MessageKind::DeviceActivation))
            .await?;
        Ok(Activation {
            token,
            user_uuid: user,
            device_uuid: Some(device),
            email,
        })
    }

    // == Authentication

    /// Activates a new user's first device.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`], [`Error::TokenDead`], validation and storage errors.
    pub async fn activate_user(
        &self,
        app: &Application,
        username: &str,
        token: &str,
        pin: HashedPin,
        device_name: &str,
    ) -> Result<Tokens> {
        let user = self
            .lookup(app.uuid, &Username::parse(username)?)?
            .ok_or(Error::InvalidToken)?;
        let name = validate_device_name(device_name)?;
        let token =
            crate::input::parse_code("activationToken", token).map_err(|_| Error::InvalidToken)?;
        let now = self.now();
        let grant = self
            .call_user(user, |reply| UserMsg::ActivateUser {
                token: token.clone(),
                pin: pin.clone(),
                device_name: name.clone(),
                now,
                reply,
            })
            .await
            .map_err(|e| {
                if matches!(e, Error::UserNotFound) {
                    Error::InvalidToken
                } else {
                    e
                }
            });
        let device = grant.as_ref().ok().map(|g| g.device);
        self.audit()
            .outcome(app.uuid, AuditKind::Activation, user, device, &grant);
        self.tokens(app, grant?, now)
    }

    /// Activates an added device.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceNotFound`], [`Error::InvalidToken`], [`Error::TokenDead`].
    pub async fn activate_device(
        &self,
        app: &Application,
        username: &str,
        device: Uuid,
        token: &str,
        pin: HashedPin,
    ) -> Result<Tokens> {
        let user = self.device_owner(app, username)?;
        let token =
            crate::input::parse_code("activationToken", token).map_err(|_| Error::InvalidToken)?;
        let now = self.now();
        let grant = self
            .call_user(user, |reply| UserMsg::ActivateDevice {
                device,
                token: token.clone(),
                pin: pin.clone(),
                now,
                reply,
            })
            .await
            .map_err(not_found_as_device);
        self.audit()
            .outcome(app.uuid, AuditKind::Activation, user, device, &grant);
        self.tokens(app, grant?, now)
    }

    /// Logs a device in and rotates its authKey.
    ///
    /// # Errors
    ///
    /// The lockout codes, [`Error::StaleAuthKey`], [`Error::DeviceNotFound`].
    pub async fn login(&self, app: &Application, request: LoginRequest) -> Result<Tokens> {
        let now = self.now();
        let credential = match request.pin {
            Some(pin) => Credential::Pin(pin),
            None => Credential::Pinless,
        };
        let user = match Username::parse(&request.username) {
            Ok(name) => self.lookup(app.uuid, &name)?,
            Err(_) => None,
        };
        // An unknown username goes to a stand-in actor derived from it, which does the same
        // work as a known user's actor (a hop, a load when cold, the same hashing) and
        // answers the same way, so neither the answer nor a stopwatch tells them apart.
        let known = user.is_some();
        let user = user.unwrap_or_else(|| self.stand_in(app.uuid, &request.username));

        let grant = self
            .call_user(user, |reply| UserMsg::Login {
                device: request.device,
                auth_key: request.auth_key.clone(),
                credential: credential.clone(),
                now,
                reply,
            })
            .await
            .map_err(not_found_as_device);
        self.audit()
            .login(app.uuid, known.then_some(user), request.device, &grant);
        self.tokens(app, grant?, now)
    }

    /// Issues a reset-PIN token for a device and delivers it; returns the token (when the
    /// application has no delivery channel) and the user's e-mail address.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceNotFound`], [`Error::ResetBlocked`].
    pub async fn forgot_pin(
        &self,
        app: &Application,
        username: &str,
        device: Uuid,
    ) -> Result<(Option<String>, String)> {
        let user = self.device_owner(app, username)?;
        let issued = self
            .forgot_pin_of(app, user, device)
            .await
            .map_err(not_found_as_device);
        self.audit().outcome(
            app.uuid,
            AuditKind::PinResetRequested,
            user,
            device,
            &issued,
        );
        issued
    }

    /// Sets a new PIN with a reset token.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`], [`Error::ResetBlocked`], [`Error::TokenDead`].
    pub async fn reset_pin(
        &self,
        app: &Application,
        username: &str,
        device: Uuid,
        token: &str,
        pin: HashedPin,
    ) -> Result<Tokens> {
        let user = self.device_owner(app, username)?;
        let reset = self
            .reset_pin_of(app, user, device, token, pin)
            .await
            .map_err(not_found_as_device);
        self.audit()
            .outcome(app.uuid, AuditKind::PinReset, user, device, &reset);
        reset
    }

    // == Bearer routes

    /// Validates an access token: signature, algorithm, audience, times and revocation.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJwt`], [`Error::ExpiredJwt`], [`Error::RevokedJwt`].
    pub async fn authenticate(&self, token: &str, app_header: Option<Uuid>) -> Result<Principal> {
        let (app, key) = self
            .inner
            .ctx
            .apps
            .by_kid(&kid_of(token)?)
            .ok_or(Error::InvalidJwt)?;
        if app_header.is_some_and(|h| h != app.uuid) {
            return Err(Error::InvalidJwt);
        }
        let claims = app.keys.verify(&key, token, self.now())?;
        let (device, sid) = (claims.device_uuid, claims.sid);
        self.call_user(claims.user_uuid, |reply| UserMsg::CheckSession {
            device,
            sid,
            reply,
        })
        .await
        .map_err(|e| match e {
            Error::Unavailable | Error::Internal(_) => e,
            _ => Error::RevokedJwt,
        })?;
        Ok(Principal {
            app,
            user: claims.user_uuid,
            device,
            sid,
        })
    }

    /// Ends the device session of the token: it and every token of that session stop working.
    ///
    /// # Errors
    ///
    /// [`Error::RevokedJwt`] if it already ended.
    pub async fn logout(&self, who: &Principal) -> Result<()> {
        let (device, sid) = (who.device, who.sid);
        let ended = self
            .call_user(who.user, |reply| UserMsg::Logout { device, sid, reply })
            .await;
        self.audit()
            .outcome(who.app.uuid, AuditKind::Logout, who.user, device, &ended);
        ended?;
        tracing::info!(user_id = %who.user, device_id = %device, "logged out");
        Ok(())
    }

    /// A fresh access token for the same device session.
    ///
    /// # Errors
    ///
    /// Only if signing fails.
    pub fn renew(&self, who: &Principal) -> Result<String> {
        self.sign(&who.app, who.user, who.device, who.sid, self.now())
    }

    /// The user's details; only the user may read them.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for another user.
    pub async fn user_view(&self, who: &Principal, user: Uuid) -> Result<UserView> {
        owner(who, user)?;
        self.call_user(user, UserMsg::View).await
    }

    /// The user's devices.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for another user.
    pub async fn devices(&self, who: &Principal, user: Uuid) -> Result<Vec<DeviceView>> {
        owner(who, user)?;
        let now = self.now();
        self.call_user(user, |reply| UserMsg::Devices { now, reply })
            .await
    }

    /// Changes the user's own details.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for another user; validation errors.
    pub async fn patch_user(
        &self,
        who: &Principal,
        user: Uuid,
        mut patch: UserPatch,
    ) -> Result<()> {
        owner(who, user)?;
        patch.email = patch.email.as_deref().map(validate_email).transpose()?;
        patch.mobile_number = patch
            .mobile_number
            .as_deref()
            .map(validate_mobile)
            .transpose()?;
        let changed = [
            ("email", patch.email.is_some()),
            ("mobileNumber", patch.mobile_number.is_some()),
        ];
        let result = self
            .call_user(user, |reply| UserMsg::Patch(patch.clone(), reply))
            .await;
        let event = AuditEvent::of(who.app.uuid, AuditKind::UserChanged, &result);
        self.audit().record(event.user(user).changed(&changed));
        result
    }

    /// Deletes the user with its devices, sessions and tokens.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for another user.
    pub async fn delete_user(&self, who: &Principal, user: Uuid) -> Result<()> {
        owner(who, user)?;
        let deleted = self.call_user(user, UserMsg::Delete).await;
        self.audit()
            .outcome(who.app.uuid, AuditKind::UserDeleted, user, None, &deleted);
        deleted
    }

    /// Locks, unlocks or renames one of the caller's devices.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for a device that is not the caller's.
    pub async fn patch_device(
        &self,
        who: &Principal,
        device: Uuid,
        mut patch: DevicePatch,
    ) -> Result<()> {
        patch.device_name = patch
            .device_name
            .as_deref()
            .map(validate_device_name)
            .transpose()?;
        let changed = [
            ("locked", patch.locked == Some(true)),
            ("unlocked", patch.locked == Some(false)),
            ("deviceName", patch.device_name.is_some()),
        ];
        let result = self
            .call_user(who.user, |reply| UserMsg::PatchDevice {
                device,
                patch: patch.clone(),
                reply,
            })
            .await;
        let event = AuditEvent::of(who.app.uuid, AuditKind::DeviceChanged, &result);
        self.audit()
            .record(event.user(who.user).device(device).changed(&changed));
        result
    }

    /// Removes one of the caller's devices; its tokens stop working.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for a device that is not the caller's.
    pub async fn delete_device(&self, who: &Principal, device: Uuid) -> Result<()> {
        let deleted = self
            .call_user(who.user, |reply| UserMsg::DeleteDevice { device, reply })
            .await;
        self.audit().outcome(
            who.app.uuid,
            AuditKind::DeviceDeleted,
            who.user,
            device,
            &deleted,
        );
        deleted
    }

    /// Removes every auth-key record of the device but `keep`.
    ///
    /// # Errors
    ///
    /// [`Error::StaleAuthKey`] if `keep` is not the current record.
    pub async fn keep_only_auth_key(
        &self,
        who: &Principal,
        device: Uuid,
        keep: Uuid,
    ) -> Result<()> {
        self.call_user(who.user, |reply| UserMsg::KeepOnlyAuthKey {
            device,
            keep,
            reply,
        })
        .await
    }

    /// Forgot-PIN for one of the caller's devices, delivered as [`Engine::forgot_pin`].
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`], [`Error::ResetBlocked`].
    pub async fn device_forgot_pin(
        &self,
        who: &Principal,
        device: Uuid,
    ) -> Result<(Option<String>, String)> {
        let issued = self
            .forgot_pin_of(&who.app, who.user, device)
            .await
            .map_err(foreign_device);
        self.audit().outcome(
            who.app.uuid,
            AuditKind::PinResetRequested,
            who.user,
            device,
            &issued,
        );
        issued
    }

    /// Reset-PIN for one of the caller's devices.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`], [`Error::InvalidToken`], [`Error::ResetBlocked`].
    pub async fn device_reset_pin(
        &self,
        who: &Principal,
        device: Uuid,
        token: &str,
        pin: HashedPin,
    ) -> Result<Tokens> {
        let reset = self
            .reset_pin_of(&who.app, who.user, device, token, pin)
            .await
            .map_err(foreign_device);
        self.audit()
            .outcome(who.app.uuid, AuditKind::PinReset, who.user, device, &reset);
        reset
    }

    /// Makes a live user actor fail as a bug would. For supervision tests only.
    #[doc(hidden)]
    pub fn crash_user_actor(&self, user: Uuid) -> bool {
        match self.inner.users.child_ref(&user) {
            Some(actor) => actor.cast(UserMsg::Crash).is_ok(),
            None => false,
        }
    }

    // == Internals

    pub(crate) fn now(&self) -> u64 {
        self.inner.ctx.clock.now()
    }

    async fn forgot_pin_of(
        &self,
        app: &Application,
        user: Uuid,
        device: Uuid,
    ) -> Result<(Option<String>, String)> {
        let now = self.now();
        let issued = self
            .call_user(user, |reply| UserMsg::ForgotPin { device, now, reply })
            .await?;
        let email = issued.email.clone();
        let token = self
            .deliver(app, issued.into_message(MessageKind::ResetPin))
            .await?;
        Ok((token, email))
    }

    /// Delivers a token or OTP through the application's channel: the message is rendered
    /// and durably queued before this returns, and sent in the background. Returns `None`
    /// then (the secret must not appear in the HTTP answer), or `Some(secret)` when the
    /// application has no channel, for the back end to deliver as before.
    ///
    /// # Errors
    ///
    /// An address the channel cannot send to ([`Error::MissingField`] or
    /// [`Error::InvalidField`] for `email`), storage errors.
    pub(crate) async fn deliver(
        &self,
        app: &Application,
        message: Outgoing,
    ) -> Result<Option<String>> {
        match notifier::prepare(app, &message, self.now())? {
            Some(record) => {
                self.inner.notifier.enqueue(record).await?;
                Ok(None)
            }
            None => Ok(Some(message.secret)),
        }
    }

    async fn reset_pin_of(
        &self,
        app: &Application,
        user: Uuid,
        device: Uuid,
        token: &str,
        pin: HashedPin,
    ) -> Result<Tokens> {
        let token =
            crate::input::parse_code("resetPinToken", token).map_err(|_| Error::InvalidToken)?;
        let now = self.now();
        let grant = self
            .call_user(user, |reply| UserMsg::ResetPin {
                device,
                token: token.clone(),
                pin: pin.clone(),
                now,
                reply,
            })
            .await?;
        self.tokens(app, grant, now)
    }

    pub(crate) async fn call_user<R, F>(&self, user: Uuid, make: F) -> Result<R>
    where
        R: Send + 'static,
        F: Fn(ractor::RpcReplyPort<Result<R>>) -> UserMsg,
    {
        self.inner.users.call(&user, make).await?
    }

    pub(crate) fn lookup(&self, app: Uuid, username: &Username) -> Result<Option<Uuid>> {
        // Limitation: a point read on the async thread; it is served from fjall's memtable or
        // block cache in the common case, but a cold read blocks this worker briefly.
        let found = self
            .inner
            .ctx
            .store
            .get(Space::Usernames, &uuid_str_key(app, username.key()))?;
        Ok(found.and_then(|bytes| Uuid::from_slice(&bytes).ok()))
    }

    /// A deterministic id that no real user has, for the username `name` of `app`.
    fn stand_in(&self, app: Uuid, name: &str) -> Uuid {
        let digest = self.inner.ctx.secrets.hash(
            Purpose::Token,
            format!("stand-in\0{app}\0{name}").as_bytes(),
        );
        let mut bytes = [0u8; 16];
        bytes.iter_mut().zip(digest).for_each(|(b, d)| *b = d);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// The user a device route names; an unknown one answers as an unknown device would.
    fn device_owner(&self, app: &Application, username: &str) -> Result<Uuid> {
        self.lookup(app.uuid, &Username::parse(username)?)?
            .ok_or(Error::DeviceNotFound)
    }

    pub(crate) fn require_user(&self, app: &Application, username: &str) -> Result<Uuid> {
        self.lookup(app.uuid, &Username::parse(username)?)?
            .ok_or(Error::UserNotFound)
    }

    fn signup_stripe(&self, app: Uuid, key: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (app, key).hash(&mut hasher);
        let index = (hasher.finish() % SIGNUP_STRIPES as u64) as usize;
        // The vector has SIGNUP_STRIPES entries and the index is reduced modulo that.
        #[allow(clippy::indexing_slicing)]
        &self.inner.signup[index]
    }

    fn tokens(&self, app: &Application, grant: Grant, now: u64) -> Result<Tokens> {
        let access_token = self.sign(app, grant.user, grant.device, grant.sid, now)?;
        Ok(Tokens {
            access_token,
            auth_key: grant.auth_key,
            auth_key_uuid: grant.auth_key_uuid,
            device_uuid: grant.device,
            user_uuid: grant.user,
            sid: grant.sid,
        })
    }

    fn sign(
        &self,
        app: &Application,
        user: Uuid,
        device: Uuid,
        sid: Uuid,
        now: u64,
    ) -> Result<String> {
        let claims = AccessClaims {
            iss: app.issuer.clone(),
            aud: app.uuid.to_string(),
            sub: user.to_string(),
            user_uuid: user,
            application_uuid: app.uuid,
            device_uuid: device,
            sid,
            iat: now,
            nbf: now,
            exp: now + app.settings.access_token_ttl_secs,
            jti: Uuid::new_v4(),
        };
        app.keys.current().sign(&claims)
    }
}

pub(crate) fn owner(who: &Principal, user: Uuid) -> Result<()> {
    if who.user == user {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

fn not_found_as_device(e: Error) -> Error {
    if matches!(e, Error::UserNotFound) {
        Error::DeviceNotFound
    } else {
        e
    }
}

fn foreign_device(e: Error) -> Error {
    if matches!(e, Error::DeviceNotFound) {
        Error::Forbidden
    } else {
        e
    }
}

pub(crate) fn validate_email(raw: &str) -> Result<String> {
    let bad = |reason| Error::InvalidField {
        field: "email",
        reason,
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Error::MissingField("email"));
    }
    if trimmed.len() > 254 || trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must be an e-mail address of at most 254 characters"));
    }
    match trimmed.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(trimmed.to_owned())
        }
        _ => Err(bad("must be an e-mail address")),
    }
}

pub(crate) fn validate_mobile(raw: &str) -> Result<String> {
    let ok = raw.len() <= 32
        && raw
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Error::InvalidField {
            field: "mobileNumber",
            reason: "must be a phone number",
        })
    }
}

pub(crate) fn validate_device_name(raw: &str) -> Result<String> {
    let len = raw.chars().count();
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if len == 0 || len > 128 || raw.chars().any(|c| c.is_control() || bidi(c)) {
        return Err(Error::InvalidField {
            field: "deviceName",
            reason: "must be 1 to 128 characters without control characters",
        });
    }
    Ok(raw.to_owned())
}

async fn load_secrets(
    store: &Arc<dyn Store>,
    given: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Secrets> {
    if let Some((credential, api)) = given {
        return Secrets::new(&credential, &api);
    }
    if let Some(stored) = store.load::<ServerSecrets>(Space::Meta, b"secrets")? {
        return Secrets::new(&stored.credential_key, &stored.api_key_key);
    }
    let fresh = ServerSecrets {
        credential_key: crypto::random_bytes::<32>()?.to_vec(),
        api_key_key: crypto::random_bytes::<32>()?.to_vec(),
    };
    let mut batch = Batch::new();
    batch.put(Space::Meta, b"secrets".to_vec(), &fresh)?;
    store.commit(batch).await?;
    Secrets::new(&fresh.credential_key, &fresh.api_key_key)
}

/// Deletes sessions whose tombstone period ended while the server was down.
async fn sweep_expired_sessions(store: &Arc<dyn Store>, now: u64) -> Result<()> {
    let mut batch = Batch::new();
    for (key, value) in store.scan_prefix(Space::Sessions, &[])? {
        match SessionRecord::decode(&value) {
            Ok(record) if record.deadline.saturating_add(TOMBSTONE_SECS) > now => {}
            _ => batch.delete(Space::Sessions, key),
        }
    }
    if !batch.is_empty() {
        store.commit(batch).await?;
    }
    Ok(())
}

async fn sweep_grants_hourly(ctx: Arc<Context>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(3600));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is now, and the start already swept
    loop {
        ticks.tick().await;
        if let Err(err) = sweep_expired_grants(&ctx.store, ctx.clock.now()).await {
            tracing::warn!(error = %err, "sweeping expired grants failed; will retry");
        }
    }
}

/// Deletes OpenID Connect grants nothing can use any more.
// Limitation: a full scan of the grants keyspace, at start and then hourly; fine for
// millions of grants, but a deadline-ordered index would make it proportional to the work.
pub(crate) async fn sweep_expired_grants(store: &Arc<dyn Store>, now: u64) -> Result<()> {
    let scan = store.clone();
    let stale = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>> {
        Ok(scan
            .scan_prefix(Space::Grants, &[])?
            .into_iter()
            .filter(|(_, value)| {
                latchkey_storage::records::GrantRecord::decode(value)
                    .map_or(true, |record| record.forgettable_after() <= now)
            })
            .map(|(key, _)| key)
            .collect())
    })
    .await
    .map_err(Error::internal)??;
    let mut batch = Batch::new();
    for key in stale {
        batch.delete(Space::Grants, key);
    }
    if !batch.is_empty() {
        store.commit(batch).await?;
    }
    Ok(())
}
