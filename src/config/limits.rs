//! The `[rate_limits]` section and `trusted_proxies`: how fast each kind of caller may go, and
//! which reverse proxies may name the client address. Enforcing them is the façade's job.

use std::{
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use super::ConfigError;

/// One limit: a bucket of `burst` requests that refills at `per_second`. `burst = 0` turns the
/// limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per second; fractions allowed (`0.1` is one every ten seconds).
    #[serde(deserialize_with = "number")]
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    /// A limit of `burst` at once, refilling at `per_second`.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// Whether the limit applies at all.
    pub fn enabled(&self) -> bool {
        self.burst > 0
    }
}

/// Rate limits, per kind of caller. Every call that carries a valid API key comes from a
/// customer's back end that speaks for all its users from one address, so those are limited
/// per application and per target, never per address; routes without an API key are limited
/// per client address.
///
/// The defaults are ceilings against abuse, not a usage plan: they stay out of the way of the
/// load benchmark (about 10,000 logins a second over 2,000 devices) and of the contract
/// checks, and the per-target ones sit above the domain's attempt limits (3 wrong PINs, 5
/// wrong OTPs), so that attempt limits, not 429s, end a PIN or an OTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// All back-end calls (with an API key) of one application together.
    pub per_app: Rate,
    /// Calls from one client address on routes without an API key (IPv6 by /64), but for
    /// the relying parties' endpoints below.
    pub per_address: Rate,
    /// Calls from one client address to the endpoints a relying party's back end calls
    /// (token, userinfo, introspection, revocation). One back end speaks for all its users
    /// from one address, so a browser's limit would throttle a busy relying party.
    pub relying_party_per_address: Rate,
    /// Logins of one device. A real device logs in every few seconds at most; the default only
    /// stops a runaway client (the crash check drives about 40 logins a second per device).
    pub login_per_device: Rate,
    /// OTPs issued for one target (a username or an otpUuid).
    pub otp_generate: Rate,
    /// OTP validations against one target.
    pub otp_validate: Rate,
    /// Calls of the built-in login page that send or redeem a mailed token (sign-up,
    /// activation, adding a device, forgot and reset PIN), per username. The page has no API
    /// key, so anyone may call it: without this, a fresh six-digit token per added device
    /// would let one caller guess its way into someone else's account.
    pub login_page_per_user: Rate,
    /// How often buckets that are full again are forgotten, in seconds (bounds memory).
    pub sweep_secs: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_app: Rate::new(50_000.0, 100_000),
            per_address: Rate::new(20.0, 100),
            relying_party_per_address: Rate::new(10_000.0, 20_000),
            login_per_device: Rate::new(100.0, 100),
            otp_generate: Rate::new(0.5, 20),
            otp_validate: Rate::new(2.0, 20),
            login_page_per_user: Rate::new(1.0 / 60.0, 10),
            sweep_secs: 60,
        }
    }
}

impl RateLimits {
    /// Every limit by its config name.
    pub fn all(&self) -> [(&'static str, Rate); 7] {
        [
            ("per_app", self.per_app),
            ("per_address", self.per_address),
            ("relying_party_per_address", self.relying_party_per_address),
            ("login_per_device", self.login_per_device),
            ("otp_generate", self.otp_generate),
            ("otp_validate", self.otp_validate),
            ("login_page_per_user", self.login_page_per_user),
        ]
    }

    /// Checks that every enabled limit refills at a positive, finite rate.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, rate) in self.all() {
            let usable = rate.per_second.is_finite() && rate.per_second > 0.0;
            if rate.enabled() && !usable {
                return Err(ConfigError::Invalid(format!(
                    "[rate_limits.{name}]: per_second must be a positive number"
                )));
            }
        }
        if self.sweep_secs == 0 {
            return Err(ConfigError::Invalid(
                "[rate_limits]: sweep_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A reverse proxy (an address or a CIDR block) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct TrustedProxy(IpNet);

impl TrustedProxy {
    /// Whether `addr` is this proxy (or inside its block).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&normalise(addr))
    }
}

impl FromStr for TrustedProxy {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|net| TrustedProxy(net.trunc()))
            .map_err(|_| {
                ConfigError::Invalid(format!(
                    "trusted_proxies: {text:?} is neither an IP address nor a CIDR block"
                ))
            })
    }
}

impl From<TrustedProxy> for String {
    fn from(proxy: TrustedProxy) -> String {
        proxy.0.to_string()
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) is
/// the IPv4 address, for matching and for buckets alike.
pub(crate) fn normalise(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The bucket a client address counts in: the address itself for IPv4, its /64 for IPv6 (the
/// block one subscriber usually holds, so that rotating through it buys nothing).
pub(crate) fn bucket(addr: IpAddr) -> IpAddr {
    match normalise(addr) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// TOML writes `20` and `20.0` differently; both are a rate.
fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    Ok(match Number::deserialize(deserializer)? {
        // Rates are small; the conversion is exact for every sensible value.
        #[allow(clippy::cast_precision_loss)]
        Number::Int(n) => n as f64,
        Number::Float(x) => x,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_addresses_or_blocks() {
        let one: TrustedProxy = "10.0.0.7".parse().unwrap();
        assert!(one.contains("10.0.0.7".parse().unwrap()));
        assert!(!one.contains("10.0.0.8".parse().unwrap()));
        let block: TrustedProxy = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.1".parse().unwrap()));
        let v6: TrustedProxy = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::9".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
        assert!("proxy.local".parse::<TrustedProxy>().is_err());
    }

    #[test]
    fn a_rate_needs_a_positive_refill_unless_it_is_off() {
        let mut limits = RateLimits::default();
        limits.validate().unwrap();
        limits.otp_validate = Rate::new(0.0, 5);
        assert!(limits.validate().is_err());
        limits.otp_validate = Rate::new(0.0, 0);
        limits.validate().unwrap();
    }

    #[test]
    fn the_defaults_sit_above_the_attempt_limits() {
        let limits = RateLimits::default();
        let attempts = latchkey_actors::AppSettings::default();
        assert!(limits.login_per_device.burst > attempts.max_failed_logins + 1);
        assert!(
            limits.otp_validate.burst > 5 + 1,
            "5 wrong OTP tries and the right one"
        );
    }
}
