//! Reading the audit log of a stopped server, and the two ways `latchkey audit tail` prints
//! an entry. Writing entries is the domain's job (`latchkey_actors::audit`).

use std::path::Path;

pub use latchkey_actors::{AuditOutcome, AuditRecord};
use uuid::Uuid;

/// The newest `limit` entries (of `app`, or of every application), oldest first.
///
/// # Errors
///
/// [`latchkey_actors::Error::DataDirLocked`] while a server holds the directory; storage
/// errors otherwise.
pub async fn tail(
    data_dir: &Path,
    app: Option<Uuid>,
    limit: usize,
) -> Result<Vec<AuditRecord>, latchkey_actors::Error> {
    latchkey_actors::audit::tail_dir(data_dir.to_owned(), app, limit).await
}

/// One line for people: time (UTC), event, outcome and code, then the ids and fields.
pub fn human_line(entry: &AuditRecord) -> String {
    let outcome = match entry.outcome {
        AuditOutcome::Success => "success",
        AuditOutcome::Failure => "failure",
    };
    let mut line = format!("{}  {:<20} {outcome}", utc(entry.time), entry.event);
    if let Some(code) = &entry.code {
        line.push(' ');
        line.push_str(code);
    }
    line.push_str(&format!("  app={}", entry.app));
    if let Some(user) = entry.user {
        line.push_str(&format!(" user={user}"));
    }
    if let Some(device) = entry.device {
        line.push_str(&format!(" device={device}"));
    }
    if let Some(requestor) = &entry.requestor {
        line.push_str(&format!(" requestor={requestor}"));
    }
    for (name, value) in &entry.fields {
        line.push_str(&format!(" {name}={value}"));
    }
    line
}

/// One JSON object: the stored fields, with `time` in epoch seconds.
pub fn json_line(entry: &AuditRecord) -> String {
    serde_json::to_string(entry).unwrap_or_else(|_| "{}".to_owned())
}

/// Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (the proleptic Gregorian calendar, UTC).
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (hour, minute, second) = (rest / 3600, rest % 3600 / 60, rest % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), in unsigned arithmetic
    // shifted to the era starting 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn a_line_names_the_event_outcome_code_and_ids() {
        let entry = AuditRecord {
            time: 0,
            app: Uuid::nil(),
            event: "login_failed".into(),
            user: None,
            device: Some(Uuid::nil()),
            outcome: AuditOutcome::Failure,
            code: Some("AN-AUTH-1006".into()),
            requestor: None,
            fields: [("reason".to_owned(), "x".to_owned())].into(),
        };
        let line = human_line(&entry);
        assert!(
            line.starts_with("1970-01-01T00:00:00Z  login_failed"),
            "{line}"
        );
        assert!(line.contains("failure AN-AUTH-1006"), "{line}");
        assert!(
            line.contains("device=00000000-0000-0000-0000-000000000000"),
            "{line}"
        );
        assert!(!line.contains("user="), "{line}");
        assert!(line.ends_with("reason=x"), "{line}");
        let json: serde_json::Value = serde_json::from_str(&json_line(&entry)).unwrap();
        assert_eq!(json["code"], "AN-AUTH-1006");
    }
}
