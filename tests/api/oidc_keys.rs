//! OpenID Connect key rotation: after `latchkey keys rotate`, tokens signed before still verify
//! (ID tokens against the JWKS, access tokens at userinfo) and the JWKS serves both the old
//! and the new keys, until every token an old key signed has expired.

use std::collections::BTreeSet;

use latchkey_actors::AppSettings;
use openidconnect::{ClientId, ClientSecret, Nonce, core::CoreClient, core::CoreIdToken};
use reqwest::StatusCode;
use serde_json::Value;

use crate::oidc::{Provider, discover, header_of};

/// The kids the JWKS serves now.
async fn jwks_kids(op: &Provider) -> BTreeSet<String> {
    let resp = op.http.get(op.endpoint("jwks")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set: Value = resp.json().await.unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().expect("every key has a kid").to_owned())
        .collect()
}

fn kid(jwt: &str) -> String {
    header_of(jwt)["kid"].as_str().unwrap().to_owned()
}

/// Verifies an ID token as a relying party would: discovery, the JWKS it names, the nonce.
async fn verify_id_token(op: &Provider, id_token: &str, nonce: Option<&str>) -> Result<(), String> {
    let client = CoreClient::from_provider_metadata(
        discover(op).await,
        ClientId::new(op.client_id.clone()),
        Some(ClientSecret::new(op.secret.clone())),
    );
    let token: CoreIdToken = id_token.parse().map_err(|e| format!("{e:?}"))?;
    let verifier = client.id_token_verifier();
    let result = match nonce {
        Some(nonce) => token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map(|_| ()),
        None => token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map(|_| ()),
    };
    result.map_err(|e| format!("{e:?}"))
}

/// `latchkey keys rotate` on the stopped server's data directory; returns the new kids.
fn rotate_with_cli(op: &Provider) -> BTreeSet<String> {
    let data = op.app.data_dir();
    let app = op.app.app.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["keys", "rotate", "--app", &app, "--data-dir"])
        .arg(&data)
        .env_remove("LATCHKEY_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keys rotate: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().rfind(|l| l.starts_with('{')).unwrap();
    let answer: Value = serde_json::from_str(line).unwrap();
    answer["currentKids"]
        .as_array()
        .unwrap_or_else(|| panic!("no currentKids in {answer}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tokens_signed_before_a_rotation_verify_until_the_old_keys_may_go() {
    let mut op = Provider::spawn().await;
    let mut device = op.app.new_device("Rotate").await;
    let a = op.authz();
    let old = op.tokens(&mut device, &a).await;
    let old_id = old["id_token"].as_str().unwrap();
    let old_access = old["access_token"].as_str().unwrap();
    let old_kids = jwks_kids(&op).await;
    assert!(old_kids.contains(&kid(old_id)) && old_kids.contains(&kid(old_access)));
    assert_eq!(header_of(old_id)["alg"], "RS256");

    // The operator's way: stop the server, rotate, start it again.
    op.app.stop_server().await;
    let new_kids = rotate_with_cli(&op);
    op.app.restart().await;
    assert!(
        !new_kids.is_empty() && new_kids.is_disjoint(&old_kids),
        "{new_kids:?}"
    );

    // Both generations are published, and what the old keys signed still verifies.
    let kids = jwks_kids(&op).await;
    assert!(
        kids.is_superset(&old_kids),
        "{kids:?} lost some of {old_kids:?}"
    );
    assert!(
        kids.is_superset(&new_kids),
        "{kids:?} lacks some of {new_kids:?}"
    );
    verify_id_token(&op, old_id, a.nonce.as_deref())
        .await
        .unwrap_or_else(|e| panic!("an ID token from before the rotation: {e}"));
    let (status, info) = op.userinfo(old_access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an access token from before the rotation: {info}"
    );

    // New tokens are signed with the new keys, and verify too.
    let a = op.authz();
    let new = op.tokens(&mut device, &a).await;
    let new_id = new["id_token"].as_str().unwrap();
    assert!(
        new_kids.contains(&kid(new_id)),
        "{} not in {new_kids:?}",
        kid(new_id)
    );
    assert!(new_kids.contains(&kid(new["access_token"].as_str().unwrap())));
    verify_id_token(&op, new_id, a.nonce.as_deref())
        .await
        .unwrap();

    // Once every token an old key signed has expired, the old keys leave the JWKS; a restart
    // (which drops them from storage) keeps them out.
    let keep = AppSettings::default().key_keep_secs();
    assert!(keep >= AppSettings::default().id_token_ttl_secs + 60);
    op.app.clock.advance(i64::try_from(keep).unwrap() + 1);
    let kids = jwks_kids(&op).await;
    assert!(
        kids.is_disjoint(&old_kids),
        "old keys still served: {kids:?}"
    );
    assert!(kids.is_superset(&new_kids), "{kids:?}");
    op.app.restart().await;
    let kids = jwks_kids(&op).await;
    assert!(
        kids.is_disjoint(&old_kids),
        "old keys back after a restart: {kids:?}"
    );
    assert_eq!(kids, new_kids, "only the current keys are left");
}

#[tokio::test]
async fn a_retired_key_stays_published_up_to_its_keep_time() {
    let mut op = Provider::spawn().await;
    let old_kids = jwks_kids(&op).await;
    op.app.stop_server().await;
    rotate_with_cli(&op);
    op.app.restart().await;

    // Shortly before the keep time ends (a minute of margin for the real time this test
    // takes), the old keys are still there, also after a restart (which sweeps stored keys).
    let keep = i64::try_from(AppSettings::default().key_keep_secs()).unwrap();
    op.app.clock.advance(keep - 60);
    op.app.restart().await;
    let kids = jwks_kids(&op).await;
    assert!(
        kids.is_superset(&old_kids),
        "{kids:?} lost some of {old_kids:?} too early"
    );
}

#[tokio::test]
async fn a_rotation_through_the_engine_takes_effect_on_a_running_server() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Live").await;
    let a = op.authz();
    let old = op.tokens(&mut device, &a).await;
    let current = op.app.engine().rotate_keys(op.app.app).await.unwrap();

    let new = op.tokens(&mut device, &op.authz()).await;
    let new_kid = kid(new["id_token"].as_str().unwrap());
    assert!(current.contains(&new_kid), "{new_kid} not in {current:?}");
    assert_ne!(new_kid, kid(old["id_token"].as_str().unwrap()));
    verify_id_token(&op, old["id_token"].as_str().unwrap(), a.nonce.as_deref())
        .await
        .unwrap();
    let (status, info) = op.userinfo(old["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    // The refresh token from before the rotation gets tokens signed with the new keys.
    let (status, refreshed) = op
        .refresh(old["refresh_token"].as_str().unwrap(), &op.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let refreshed_kid = kid(refreshed["id_token"].as_str().unwrap());
    assert!(current.contains(&refreshed_kid), "{refreshed_kid}");
    verify_id_token(&op, refreshed["id_token"].as_str().unwrap(), None)
        .await
        .unwrap();
}
