//! Configuration: a TOML file, then `LATCHKEY_*` environment variables and flags on top.
//! Every option has a default, so an empty file (or none) runs the embedded default.

mod limits;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use latchkey_actors::{AppSettings, Clock, EngineOptions, SettingsTable};
use latchkey_storage::Durability;
use serde::Deserialize;
use uuid::Uuid;

pub use limits::{Rate, RateLimits, TrustedProxy};
pub(crate) use limits::{bucket as address_bucket, normalise as normalise_address};

/// The server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// Public base URL (token issuers); default `http://` plus the listen address.
    pub public_url: Option<String>,
    /// `sync` (default): a 2xx answer means fsynced. `buffered`: survives a process crash,
    /// not a power loss.
    pub durability: Durability,
    /// `human` or `json` log lines on standard error.
    pub log_format: LogFormat,
    /// Seconds an unused user or session actor stays in memory.
    pub actor_idle_secs: u64,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Requests served at once; more wait.
    pub max_in_flight: usize,
    /// Seconds a shutdown waits for requests in flight before it stops the engine anyway.
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a request's headers (an idle kept-alive connection too);
    /// then its connection is closed. Stalled clients must not pile up.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body; then it gets 408 and the connection
    /// closes. The body is read before the request takes one of `max_in_flight`'s places.
    pub body_read_timeout_secs: u64,
    /// Connections one client address (IPv6: one /64) may hold open at once; more are closed
    /// as they arrive. Trusted proxies are exempt.
    pub max_connections_per_address: usize,
    /// Connections open at once, from everyone; more are closed as they arrive. Lowered at
    /// start to fit the process's open-file limit.
    pub max_connections: usize,
    /// Hash keys shared by several nodes (Base64); generated per data directory if absent.
    pub secrets: Option<SecretsConfig>,
    /// Settings of applications without their own section.
    pub app_defaults: AppSettings,
    /// Per-application overrides of `app_defaults`, by applicationUuid.
    pub apps: HashMap<Uuid, toml::Table>,
    /// Rate limits (`[rate_limits]`).
    pub rate_limits: RateLimits,
    /// Reverse proxies (IPs or CIDR blocks) whose `X-Forwarded-For` names the client address;
    /// from any other peer the header is ignored. Default: none.
    pub trusted_proxies: Vec<TrustedProxy>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Hash keys given by configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Base64 key for PIN, authKey and token hashes.
    pub credential_key: String,
    /// Base64 key for API-key hashes.
    pub api_key_key: String,
}

impl std::fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsConfig([redacted])")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            durability: Durability::Sync,
            log_format: LogFormat::Human,
            actor_idle_secs: 60,
            max_body_bytes: 64 * 1024,
            max_in_flight: 4096,
            shutdown_grace_secs: 10,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            max_connections_per_address: 256,
            max_connections: 16_384,
            secrets: None,
            app_defaults: AppSettings::default(),
            apps: HashMap::new(),
            rate_limits: RateLimits::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if it cannot be read or has unknown or mistyped keys.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for unknown or mistyped keys.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        config.rate_limits.validate()?;
        Ok(config)
    }

    /// Checks every value that parsed but cannot work.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let table = self.settings_table()?;
        table
            .defaults
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[app_defaults]: {e}")))?;
        for (app, settings) in &table.per_app {
            settings
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("[apps.\"{app}\"]: {e}")))?;
        }
        let zeros = [
            ("max_in_flight", self.max_in_flight == 0),
            ("max_body_bytes", self.max_body_bytes == 0),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs == 0,
            ),
            ("body_read_timeout_secs", self.body_read_timeout_secs == 0),
            (
                "max_connections_per_address",
                self.max_connections_per_address == 0,
            ),
            ("max_connections", self.max_connections == 0),
        ];
        if let Some((name, _)) = zeros.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Invalid(format!("{name} must be above 0")));
        }
        if let Some(url) = &self.public_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid(
                    "public_url must be an http(s) URL".into(),
                ));
            }
        }
        Ok(())
    }

    /// A configuration for tests: a data directory, a fast idle time.
    pub fn for_test(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            actor_idle_secs: 30,
            ..Self::default()
        }
    }

    /// Every application's settings, with per-application sections laid over the defaults.
    /// A section replaces whole top-level keys: an application's `[apps."…".delivery]`
    /// replaces the default `delivery` table rather than merging into it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a section with unknown or mistyped keys, or delivery
    /// settings that cannot work (a channel without its table, a bad sender or URL).
    pub fn settings_table(&self) -> Result<SettingsTable, ConfigError> {
        self.app_defaults
            .delivery
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[app_defaults]: {e}")))?;
        let defaults = toml::Table::try_from(&self.app_defaults)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut per_app = HashMap::new();
        for (app, overrides) in &self.apps {
            let mut merged = defaults.clone();
            merged.extend(overrides.clone());
            let settings: AppSettings = toml::Value::Table(merged)
                .try_into()
                .map_err(|e| ConfigError::Invalid(format!("[apps.\"{app}\"]: {e}")))?;
            settings
                .delivery
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("[apps.\"{app}\"]: {e}")))?;
            per_app.insert(*app, settings);
        }
        Ok(SettingsTable {
            defaults: self.app_defaults.clone(),
            per_app,
        })
    }

    /// The engine's options, with `clock` as its time source.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for bad settings or secrets.
    pub fn engine_options(&self, clock: Clock) -> Result<EngineOptions, ConfigError> {
        use base64::Engine as _;
        let secrets = match &self.secrets {
            Some(s) => {
                let decode = |v: &str| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .ok()
                        .filter(|k| k.len() >= 32)
                        .ok_or_else(|| {
                            ConfigError::Invalid("secrets must be Base64 of 32+ bytes".into())
                        })
                };
                Some((decode(&s.credential_key)?, decode(&s.api_key_key)?))
            }
            None => None,
        };
        self.validate()?;
        let mut options = EngineOptions::new(self.data_dir.clone());
        options.durability = self.durability;
        options.settings = self.settings_table()?;
        options.public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen));
        options.actor_idle = Duration::from_secs(self.actor_idle_secs.max(1));
        options.secrets = secrets;
        options.clock = clock;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_sections_override_only_what_they_name() {
        let app = Uuid::new_v4();
        let text = format!(
            "[app_defaults]\nlock_period_secs = 60\n[apps.\"{app}\"]\nmax_failed_logins = 5\n"
        );
        let table = Config::from_toml(&text).unwrap().settings_table().unwrap();
        assert_eq!(table.defaults.lock_period_secs, 60);
        let per_app = &table.per_app[&app];
        assert_eq!(per_app.max_failed_logins, 5);
        assert_eq!(per_app.lock_period_secs, 60);
    }

    #[test]
    fn rate_limits_and_proxies_are_read() {
        let text = "trusted_proxies = [\"10.0.0.1\", \"192.168.0.0/16\"]\n\
                    [rate_limits]\nper_address = { per_second = 2, burst = 5 }\n\
                    otp_validate = { per_second = 0.5, burst = 20 }\n";
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.rate_limits.per_address, Rate::new(2.0, 5));
        assert_eq!(config.rate_limits.otp_validate, Rate::new(0.5, 20));
        assert_eq!(config.rate_limits.per_app, RateLimits::default().per_app);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(Config::from_toml("trusted_proxies = [\"example.com\"]").is_err());
        assert!(
            Config::from_toml("[rate_limits]\nper_app = { per_second = -1, burst = 1 }").is_err()
        );
    }

    #[test]
    fn delivery_settings_are_checked_at_load() {
        let ok = "[app_defaults.delivery]\nchannel = \"webhook\"\n\
                  [app_defaults.delivery.webhook]\nurl = \"http://127.0.0.1:9/hook\"\n\
                  secret = \"s3cret\"\n";
        let config = Config::from_toml(ok).unwrap();
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "secrets are redacted"
        );

        let err = Config::from_toml("[app_defaults.delivery]\nchannel = \"smtp\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[delivery.smtp] is missing"), "{err}");
        let app = Uuid::new_v4();
        let text = format!("[apps.\"{app}\".delivery]\nchannel = \"webhook\"\n");
        assert!(Config::from_toml(&text).is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("listne = \"127.0.0.1:1\"").is_err());
        assert!(Config::from_toml("[app_defaults]\nlock_perod_secs = 1").is_err());
    }
}
