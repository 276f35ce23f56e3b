//! What a message says: e-mail subject and body from the application's templates (or the
//! built-in texts), and the JSON event a webhook receives.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{MessageKind, Outgoing};
use crate::settings::{Template, Templates};

/// The built-in subject and body of each kind, used where the application sets none.
fn builtin(kind: MessageKind) -> (&'static str, &'static str) {
    match kind {
        MessageKind::Activation => (
            "Your {app} activation code",
            "Hello {username},\n\nYour activation code for {app} is: {token}\n\n\
             If you did not sign up, you can ignore this message.\n",
        ),
        MessageKind::DeviceActivation => (
            "Activate your new {app} device",
            "Hello {username},\n\nThe code to activate your new device for {app} is: {token}\n\n\
             If you did not add a device, someone may know your username; you can ignore \
             this message.\n",
        ),
        MessageKind::ResetPin => (
            "Reset your {app} PIN",
            "Hello {username},\n\nYour code to reset the PIN of your device for {app} is: \
             {token}\n\nIf you did not ask for it, you can ignore this message.\n",
        ),
        MessageKind::Otp => (
            "Your {app} one-time code",
            "Your one-time code for {app} is: {token}\n\nIt was requested for: {purpose}. \
             Never share it with anyone.\n",
        ),
        MessageKind::MagicLink => (
            "Confirm your sign-in to {app}",
            "Open this link to confirm your sign-in to {app}:\n\n{token}\n\n\
             If you did not try to sign in, you can ignore this message.\n",
        ),
        MessageKind::AccountExists => (
            "Someone tried to sign up to {app} as {username}",
            "Hello {username},\n\nSomeone, perhaps you, tried to sign up to {app} with your \
             username. You already have an account: to use it in a new browser or on a new \
             device, choose to add this device; if you forgot your PIN, reset it.\n\n\
             If it was not you, you can ignore this message: nothing has changed.\n",
        ),
    }
}

/// Subject and body of `message`: the purpose's template, then the kind's, then the
/// built-in text, field by field.
pub(super) fn render(templates: &Templates, message: &Outgoing, app: &str) -> (String, String) {
    let kind_template = match message.kind {
        MessageKind::Activation => &templates.activation,
        MessageKind::DeviceActivation => &templates.device_activation,
        MessageKind::ResetPin => &templates.reset_pin,
        MessageKind::Otp => &templates.otp.all,
        MessageKind::MagicLink => &templates.magic_link,
        MessageKind::AccountExists => &templates.account_exists,
    };
    let purpose_template = match (message.kind, message.purpose.as_deref()) {
        (MessageKind::Otp, Some(purpose)) => templates.otp.purposes.get(purpose),
        _ => None,
    };
    let pick = |field: fn(&Template) -> &Option<String>, fallback: &'static str| {
        purpose_template
            .and_then(|t| field(t).as_deref())
            .or(field(kind_template).as_deref())
            .unwrap_or(fallback)
    };
    let (subject, body) = builtin(message.kind);
    let subject = pick(|t| &t.subject, subject);
    let body = pick(|t| &t.body, body);

    let vars = Vars { message, app };
    // A subject is one header line: no value may break it.
    let subject = fill(subject, &vars).replace(['\r', '\n'], " ");
    (subject, fill(body, &vars))
}

struct Vars<'a> {
    message: &'a Outgoing,
    app: &'a str,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let m = self.message;
        let value = match name {
            "token" => m.secret.as_str(),
            "username" => m.username.as_deref().unwrap_or(""),
            "email" => m.email.as_deref().unwrap_or(""),
            "purpose" => m.purpose.as_deref().unwrap_or(""),
            "app" => self.app,
            _ => return None,
        };
        Some(value)
    }
}

/// Replaces each known `{name}` in one pass, so that a value containing braces is never
/// expanded again; unknown names stay as written.
fn fill(template: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        let known = after
            .split_once('}')
            .and_then(|(name, tail)| Some((vars.get(name)?, tail)));
        match known {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The webhook event of `message`, as the exact JSON text that is signed and posted:
/// `id` (stable across retries, for deduplication), `type`, `applicationUuid`, the user's
/// fields that are known, `token` (or `otp` for an OTP), `purpose` and `createdAt`.
pub(super) fn event(id: Uuid, app: Uuid, message: &Outgoing, now: u64) -> String {
    let mut event = Map::new();
    event.insert("id".into(), Value::String(id.to_string()));
    event.insert("type".into(), Value::String(message.kind.name().into()));
    event.insert("applicationUuid".into(), Value::String(app.to_string()));
    let optional = [
        ("userUuid", message.user.map(|u| u.to_string())),
        ("username", message.username.clone()),
        ("email", message.email.clone()),
        ("mobileNumber", message.mobile.clone()),
        ("purpose", message.purpose.clone()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            event.insert(key.into(), Value::String(value));
        }
    }
    let secret_key = match message.kind {
        MessageKind::Otp => Some("otp"),
        MessageKind::AccountExists => None,
        _ => Some("token"),
    };
    if let Some(key) = secret_key {
        event.insert(key.into(), Value::String(message.secret.clone()));
    }
    event.insert("createdAt".into(), Value::from(now));
    Value::Object(event).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::OtpTemplates;

    fn otp(purpose: &str) -> Outgoing {
        Outgoing {
            kind: MessageKind::Otp,
            user: None,
            username: Some("Ada".into()),
            email: Some("ada@example.test".into()),
            mobile: None,
            purpose: Some(purpose.into()),
            secret: "123456".into(),
        }
    }

    fn text(s: &str) -> Option<String> {
        Some(s.into())
    }

    #[test]
    fn built_in_texts_carry_the_token_and_fill_every_placeholder() {
        for kind in [
            MessageKind::Activation,
            MessageKind::DeviceActivation,
            MessageKind::ResetPin,
            MessageKind::Otp,
            MessageKind::MagicLink,
        ] {
            let message = Outgoing {
                kind,
                ..otp("login")
            };
            let (subject, body) = render(&Templates::default(), &message, "Acme");
            assert!(body.contains("123456"), "{kind:?}: {body}");
            assert!(subject.contains("Acme"), "{kind:?}: {subject}");
            assert!(!subject.contains('{') && !body.contains('{'), "{kind:?}");
        }
    }

    #[test]
    fn the_account_exists_notice_names_the_user_and_carries_no_secret() {
        let message = Outgoing {
            kind: MessageKind::AccountExists,
            purpose: None,
            secret: String::new(),
            ..otp("login")
        };

        let (subject, body) = render(&Templates::default(), &message, "Acme");
        let event: Value =
            serde_json::from_str(&event(Uuid::nil(), Uuid::nil(), &message, 1)).unwrap();

        assert!(
            subject.contains("Ada") && subject.contains("Acme"),
            "{subject}"
        );
        assert!(body.contains("Hello Ada") && !body.contains('{'), "{body}");
        assert_eq!(event["type"], "account_exists");
        assert!(
            event.get("token").is_none() && event.get("otp").is_none(),
            "{event}"
        );
    }

    #[test]
    fn a_purpose_template_beats_the_otp_template_which_beats_the_built_in_text() {
        let templates = Templates {
            otp: OtpTemplates {
                all: Template {
                    subject: text("All: {purpose}"),
                    body: text("Code {token} for {username} <{email}> at {app}"),
                },
                purposes: [(
                    "login".to_owned(),
                    Template {
                        subject: text("Login code"),
                        body: None,
                    },
                )]
                .into(),
            },
            ..Templates::default()
        };
        let (subject, body) = render(&templates, &otp("login"), "Acme");
        assert_eq!(subject, "Login code");
        assert_eq!(body, "Code 123456 for Ada <ada@example.test> at Acme");
        let (subject, _) = render(&templates, &otp("payment"), "Acme");
        assert_eq!(subject, "All: payment");
        let (subject, _) = render(&Templates::default(), &otp("payment"), "Acme");
        assert_eq!(subject, "Your Acme one-time code");
    }

    #[test]
    fn values_are_not_expanded_twice_and_cannot_break_the_subject() {
        let templates = Templates {
            activation: Template {
                subject: text("Hi {username} {unknown}"),
                body: text("{username}{token}{"),
            },
            ..Templates::default()
        };
        let message = Outgoing {
            kind: MessageKind::Activation,
            username: Some("{token}\r\nBcc: x@evil.test".into()),
            ..otp("login")
        };
        let (subject, body) = render(&templates, &message, "Acme");
        assert_eq!(subject, "Hi {token}  Bcc: x@evil.test {unknown}");
        assert_eq!(body, "{token}\r\nBcc: x@evil.test123456{");
    }

    #[test]
    fn an_event_names_its_type_and_carries_the_otp_under_otp() {
        let id = Uuid::now_v7();
        let app = Uuid::new_v4();
        let event: Value = serde_json::from_str(&event(id, app, &otp("login"), 1_700)).unwrap();
        assert_eq!(event["id"], id.to_string());
        assert_eq!(event["type"], "otp");
        assert_eq!(event["applicationUuid"], app.to_string());
        assert_eq!(event["otp"], "123456");
        assert_eq!(event["purpose"], "login");
        assert_eq!(event["createdAt"], 1_700);
        assert!(event.get("token").is_none() && event.get("userUuid").is_none());

        let reset = Outgoing {
            kind: MessageKind::ResetPin,
            purpose: None,
            ..otp("x")
        };
        let event: Value = serde_json::from_str(&event_of(&reset)).unwrap();
        assert_eq!(
            (&event["type"], &event["token"]),
            (&"reset_pin".into(), &"123456".into())
        );
    }

    fn event_of(message: &Outgoing) -> String {
        event(Uuid::now_v7(), Uuid::new_v4(), message, 1)
    }
}
