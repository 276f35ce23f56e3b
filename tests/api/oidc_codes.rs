//! OpenID Connect codes and refresh tokens: a code works once, for its client, redirect URI
//! and PKCE verifier, within its minute; a replayed code revokes what the first exchange gave;
//! refresh tokens rotate, and a reused one revokes its family, also under a parallel burst.

use reqwest::StatusCode;
use serde_json::Value;

use crate::oidc::{Auth, Authz, CB, Provider, post_form};

/// Asserts an RFC 6749 error answer.
fn assert_oauth_error(answer: &(StatusCode, Value), status: StatusCode, error: &str, what: &str) {
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (status, Some(error)),
        "{what}: {}",
        answer.1
    );
}

/// Asserts that everything an exchange gave is dead: both tokens introspect inactive, the
/// refresh token refreshes no more, userinfo refuses the access token.
async fn assert_revoked(op: &Provider, tokens: &Value, what: &str) {
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert!(
        !op.active(access).await,
        "{what}: the access token is still active"
    );
    assert!(
        !op.active(refresh).await,
        "{what}: the refresh token is still active"
    );
    let (status, _) = op.userinfo(access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: userinfo");
    let answer = op.refresh(refresh, &op.basic()).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", what);
}

/// Asserts the tokens work (so that a later "revoked" means something).
async fn assert_live(op: &Provider, tokens: &Value) {
    assert!(op.active(tokens["access_token"].as_str().unwrap()).await);
    assert!(op.active(tokens["refresh_token"].as_str().unwrap()).await);
}

async fn replay_after(secs: i64) {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Replay").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let first = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_live(&op, &first.1).await;
    // What a refresh got from the first tokens belongs to the same grant.
    let refreshed = op
        .refresh(first.1["refresh_token"].as_str().unwrap(), &op.basic())
        .await;
    assert_eq!(refreshed.0, StatusCode::OK, "{}", refreshed.1);

    op.app.clock.advance(secs);
    let second = op.exchange(&code, &a, &op.basic()).await;
    assert_oauth_error(
        &second,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "a replay",
    );
    assert_revoked(&op, &first.1, "after a replayed code").await;
    assert_revoked(&op, &refreshed.1, "refreshed tokens after a replayed code").await;

    // Only that grant: a new login of the same user gets working tokens.
    let fresh = op.tokens(&mut device, &op.authz()).await;
    assert_live(&op, &fresh).await;
}

#[tokio::test]
async fn a_second_exchange_of_a_code_is_invalid_grant_and_revokes_the_first_tokens() {
    replay_after(0).await;
}

#[tokio::test]
async fn a_second_exchange_30_seconds_later_is_invalid_grant_and_revokes_the_first_tokens() {
    replay_after(30).await;
}

#[tokio::test]
async fn a_replay_after_the_code_expired_still_revokes_the_first_tokens() {
    replay_after(120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_parallel_exchanges_of_one_code_give_exactly_one_success() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Racer").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (http, url, auth) = (op.http.clone(), op.endpoint("token"), op.basic());
        let (code, verifier) = (code.clone(), a.verifier.clone().unwrap());
        tasks.spawn(async move {
            let fields = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CB),
                ("code_verifier", verifier.as_str()),
            ];
            post_form(&http, &url, &fields, &auth).await
        });
    }
    let answers = tasks.join_all().await;

    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for answer in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_oauth_error(answer, StatusCode::BAD_REQUEST, "invalid_grant", "a loser");
    }
    // The losers were replays of a used code: the winner's grant is revoked too.
    assert_revoked(&op, winners[0], "the winner after four replays").await;
}

#[tokio::test]
async fn a_code_is_bound_to_its_client_redirect_uri_and_verifier() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Bound").await;
    let second = "https://rp.example/second";
    let engine = op.app.engine();
    engine
        .update_client(&op.client_id, vec![CB.into(), second.into()])
        .await
        .unwrap();
    let (other, other_secret) = engine
        .create_client(op.app.app, vec![CB.into()], false)
        .await
        .unwrap();
    let other_auth = Auth::Basic(other, other_secret.unwrap());

    let a = op.authz();
    let wrong_verifier = {
        let mut w = a.clone();
        w.verifier = Some(crate::oidc::verifier());
        w
    };
    let no_verifier = {
        let mut w = a.clone();
        w.verifier = None;
        w
    };
    let short_verifier = {
        let mut w = a.clone();
        w.verifier = Some("short".into());
        w
    };
    let other_uri = {
        let mut w = a.clone();
        w.redirect_uri = Some(second.into());
        w
    };
    let unregistered_uri = {
        let mut w = a.clone();
        w.redirect_uri = Some(format!("{CB}/"));
        w
    };
    let no_uri = {
        let mut w = a.clone();
        w.redirect_uri = None;
        w
    };
    let cases: [(&str, &Authz, &Auth); 7] = [
        ("another client", &a, &other_auth),
        ("another registered redirect URI", &other_uri, &op.basic()),
        (
            "an unregistered redirect URI",
            &unregistered_uri,
            &op.basic(),
        ),
        (
            "no redirect URI (the request named one)",
            &no_uri,
            &op.basic(),
        ),
        ("no verifier", &no_verifier, &op.basic()),
        ("a wrong verifier", &wrong_verifier, &op.basic()),
        ("a malformed verifier", &short_verifier, &op.basic()),
    ];
    for (what, as_sent, auth) in cases {
        // A fresh code for each case, so that each refusal stands on its own.
        let code = op.code(&mut device, &a).await;
        let answer = op.exchange(&code, as_sent, auth).await;
        assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", what);
        assert!(answer.1.get("access_token").is_none(), "{what}");
    }

    // A code issued without PKCE cannot be exchanged with a verifier either.
    let mut plain = a.clone();
    plain.verifier = None;
    let code = op.code(&mut device, &plain).await;
    let answer = op.exchange(&code, &a, &op.basic()).await;
    assert_oauth_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "verifier, no PKCE",
    );
    let answer = op.exchange(&code, &plain, &op.basic()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    // A code of this application at another application's issuer: not this client there.
    let code = op.code(&mut device, &a).await;
    let (foreign, _) = engine.create_app("elsewhere").await.unwrap();
    let url = format!(
        "{}{}/openid/{}/token",
        op.app.base,
        latchkey::BASE,
        foreign.uuid
    );
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CB),
        ("code_verifier", a.verifier.as_deref().unwrap()),
    ];
    let answer = post_form(&op.http, &url, &fields, &op.basic()).await;
    assert_oauth_error(
        &answer,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "foreign issuer",
    );
}

#[tokio::test]
async fn a_code_lives_sixty_seconds() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Slow").await;
    let a = op.authz();

    let code = op.code(&mut device, &a).await;
    op.app.clock.advance(55);
    let answer = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(answer.0, StatusCode::OK, "a code 55 s old: {}", answer.1);

    let code = op.code(&mut device, &a).await;
    op.app.clock.advance(61);
    let answer = op.exchange(&code, &a, &op.basic()).await;
    assert_oauth_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "61 s old",
    );
}

#[tokio::test]
async fn a_made_up_or_altered_code_is_invalid_grant() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Forger").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let (id, secret) = code.split_once('.').unwrap();
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let flipped = format!("{id}.{}{last}", &secret[..secret.len() - 1]);
    for bad in [
        "",
        "nonsense",
        "a.b",
        flipped.as_str(),
        &format!("{}.{secret}", "0".repeat(32)),
        id,
    ] {
        let answer = op.exchange(bad, &a, &op.basic()).await;
        assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", bad);
    }
    // None of that used the real code up.
    let answer = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

// == Refresh tokens

#[tokio::test]
async fn an_access_token_expires_on_time_and_its_family_after_thirty_days() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Ageing").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let access = tokens["access_token"].as_str().unwrap();
    let ttl = tokens["expires_in"].as_i64().unwrap();
    assert_eq!(ttl, 900, "{tokens}");

    op.app.clock.advance(ttl - 5);
    assert!(op.active(access).await, "expired early");
    op.app.clock.advance(10);
    assert!(
        !op.active(access).await,
        "an expired access token introspects active"
    );
    let (status, _) = op.userinfo(access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The refresh token outlives it, but not the family's thirty days; rotation does not
    // extend them.
    let (status, fresh) = op
        .refresh(tokens["refresh_token"].as_str().unwrap(), &op.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    op.app.clock.advance(30 * 24 * 3600 - ttl - 60);
    let (status, fresh) = op
        .refresh(fresh["refresh_token"].as_str().unwrap(), &op.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "a day-29 refresh: {fresh}");
    op.app.clock.advance(120);
    let refresh = fresh["refresh_token"].as_str().unwrap();
    assert!(!op.active(refresh).await);
    let answer = op.refresh(refresh, &op.basic()).await;
    assert_oauth_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "after 30 days",
    );
}

#[tokio::test]
async fn a_refresh_rotates_and_a_reused_refresh_token_revokes_the_family() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Rotor").await;
    let first = op.tokens(&mut device, &op.authz()).await;
    let old = first["refresh_token"].as_str().unwrap();

    let (status, second) = op.refresh(old, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_live(&op, &second).await;
    assert!(
        !op.active(old).await,
        "a rotated-out refresh token introspects active"
    );

    // The old one again: refused, and the whole family goes.
    let answer = op.refresh(old, &op.basic()).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", "reuse");
    assert_revoked(&op, &second, "the family after a reuse").await;
    assert!(!op.active(first["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn with_a_grace_period_a_lost_refresh_answer_can_be_retried_once_soon_after() {
    let (op, first, _lost) = refreshed_once("Flaky", 10).await;
    let old = first["refresh_token"].as_str().unwrap();

    // The client never got `_lost` and tries again with the old token: a new rotation.
    let (status, retried) = op.refresh(old, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let current = retried["refresh_token"].as_str().unwrap();
    assert_live(&op, &retried).await;
    let (status, next) = op.refresh(current, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "the retried chain goes on: {next}");

    // A second retry is a reuse: the family goes.
    let answer = op.refresh(old, &op.basic()).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", "reuse");
    assert_revoked(&op, &next, "the family after a reuse").await;
}

#[tokio::test]
async fn after_a_retry_the_token_the_lost_answer_carried_is_a_reuse() {
    let (op, first, lost) = refreshed_once("Twice", 10).await;

    // The window holds for the whole tenth second.
    op.app.clock.advance(10);
    let old = first["refresh_token"].as_str().unwrap();
    let (status, retried) = op.refresh(old, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let answer = op
        .refresh(lost["refresh_token"].as_str().unwrap(), &op.basic())
        .await;

    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", "reuse");
    assert_revoked(&op, &retried, "the family after the lost token turned up").await;
}

#[tokio::test]
async fn revoking_a_rotated_out_refresh_token_revokes_its_family() {
    let (op, first, second) = refreshed_once("Revoker", 0).await;

    op.revoke(first["refresh_token"].as_str().unwrap()).await;

    assert_revoked(&op, &second, "the family of a revoked old token").await;
}

#[tokio::test]
async fn after_the_grace_period_a_reused_refresh_token_revokes_the_family() {
    let (op, first, second) = refreshed_once("Late", 10).await;

    op.app.clock.advance(11);
    let answer = op
        .refresh(first["refresh_token"].as_str().unwrap(), &op.basic())
        .await;

    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", "reuse");
    assert_revoked(&op, &second, "the family after a late reuse").await;
}

/// A provider with the given refresh grace, and a grant refreshed once: its first tokens and
/// the refresh's answer.
async fn refreshed_once(name: &str, grace: u64) -> (Provider, Value, Value) {
    let op = Provider::spawn_with(|c| c.app_defaults.refresh_token_reuse_grace_secs = grace).await;
    let mut device = op.app.new_device(name).await;
    let first = op.tokens(&mut device, &op.authz()).await;
    let (status, second) = op
        .refresh(first["refresh_token"].as_str().unwrap(), &op.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    (op, first, second)
}

#[tokio::test]
async fn a_refresh_refused_for_its_scope_does_not_use_the_refresh_token_up() {
    // A refresh may narrow the scope (RFC 6749 6) but not widen it. A refused request must
    // change nothing, or the client's retry with the same token looks like a reuse and loses
    // the whole grant.
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Scoped").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(tokens["scope"], "openid profile email", "{tokens}");

    let wider = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("scope", "openid profile email offline_access"),
    ];
    let answer = op.post_form("token", &wider, &op.basic()).await;
    assert_oauth_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        "a wider scope",
    );

    let narrower = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("scope", "openid"),
    ];
    let (status, body) = op.post_form("token", &narrower, &op.basic()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same refresh token after a refused refresh, narrowed: {body}"
    );
    assert_eq!(body["scope"], "openid", "{body}");
    assert_live(&op, &body).await;

    // The grant keeps its scopes: the next refresh without `scope` has them all again.
    let (status, again) = op
        .refresh(body["refresh_token"].as_str().unwrap(), &op.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["scope"], "openid profile email", "{again}");
}

#[tokio::test]
async fn a_refresh_token_works_only_for_its_own_client() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Owner").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (other, secret) = op
        .app
        .engine()
        .create_client(op.app.app, vec![CB.into()], false)
        .await
        .unwrap();
    let answer = op
        .refresh(refresh, &Auth::Basic(other, secret.unwrap()))
        .await;
    assert_oauth_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "another client",
    );
    // The owner still refreshes.
    let (status, body) = op.refresh(refresh, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_refreshes_with_one_token_give_at_most_one_success_and_no_5xx() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Burst").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url, auth) = (op.http.clone(), op.endpoint("token"), op.basic());
        let refresh = refresh.clone();
        tasks.spawn(async move {
            let fields = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
            ];
            post_form(&http, &url, &fields, &auth).await
        });
    }
    let answers = tasks.join_all().await;

    assert!(
        answers.iter().all(|(s, _)| !s.is_server_error()),
        "{answers:?}"
    );
    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, body)| body)
        .collect();
    assert!(
        winners.len() <= 1,
        "{} refreshes succeeded: {answers:?}",
        winners.len()
    );
    for answer in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_oauth_error(answer, StatusCode::BAD_REQUEST, "invalid_grant", "a loser");
    }

    // Afterwards the family is revoked: the winner's tokens and the first ones alike.
    for winner in &winners {
        assert_revoked(&op, winner, "the winner of the burst").await;
    }
    assert!(!op.active(tokens["access_token"].as_str().unwrap()).await);
    let answer = op.refresh(&refresh, &op.basic()).await;
    assert_oauth_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "after the burst",
    );
}

#[tokio::test]
async fn revoking_an_access_token_ends_it_alone_and_a_refresh_token_its_whole_family() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Revoker").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    op.revoke(access).await;
    assert!(!op.active(access).await);
    assert!(
        op.active(refresh).await,
        "an access token's revocation ended its refresh token"
    );
    let (status, fresh) = op.refresh(refresh, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_live(&op, &fresh).await;

    // Another client cannot revoke this client's tokens (RFC 7009 2.1); its call still
    // answers 200, as for a token it does not know.
    let (other, secret) = op
        .app
        .engine()
        .create_client(op.app.app, vec![CB.into()], false)
        .await
        .unwrap();
    let other = Auth::Basic(other, secret.unwrap());
    for token in ["access_token", "refresh_token"] {
        let token = fresh[token].as_str().unwrap();
        let (status, body) = op.post_form("revoke", &[("token", token)], &other).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_live(&op, &fresh).await;
    let (status, body) = op
        .post_form("revoke", &[("token", "unknown")], &op.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "an unknown token: {body}");

    op.revoke(fresh["refresh_token"].as_str().unwrap()).await;
    assert_revoked(&op, &fresh, "after the refresh token's revocation").await;
}

#[tokio::test]
async fn a_used_code_is_remembered_across_a_restart_so_a_replay_still_revokes() {
    let mut op = Provider::spawn().await;
    let mut device = op.app.new_device("Restarted").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let first = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);

    // A restart ten minutes later (the code's minute is long over; the access token's quarter
    // of an hour is not) sweeps dead grants; a used code is kept a day for this.
    op.app.clock.advance(600);
    op.app.restart().await;
    assert_live(&op, &first.1).await;
    let second = op.exchange(&code, &a, &op.basic()).await;
    assert_oauth_error(
        &second,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "a late replay",
    );
    assert_revoked(&op, &first.1, "after a replay across a restart").await;
}

#[tokio::test]
async fn exchanges_and_revocations_are_audited_without_codes_or_tokens() {
    let mut op = Provider::spawn().await;
    let mut device = op.app.new_device("Audited").await;
    let mut secrets = vec![op.secret.clone()];

    // A code exchanged, then replayed.
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let (status, first) = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let answer = op.exchange(&code, &a, &op.basic()).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", "replay");
    // A refresh token reused.
    let second = op.tokens(&mut device, &op.authz()).await;
    let old = second["refresh_token"].as_str().unwrap();
    let (status, rotated) = op.refresh(old, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let answer = op.refresh(old, &op.basic()).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant", "reuse");
    // A refresh token revoked.
    let third = op.tokens(&mut device, &op.authz()).await;
    op.revoke(third["refresh_token"].as_str().unwrap()).await;
    secrets.push(code);
    for set in [&first, &second, &rotated, &third] {
        for kind in ["access_token", "refresh_token", "id_token"] {
            secrets.push(set[kind].as_str().unwrap().to_owned());
        }
    }

    op.app.stop_server().await;
    let data = op.app.data_dir();
    let app = op.app.app.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["audit", "tail", "--app", &app, "--json", "--data-dir"])
        .arg(&data)
        .env_remove("LATCHKEY_CONFIG")
        .env_remove("LATCHKEY_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oidc: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|e| e["event"].as_str().is_some_and(|k| k.starts_with("oidc_")))
        .collect();
    let summary: Vec<String> = oidc
        .iter()
        .map(|e| {
            let reason = e["fields"]["reason"].as_str().map(|r| format!(" {r}"));
            format!(
                "{}{}",
                e["event"].as_str().unwrap(),
                reason.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "oidc_code_exchanged",
            "oidc_grant_revoked code_replay",
            "oidc_code_exchanged",
            "oidc_grant_revoked refresh_reuse",
            "oidc_code_exchanged",
            "oidc_grant_revoked revocation",
        ],
        "{stdout}"
    );
    for e in &oidc {
        assert_eq!(e["fields"]["client_id"], op.client_id.as_str(), "{e}");
        assert_eq!(e["app"], app.as_str(), "{e}");
    }
    for exchange in oidc.iter().filter(|e| e["event"] == "oidc_code_exchanged") {
        assert_eq!(exchange["user"], device.user_uuid.as_str(), "{exchange}");
    }
    for secret in &secrets {
        assert!(
            !stdout.contains(secret.as_str()),
            "a secret in the audit log: {secret}"
        );
    }
}
