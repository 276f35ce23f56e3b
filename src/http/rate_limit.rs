//! Rate limits: keyed GCRA buckets (the `governor` crate) per application, per target
//! (device, username, otpUuid) and per client address, refused with 429 AN-RATE-1001 and a
//! `Retry-After` header.
//!
//! These bound how fast anyone may try; the attempt limits that end a PIN or an OTP are the
//! domain's, and the per-target limits sit above them. Which route checks which limit is
//! decided where the route is built (`http.rs`) or in its handler.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, QuantaClock},
    middleware::NoOpMiddleware,
    state::keyed::DashMapStateStore,
};
use uuid::Uuid;

use super::envelope::ApiError;
use crate::config::{
    ConfigError, Rate, RateLimits, TrustedProxy, address_bucket, normalise_address,
};

/// What a per-target limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// Logins of one device; key: the deviceUuid.
    Login,
    /// OTPs issued for one target; key: the username's matching key, userUuid or otpUuid.
    OtpGenerate,
    /// OTP validations against one target; key as for `OtpGenerate`.
    OtpValidate,
    /// Login-page calls that send or redeem a mailed token; key: the username's matching key.
    LoginPage,
}

impl TargetKind {
    fn name(self) -> &'static str {
        match self {
            TargetKind::Login => "login_per_device",
            TargetKind::OtpGenerate => "otp_generate",
            TargetKind::OtpValidate => "otp_validate",
            TargetKind::LoginPage => "login_page_per_user",
        }
    }
}

/// Which per-address limit a route counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressKind {
    /// Routes a browser or an app calls.
    Client,
    /// The endpoints a relying party's back end calls (token, userinfo, introspection,
    /// revocation).
    RelyingParty,
}

/// Every limiter of a server, and the proxies it believes.
// Limitation: buckets live in this process's memory, so each node of a cluster allows the
// full rate and a restart refills every bucket.
// Limitation: bearer-token routes (user, device, JWT renew and validate, logout) have no
// limit of their own; they need a valid, unrevoked token, and nothing keys them yet.
#[derive(Debug)]
pub(crate) struct Limiters {
    per_app: Bucket<Uuid>,
    per_address: Bucket<IpAddr>,
    relying_party: Bucket<IpAddr>,
    login: Bucket<(Uuid, Box<str>)>,
    otp_generate: Bucket<(Uuid, Box<str>)>,
    otp_validate: Bucket<(Uuid, Box<str>)>,
    login_page: Bucket<(Uuid, Box<str>)>,
    trusted: Vec<TrustedProxy>,
}

impl Limiters {
    /// Limiters for `config`, believing `X-Forwarded-For` from `trusted` peers only.
    pub(crate) fn new(
        config: &RateLimits,
        trusted: Vec<TrustedProxy>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            per_app: Bucket::live("per_app", config.per_app),
            per_address: Bucket::live("per_address", config.per_address),
            relying_party: Bucket::live(
                "relying_party_per_address",
                config.relying_party_per_address,
            ),
            login: Bucket::live("login_per_device", config.login_per_device),
            otp_generate: Bucket::live("otp_generate", config.otp_generate),
            otp_validate: Bucket::live("otp_validate", config.otp_validate),
            login_page: Bucket::live("login_page_per_user", config.login_page_per_user),
            trusted,
        })
    }

    /// Counts one request against target `key` of `app`. Pass a canonical key (a UUID, or a
    /// username's matching key), so that spellings of one target share a bucket.
    pub(crate) fn check(&self, kind: TargetKind, app: Uuid, key: &str) -> Result<(), ApiError> {
        let bucket = match kind {
            TargetKind::Login => &self.login,
            TargetKind::OtpGenerate => &self.otp_generate,
            TargetKind::OtpValidate => &self.otp_validate,
            TargetKind::LoginPage => &self.login_page,
        };
        bucket.check(&(app, Box::from(key))).inspect_err(|_| {
            tracing::debug!(app_id = %app, limit = kind.name(), "rate limited");
        })
    }

    /// Counts one back-end call of `app` (made with its valid API key).
    pub(crate) fn check_app(&self, app: Uuid) -> Result<(), ApiError> {
        self.per_app.check(&app).inspect_err(|_| {
            tracing::debug!(app_id = %app, limit = "per_app", "rate limited");
        })
    }

    /// Counts one call from client address `client` on a route without an API key. IPv6
    /// addresses count by /64, the block one subscriber usually holds.
    pub(crate) fn check_address(&self, kind: AddressKind, client: IpAddr) -> Result<(), ApiError> {
        let (limiter, name) = match kind {
            AddressKind::Client => (&self.per_address, "per_address"),
            AddressKind::RelyingParty => (&self.relying_party, "relying_party_per_address"),
        };
        let bucket = address_bucket(client);
        limiter.check(&bucket).inspect_err(|_| {
            tracing::debug!(client = %bucket, limit = name, "rate limited");
        })
    }

    /// The client behind `peer`: the peer itself, unless it is a trusted proxy; then the
    /// right-most `X-Forwarded-For` hop that is not itself a trusted proxy (the left-most one
    /// if all are). Hops left of an unreadable one were written by nobody we trust and are
    /// not read.
    pub(crate) fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = normalise_address(peer);
        if !self.is_trusted(client) {
            return client;
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            match value.to_str() {
                Ok(text) => hops.extend(text.split(',')),
                Err(_) => hops.push(""),
            }
        }
        for hop in hops.iter().rev() {
            let Some(addr) = parse_hop(hop) else { break };
            client = normalise_address(addr);
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    /// Forgets buckets that have refilled completely: they hold nothing a new bucket would
    /// not, and without this every key ever seen would stay in memory.
    pub(crate) fn retain_recent(&self) {
        self.per_app.retain_recent();
        self.per_address.retain_recent();
        self.relying_party.retain_recent();
        self.login.retain_recent();
        self.otp_generate.retain_recent();
        self.otp_validate.retain_recent();
        self.login_page.retain_recent();
    }

    /// Whether `addr` is one of the configured reverse proxies.
    pub(crate) fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|proxy| proxy.contains(addr))
    }
}

/// The bucket key of a per-user limit: a username's matching key, so that spellings of one
/// name share a bucket; anything else (a UUID, an address) as given.
pub(crate) fn username_key(raw: &str) -> String {
    latchkey_actors::Username::parse(raw).map_or_else(|_| raw.to_owned(), |u| u.key().to_owned())
}

/// Middleware for routes without an API key: one bucket per client address.
pub(crate) async fn per_address(
    State(limits): State<Arc<Limiters>>,
    req: Request,
    next: Next,
) -> Response {
    limit_address(&limits, AddressKind::Client, req, next).await
}

/// Middleware for the relying parties' endpoints: a bucket per address, of their own limit.
pub(crate) async fn per_relying_party_address(
    State(limits): State<Arc<Limiters>>,
    req: Request,
    next: Next,
) -> Response {
    limit_address(&limits, AddressKind::RelyingParty, req, next).await
}

async fn limit_address(limits: &Limiters, kind: AddressKind, req: Request, next: Next) -> Response {
    // Without connection info (a router served without it) every caller shares one bucket.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let client = limits.client_address(peer, req.headers());
    if let Err(refused) = limits.check_address(kind, client) {
        return refused.into_response();
    }
    next.run(req).await
}

/// Drops full buckets every `every` until the task is aborted.
pub(crate) async fn sweep(limits: Arc<Limiters>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        limits.retain_recent();
    }
}

/// An `X-Forwarded-For` hop: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limiter, or none when its limit is off.
#[derive(Debug)]
struct Bucket<K: std::hash::Hash + Eq + Clone, C: Clock = QuantaClock> {
    limiter: Option<Keyed<K, C>>,
}

impl<K: std::hash::Hash + Eq + Clone> Bucket<K> {
    /// On the real (monotonic) clock.
    fn live(name: &'static str, rate: Rate) -> Self {
        Self::new(name, rate, QuantaClock::default())
    }
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock> Bucket<K, C> {
    fn new(name: &'static str, rate: Rate, clock: C) -> Self {
        let limiter = quota(rate).map(|q| RateLimiter::dashmap_with_clock(q, clock));
        if rate.enabled() && limiter.is_none() {
            tracing::warn!(limit = name, "rate limit not representable; it is off");
        }
        Self { limiter }
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            ApiError::rate_limited(wait)
        })
    }

    fn retain_recent(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, RateLimiter::len)
    }
}

/// The GCRA quota of `rate`; `None` when it is off (validated rates are always representable).
fn quota(rate: Rate) -> Option<Quota> {
    let burst = NonZeroU32::new(rate.burst)?;
    let period = Duration::try_from_secs_f64(1.0 / rate.per_second).ok()?;
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
mod tests;
