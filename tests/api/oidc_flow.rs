//! OpenID Connect: the full code flow with the `openidconnect` crate as the relying party
//! (discovery, authorize with PKCE, nonce and state, a login in OIDC mode, code exchange, ID
//! token verification, userinfo, refresh, revocation, introspection).

use latchkey::BASE;
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    IntrospectionUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, RevocationUrl,
    Scope, TokenIntrospectionResponse, TokenResponse,
    core::{
        CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreJwsSigningAlgorithm,
        CoreRevocableToken, CoreUserInfoClaims,
    },
};
use reqwest::StatusCode;

use crate::oidc::{Answer, CB, PUBLIC_URL, Provider, discover, query_param};

#[tokio::test]
async fn the_openidconnect_crate_completes_a_code_flow_with_this_provider() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Rita").await;
    let http = op.rp_http();

    // Discovery, and a client built from it.
    let metadata = discover(&op).await;
    assert_eq!(metadata.issuer().as_str(), op.issuer());
    let more = metadata.additional_metadata().clone();
    assert_eq!(more.code_challenge_methods_supported, ["S256"]);
    let algs = metadata.id_token_signing_alg_values_supported();
    assert_eq!(algs, &[CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]);
    let methods = metadata.token_endpoint_auth_methods_supported().unwrap();
    for method in [
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
        CoreClientAuthMethod::None,
    ] {
        assert!(methods.contains(&method), "{method:?} not in {methods:?}");
    }
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(op.client_id.clone()),
        Some(ClientSecret::new(op.secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(CB.into()).unwrap())
    .set_revocation_url(RevocationUrl::new(more.revocation_endpoint).unwrap())
    .set_introspection_url(IntrospectionUrl::new(more.introspection_endpoint).unwrap());

    // The authorize URL, with PKCE S256, a nonce and a state.
    let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(pkce_challenge)
        .url();
    let resp = op
        .http
        .get(op.local(auth_url.as_str()))
        .send()
        .await
        .unwrap();
    let answer = Answer::read(resp).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let login_page = answer.location.unwrap();
    assert!(
        login_page.starts_with(&format!("{PUBLIC_URL}{BASE}/openid/login?")),
        "{login_page}"
    );
    let txid = query_param(&login_page, "htOidTxid").unwrap();
    assert_eq!(query_param(&login_page, "state").unwrap(), *csrf.secret());
    assert_eq!(query_param(&login_page, "nonce").unwrap(), *nonce.secret());
    assert_eq!(query_param(&login_page, "client_id").unwrap(), op.client_id);

    // The back end logs the user in in OIDC mode and sends the browser to the client.
    let (status, resp) = op
        .login_oidc(&mut device, &txid, Some(nonce.secret()))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["accessToken"]["type"], "OAUTH_CODE", "{resp}");
    let code = resp["accessToken"]["token"].as_str().unwrap().to_owned();
    let state = query_param(&login_page, "state").unwrap();
    let back = crate::oidc::encode(&[("code", code.clone()), ("state", state)]);
    let callback = format!("{CB}?{back}");

    // The relying party takes the code from its callback, after checking the state.
    assert_eq!(
        query_param(&callback, "state").as_ref(),
        Some(csrf.secret())
    );
    let code = query_param(&callback, "code").unwrap();
    assert!(!code.starts_with("eyJ"), "a code, not a JWT: {code}");

    // The code exchange, with the verifier, and the ID token checked with the nonce.
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("code exchange: {e:?}"));
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .unwrap_or_else(|e| panic!("ID token: {e:?}"));
    assert_eq!(claims.issuer().as_str(), op.issuer());
    assert_eq!(claims.subject().as_str(), device.user_uuid);
    assert_eq!(claims.audiences()[0].as_str(), op.client_id);
    let first_auth_time = claims.auth_time();
    assert!(first_auth_time.is_some(), "auth_time");
    let acr = claims.auth_context_ref().expect("acr");
    assert!(!acr.as_str().is_empty());
    let amr: Vec<&str> = claims
        .auth_method_refs()
        .expect("amr")
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert!(
        amr.contains(&"pin"),
        "a PIN login's amr names the PIN: {amr:?}"
    );
    let at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&at_hash));

    // Userinfo with the access token.
    let info: CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("userinfo: {e:?}"));
    assert_eq!(info.preferred_username().unwrap().as_str(), "Rita");
    assert_eq!(info.email().unwrap().as_str(), "rita@example.test");
    assert_eq!(
        info.email_verified(),
        Some(false),
        "the back end delivers tokens itself: nothing proved the address"
    );

    // A refresh rotates the refresh token and gives a new access token.
    let first_refresh = tokens.refresh_token().expect("a refresh token").clone();
    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("refresh: {e:?}"));
    let refresh = refreshed
        .refresh_token()
        .expect("a new refresh token")
        .clone();
    assert_ne!(refresh.secret(), first_refresh.secret());
    let access = refreshed.access_token().clone();
    assert_ne!(access.secret(), tokens.access_token().secret());
    if let Some(id_token) = refreshed.id_token() {
        // A refresh answers without the nonce: there was no authorize request.
        let claims = id_token
            .claims(&verifier, |n: Option<&Nonce>| match n {
                None => Ok(()),
                Some(_) => Err("a nonce in a refreshed ID token".to_owned()),
            })
            .unwrap_or_else(|e| panic!("refreshed ID token: {e:?}"));
        assert_eq!(claims.subject().as_str(), device.user_uuid);
        // The user proved themselves at the login, not at the refresh.
        assert_eq!(claims.auth_time(), first_auth_time);
    }

    // Introspection sees the new tokens live, then revocation ends them.
    let live = client
        .introspect(&access)
        .request_async(&http)
        .await
        .unwrap();
    assert!(live.active(), "{live:?}");
    assert_eq!(live.sub(), Some(device.user_uuid.as_str()));
    client
        .revoke_token(CoreRevocableToken::from(access.clone()))
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("revocation: {e:?}"));
    let after = client
        .introspect(&access)
        .request_async(&http)
        .await
        .unwrap();
    assert!(!after.active(), "a revoked access token: {after:?}");
    let (status, _) = op.userinfo(access.secret()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    client
        .revoke_token(CoreRevocableToken::from(refresh.clone()))
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("revocation: {e:?}"));
    let as_refresh = AccessToken::new(refresh.secret().clone());
    let after = client
        .introspect(&as_refresh)
        .request_async(&http)
        .await
        .unwrap();
    assert!(!after.active(), "a revoked refresh token: {after:?}");
    let again = client
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await;
    assert!(again.is_err(), "a revoked refresh token refreshed");
    let (status, body) = op.refresh(refresh.secret(), &op.basic()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn provider_tokens_and_the_back_end_s_jwts_are_not_interchangeable() {
    // Both are JWTs signed by keys of the same application: each must be refused where the
    // other belongs, or a relying party's token would open the user and device routes.
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Kinds").await;
    let jwt = device.token.clone();
    assert!(
        jwt.starts_with("eyJ"),
        "the activation answered a JWT: {jwt}"
    );
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let user_path = format!("/user/{}", device.user_uuid);
    for kind in ["access_token", "id_token"] {
        let token = tokens[kind].as_str().unwrap();
        let (status, body) = op
            .app
            .bearer(reqwest::Method::GET, "/jwt/validate", token, None)
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{kind} at /jwt/validate: {body}"
        );
        let (status, body) = op
            .app
            .bearer(reqwest::Method::GET, &user_path, token, None)
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{kind} at {user_path}: {body}"
        );
    }
    for (what, token) in [
        ("the back end's JWT", jwt.as_str()),
        ("an ID token", tokens["id_token"].as_str().unwrap()),
    ] {
        let (status, body) = op.userinfo(token).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what} at userinfo: {body}"
        );
        assert!(!op.active(token).await, "{what} introspects active");
    }
    // The right tokens in the right places work.
    let (status, body) = op
        .app
        .bearer(reqwest::Method::GET, &user_path, &jwt, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = op.userinfo(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
