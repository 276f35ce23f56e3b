//! Delivery settings of one application: which channel carries its one-time codes, how to
//! reach that channel, how often to retry, and the message templates.
//!
//! Only the settings live here; the notifier (`crate::notifier`) reads them when it renders
//! and sends a message.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::SerializeMap};

/// Which channel delivers an application's tokens and OTPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// No delivery: tokens and OTPs are returned to the back end, which delivers them.
    #[default]
    None,
    /// E-mail through `[delivery.smtp]`.
    Smtp,
    /// A signed HTTP POST to `[delivery.webhook]`.
    Webhook,
}

/// The `[delivery]` table of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// The channel; `none` keeps today's behaviour of returning codes to the back end.
    pub channel: Channel,
    /// The SMTP relay, needed when `channel = "smtp"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSettings>,
    /// The webhook, needed when `channel = "webhook"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSettings>,
    /// Subject and body per message kind; built-in texts fill whatever is not set.
    pub templates: Templates,
    /// Tries (the first included) before a message is given up and deleted.
    pub max_tries: u32,
    /// Wait after the first failed try; each further failure doubles it.
    pub retry_base_secs: u64,
    /// Longest wait between two tries.
    pub retry_cap_secs: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            channel: Channel::None,
            smtp: None,
            webhook: None,
            templates: Templates::default(),
            max_tries: 8,
            retry_base_secs: 2,
            retry_cap_secs: 300,
        }
    }
}

impl DeliverySettings {
    /// Checks what serde cannot: the chosen channel is configured, addresses and URLs parse,
    /// retry pacing is sane. The message names the offending key, never a secret.
    ///
    /// # Errors
    ///
    /// A description of the first problem found.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.max_tries == 0 {
            return Err("delivery.max_tries must be at least 1".into());
        }
        if self.retry_base_secs == 0 || self.retry_cap_secs < self.retry_base_secs {
            return Err("delivery.retry_base_secs must be at least 1 and at most \
                        delivery.retry_cap_secs"
                .into());
        }
        match self.channel {
            Channel::None => {}
            Channel::Smtp => self
                .smtp
                .as_ref()
                .ok_or("delivery.channel is \"smtp\" but [delivery.smtp] is missing")?
                .validate()?,
            Channel::Webhook => self
                .webhook
                .as_ref()
                .ok_or("delivery.channel is \"webhook\" but [delivery.webhook] is missing")?
                .validate()?,
        }
        Ok(())
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Upgrade with STARTTLS and verify the server's certificate; refuse to send otherwise.
    #[default]
    Starttls,
    /// No encryption: only for a relay on the same host or a trusted network.
    Plain,
}

/// The `[delivery.smtp]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Relay host name (also the name its certificate must carry).
    pub host: String,
    /// Relay port; 587 by default.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default) or `plain`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// Login name, if the relay wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretText>,
    /// Sender, as `address` or `Name <address>`.
    pub from: String,
}

fn default_smtp_port() -> u16 {
    587
}

impl SmtpSettings {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("delivery.smtp.host must not be empty".into());
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err("delivery.smtp.from must be an e-mail address".into());
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("delivery.smtp.username and password go together".into());
        }
        Ok(())
    }
}

/// The `[delivery.webhook]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where events are posted (`http` or `https`).
    pub url: String,
    /// Key of the `X-Latchkey-Signature` HMAC; the receiver holds the same.
    pub secret: SecretText,
}

impl WebhookSettings {
    fn validate(&self) -> std::result::Result<(), String> {
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return Err("delivery.webhook.url must be an http or https URL".into()),
        }
        if self.secret.expose().is_empty() {
            return Err("delivery.webhook.secret must not be empty".into());
        }
        Ok(())
    }
}

/// A secret setting (a password, a signing key): its `Debug` output is redacted, so that
/// printing settings never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Subject and body of one message kind; an unset field falls back to the built-in text.
///
/// Placeholders: `{token}` (the token or OTP), `{username}`, `{email}`, `{purpose}` and
/// `{app}` (the application's name). Anything else in braces is left as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Template {
    /// The e-mail subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The e-mail body (plain text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `[delivery.templates.<kind>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Templates {
    /// A new user's activation token.
    pub activation: Template,
    /// An added device's activation token.
    pub device_activation: Template,
    /// A reset-PIN token.
    pub reset_pin: Template,
    /// One-time PINs, with overrides per purpose.
    pub otp: OtpTemplates,
    /// The Silent MFA verification link.
    pub magic_link: Template,
    /// The notice to a user whose username someone tried to sign up with.
    pub account_exists: Template,
}

/// `[delivery.templates.otp]` holds `subject` and `body` for every purpose, and
/// `[delivery.templates.otp.<purpose>]` overrides them for one purpose. (A purpose cannot be
/// named `subject` or `body`.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtpTemplates {
    /// For every purpose without its own.
    pub all: Template,
    /// Per purpose.
    pub purposes: BTreeMap<String, Template>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OtpEntry {
    Text(String),
    Purpose(Template),
}

impl<'de> Deserialize<'de> for OtpTemplates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<String, OtpEntry>::deserialize(deserializer)?;
        let mut out = OtpTemplates::default();
        for (key, entry) in entries {
            match (key.as_str(), entry) {
                ("subject", OtpEntry::Text(text)) => out.all.subject = Some(text),
                ("body", OtpEntry::Text(text)) => out.all.body = Some(text),
                (_, OtpEntry::Purpose(template)) => {
                    out.purposes.insert(key, template);
                }
                (_, OtpEntry::Text(_)) => {
                    return Err(D::Error::custom(format!(
                        "delivery.templates.otp.{key}: expected subject, body or a \
                         [delivery.templates.otp.<purpose>] table"
                    )));
                }
            }
        }
        Ok(out)
    }
}

impl Serialize for OtpTemplates {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(subject) = &self.all.subject {
            map.serialize_entry("subject", subject)?;
        }
        if let Some(body) = &self.all.body {
            map.serialize_entry("body", body)?;
        }
        for (purpose, template) in &self.purposes {
            map.serialize_entry(purpose, template)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Wrapper {
        delivery: DeliverySettings,
    }

    fn parse(text: &str) -> Result<DeliverySettings, String> {
        toml::from_str::<Wrapper>(text)
            .map(|w| w.delivery)
            .map_err(|e| e.to_string())
    }

    const FULL: &str = r#"
        [delivery]
        channel = "smtp"
        max_tries = 3
        [delivery.smtp]
        host = "mail.example.test"
        port = 2525
        tls = "plain"
        username = "latchkey"
        password = "hunter2-smtp"
        from = "Latchkey <no-reply@example.test>"
        [delivery.webhook]
        url = "https://hooks.example.test/latchkey"
        secret = "whsec-very-secret"
        [delivery.templates.reset_pin]
        subject = "Reset for {app}"
        [delivery.templates.otp]
        body = "Code {token}"
        [delivery.templates.otp.login]
        subject = "Your login code"
    "#;

    #[test]
    fn a_full_delivery_table_parses_and_validates() {
        let d = parse(FULL).unwrap();
        d.validate().unwrap();
        assert_eq!(d.channel, Channel::Smtp);
        assert_eq!(d.max_tries, 3);
        assert_eq!(d.retry_cap_secs, 300, "unset keys keep their defaults");
        let smtp = d.smtp.as_ref().unwrap();
        assert_eq!((smtp.port, smtp.tls), (2525, SmtpTls::Plain));
        assert_eq!(d.templates.otp.all.body.as_deref(), Some("Code {token}"));
        assert_eq!(
            d.templates.otp.purposes["login"].subject.as_deref(),
            Some("Your login code")
        );
        assert_eq!(d.templates.reset_pin.body, None);
    }

    #[test]
    fn delivery_settings_survive_the_config_merge_round_trip() {
        let d = parse(FULL).unwrap();
        let table = toml::Table::try_from(Wrapper {
            delivery: d.clone(),
        })
        .unwrap();
        let back: Wrapper = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(back.delivery, d);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let shown = format!("{:?}", parse(FULL).unwrap());
        assert!(!shown.contains("hunter2-smtp"), "{shown}");
        assert!(!shown.contains("whsec-very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn the_default_is_no_channel_and_valid() {
        let d = DeliverySettings::default();
        assert_eq!(d.channel, Channel::None);
        d.validate().unwrap();
        assert_eq!(parse("[delivery]").unwrap(), d);
    }

    #[test]
    fn unknown_keys_and_incomplete_channels_are_refused() {
        assert!(parse("[delivery]\nchanel = \"smtp\"").is_err());
        assert!(parse("[delivery.smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\nhots = 1").is_err());
        assert!(parse("[delivery.templates.activation]\nsubjet = \"x\"").is_err());
        assert!(parse("[delivery.templates.otp]\nlogin = \"x\"").is_err());

        let missing = parse("[delivery]\nchannel = \"webhook\"").unwrap();
        assert!(
            missing
                .validate()
                .unwrap_err()
                .contains("[delivery.webhook]")
        );
        let bad_from =
            parse("[delivery]\nchannel = \"smtp\"\n[delivery.smtp]\nhost = \"h\"\nfrom = \"nope\"")
                .unwrap();
        assert!(bad_from.validate().unwrap_err().contains("from"));
        let bad_url = parse(
            "[delivery]\nchannel = \"webhook\"\n\
             [delivery.webhook]\nurl = \"ftp://x\"\nsecret = \"s\"",
        )
        .unwrap();
        assert!(bad_url.validate().unwrap_err().contains("url"));
        let no_wait = parse("[delivery]\nretry_base_secs = 0").unwrap();
        assert!(no_wait.validate().is_err());
    }
}
