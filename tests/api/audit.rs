//! The audit log: a full flow leaves entries with ids, outcomes and codes and no secret, and
//! `latchkey audit tail`, run as its own process once the server has stopped, prints them.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Device, TestApp, code};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// Runs `latchkey audit tail` with `args`; returns (success, stdout, stderr).
async fn audit_tail(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["audit", "tail", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("LATCHKEY_CONFIG")
        .env_remove("LATCHKEY_DATA_DIR")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn a_full_flow_is_audited_with_ids_and_outcomes_and_no_secret() {
    let mut app = TestApp::spawn().await;
    let mut secrets = vec![app.api_key.clone()];

    // == The flow: sign-up, activation, a login, wrong PINs to a lockout, an unknown user,
    // a taken username, logout
    let activation = app.sign_up("Audrey").await;
    let mut d = Device::new("Audrey");
    let (status, resp) = app.activate(&d, &activation).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);
    secrets.extend([
        activation,
        d.hashed_pin(),
        d.auth_key.clone(),
        d.token.clone(),
    ]);

    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);
    secrets.extend([d.auth_key.clone(), d.token.clone()]);

    for expected in ["AN-AUTH-1006", "AN-AUTH-1029", "AN-AUTH-1030"] {
        let (status, resp) = app.login_with(&d, "9999", &d.auth_key).await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, expected));
    }
    secrets.push(crate::helpers::hashed_pin(&d.salt, "9999"));

    let stranger = Device {
        device_uuid: d.device_uuid.clone(),
        ..Device::new("Nobody")
    };
    let (_, resp) = app.login_with(&stranger, "1234", "not-a-key").await;
    assert_eq!(code(&resp), "AN-HENG-1005");

    let body = json!({"applicationUuid": app.app, "username": "audrey",
                      "email": "again@example.test"});
    let (_, resp) = app.backend("/self-service/user", &body).await;
    assert_eq!(code(&resp), "AN-USER-1001");

    let (status, _) = app
        .bearer(Method::DELETE, "/authentication/logout", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // == While the server holds the data directory, the CLI refuses and says why
    let data_dir = app.data_dir();
    let (ok, _, stderr) = audit_tail(&data_dir, &[]).await;
    assert!(!ok, "tail ran beside a live server");
    assert!(stderr.contains("stop the server first"), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");

    // == Stopped: the entries, oldest first, as JSON lines
    app.stop_server().await;
    let app_id = app.app.to_string();
    let (ok, stdout, stderr) = audit_tail(&data_dir, &["--app", &app_id, "--json"]).await;
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("sign_up", "success", ""),
            ("activation", "success", ""),
            ("login_succeeded", "success", ""),
            ("login_failed", "failure", "AN-AUTH-1006"),
            ("login_failed", "failure", "AN-AUTH-1029"),
            ("login_failed", "failure", "AN-AUTH-1030"),
            ("device_locked_out", "failure", "AN-AUTH-1030"),
            ("login_failed", "failure", "AN-HENG-1005"),
            ("sign_up", "failure", "AN-USER-1001"),
            ("logout", "success", ""),
        ],
        "{stdout}"
    );

    // Ids: every entry names the application; the user's entries name the user and device;
    // the unknown username's failure names no user.
    for e in &entries {
        assert_eq!(e["app"], app_id.as_str(), "{e}");
        assert!(e["time"].as_u64().is_some(), "{e}");
    }
    for e in entries
        .iter()
        .skip(1)
        .filter(|e| e["code"] != "AN-HENG-1005")
    {
        if e["event"] != "sign_up" {
            assert_eq!(e["user"], d.user_uuid.as_str(), "{e}");
            assert_eq!(e["device"], d.device_uuid.as_str(), "{e}");
        }
    }
    assert_eq!(entries[0]["user"], d.user_uuid.as_str());
    assert!(entries[7].get("user").is_none(), "{}", entries[7]);
    assert_eq!(entries[7]["device"], d.device_uuid.as_str());

    // No secret and no e-mail address, in either format.
    let (ok, human, _) = audit_tail(&data_dir, &["--app", &app_id]).await;
    assert!(ok);
    for text in [&stdout, &human] {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret is in the audit log"
            );
        }
        assert!(
            !text.contains('@'),
            "an e-mail address is in the audit log:\n{text}"
        );
    }

    // Human lines: one per entry, newest last; --limit keeps the newest.
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), entries.len());
    assert!(lines[0].contains("sign_up") && lines[0].contains("success"));
    assert!(lines.last().unwrap().contains("logout"));
    let (_, last_two, _) = audit_tail(&data_dir, &["--limit", "2"]).await;
    let last_two: Vec<&str> = last_two.lines().collect();
    assert_eq!(last_two.len(), 2);
    assert!(last_two[0].contains("AN-USER-1001") && last_two[1].contains("logout"));
}

#[tokio::test]
async fn device_changes_resets_and_deletion_are_audited() {
    let mut app = TestApp::spawn().await;
    let d = app.new_device("Rita").await;
    let path = format!("/device/{}", d.device_uuid);
    let body = json!({"deviceName": "renamed"});
    let (status, _) = app
        .bearer(Method::PATCH, &path, &d.token, Some(&body))
        .await;
    assert_eq!(status, StatusCode::OK);

    let forgot = json!({"applicationUuid": app.app, "username": "Rita",
                        "deviceUuid": d.device_uuid});
    let (status, resp) = app.backend("/authentication/forgot-pin", &forgot).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let token = resp["resetPinToken"].as_str().unwrap().to_owned();
    let wrong = if token == "000000" {
        "111111"
    } else {
        "000000"
    };
    let reset = |token: &str| {
        json!({"applicationUuid": app.app, "username": "Rita", "deviceUuid": d.device_uuid,
               "hashedPin": d.hashed_pin(), "resetPinToken": token})
    };
    let (_, resp) = app
        .backend("/authentication/reset-pin", &reset(wrong))
        .await;
    assert_eq!(code(&resp), "AN-AUTH-1022");
    let (status, resp) = app
        .backend("/authentication/reset-pin", &reset(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let token = resp["accessToken"]["token"].as_str().unwrap().to_owned();

    let path = format!("/user/{}", d.user_uuid);
    let (status, _) = app.bearer(Method::DELETE, &path, &token, None).await;
    assert_eq!(status, StatusCode::OK);

    app.stop_server().await;
    let (ok, stdout, stderr) = audit_tail(&app.data_dir(), &["--json"]).await;
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("sign_up", ""),
            ("activation", ""),
            ("device_changed", ""),
            ("pin_reset_requested", ""),
            ("pin_reset", "AN-AUTH-1022"),
            ("pin_reset", ""),
            ("user_deleted", ""),
        ]
    );
    assert_eq!(entries[2]["fields"]["changed"], "deviceName");
    assert!(
        !stdout.contains("renamed"),
        "device names stay out of the log"
    );
    assert!(!stdout.contains(&token));
}

#[tokio::test]
async fn iam_calls_and_otps_show_in_audit_tail_with_their_requestor() {
    let mut app = TestApp::spawn().await;
    let admin = app.new_device("Boss").await;
    let target = app.new_device("Worker").await;
    let application = app.engine().app(app.app).unwrap();
    app.engine()
        .grant_role(&application, "Boss", "iam-admin")
        .await
        .unwrap();

    // One allowed IAM call, one refused (the target's own token lacks the role), one OTP.
    let headers = |token: &str| {
        vec![
            ("x-api-key".to_owned(), app.api_key.clone()),
            ("x-application-uuid".to_owned(), app.app.to_string()),
            ("x-requestor-token".to_owned(), token.to_owned()),
        ]
    };
    let path = format!(
        "/iam/user/{}/device?requestorUsername=Boss",
        target.user_uuid
    );
    let owned = headers(&admin.token);
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, resp) = app.call(Method::GET, &path, None, &pairs).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let path = format!(
        "/iam/user/{}/device?requestorUsername=Worker",
        target.user_uuid
    );
    let owned = headers(&target.token);
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, resp) = app.call(Method::GET, &path, None, &pairs).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::FORBIDDEN, "AN-IAM-1001"),
        "{resp}"
    );
    let body = json!({"applicationUuid": app.app, "username": "Worker", "purpose": "audit"});
    let (status, issued) = app.backend("/self-service/otp", &body).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let otp = issued["otp"].as_str().unwrap().to_owned();

    app.stop_server().await;
    let (ok, out, err) = audit_tail(&app.data_dir(), &["--json", "--limit", "1000"]).await;
    assert!(ok, "audit tail failed: {err}");
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let allowed = entries.iter().find(|e| {
        e["event"] == "iam_call"
            && e["outcome"] == "success"
            && e["fields"]["action"] == "list_devices"
    });
    let allowed = allowed.unwrap_or_else(|| panic!("no successful IAM call in {out}"));
    assert_eq!(allowed["requestor"], admin.user_uuid.as_str(), "{allowed}");
    assert_eq!(allowed["user"], target.user_uuid.as_str(), "{allowed}");
    assert!(
        entries
            .iter()
            .any(|e| e["event"] == "iam_call" && e["code"] == "AN-IAM-1001"),
        "the refused requestor is not in {out}"
    );
    assert!(entries.iter().any(|e| e["event"] == "otp_issued"), "{out}");
    assert!(!out.contains(&otp), "the OTP leaked into the audit log");
    assert!(
        !out.contains(&admin.token) && !out.contains("@example.test"),
        "{out}"
    );
}
