//! The HTTP façade: routes of the contract, turned into engine calls, and every failure into
//! the contract's envelope. No business rules live here.

mod body;
mod cors;
mod envelope;
mod extract;
pub(crate) mod rate_limit;
mod routes {
    pub(crate) mod authentication;
    pub(crate) mod device;
    pub(crate) mod iam;
    pub(crate) mod jwt;
    pub(crate) mod login_page;
    pub(crate) mod oidc;
    pub(crate) mod ops;
    pub(crate) mod otp;
    pub(crate) mod self_service;
    pub(crate) mod user;
}

use std::sync::{Arc, atomic::AtomicBool};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
    routing::{delete, get, patch, post},
};
use latchkey_actors::Engine;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;

pub(crate) use body::BodyLimits;
use envelope::{ApiError, Fault};
use rate_limit::Limiters;
use routes::{authentication, device, iam, jwt, login_page, oidc, ops, otp, self_service, user};

/// The contract's base path.
pub const BASE: &str = "/authenticate/v1-2";

/// What every handler gets.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) ready: Arc<AtomicBool>,
    /// Rate limits: per application and target here, per client address by layer.
    pub(crate) limits: Arc<Limiters>,
}

/// Limits of the façade.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) body: BodyLimits,
    pub(crate) max_in_flight: usize,
}

/// Builds the router; tests and `main` use the same one.
pub(crate) fn router(state: AppState, limits: Limits) -> Router {
    let api = Router::new()
        .route("/self-service/user", post(self_service::create_user))
        .route("/self-service/device", post(self_service::create_device))
        .route(
            "/authentication/activate/user",
            post(authentication::activate_user),
        )
        .route(
            "/authentication/activate/device",
            post(authentication::activate_device),
        )
        .route("/authentication/login", post(authentication::login))
        .route("/authentication/logout", delete(authentication::logout))
        .route(
            "/authentication/forgot-pin",
            post(authentication::forgot_pin),
        )
        .route("/authentication/reset-pin", post(authentication::reset_pin))
        .route("/user/current", get(user::current))
        .route(
            "/user/{user}",
            get(user::get).patch(user::patch).delete(user::delete),
        )
        .route("/user/{user}/device", get(user::devices))
        .route(
            "/device/{device}",
            patch(device::patch).delete(device::delete),
        )
        .route(
            "/device/{device}/auth-key",
            delete(device::delete_auth_keys),
        )
        .route("/device/{device}/forgot-pin", post(device::forgot_pin))
        .route("/device/{device}/reset-pin", post(device::reset_pin))
        .route("/jwt/renew", get(jwt::renew))
        .route("/jwt/validate", get(jwt::validate))
        .route("/self-service/otp", post(otp::self_service_issue))
        .route(
            "/self-service/otp/validate",
            post(otp::self_service_validate),
        )
        .route("/anonymous-otp", post(otp::anonymous_issue))
        .route("/anonymous-otp/validate", post(otp::anonymous_validate))
        .route("/otp/validate", post(otp::validate))
        .route("/user/{user}/otp", get(otp::own_list).post(otp::own_issue))
        .route("/user/{user}/otp/validate", post(otp::own_validate))
        .route(
            "/iam/user",
            get(iam::get_user).patch(iam::patch_user_by_query),
        )
        .route(
            "/iam/user/{user}",
            patch(iam::patch_user).delete(iam::delete_user),
        )
        .route("/iam/user/{user}/device", get(iam::devices))
        .route(
            "/iam/user/{user}/device/{device}",
            patch(iam::patch_device).delete(iam::delete_device),
        )
        .route("/iam/user/{user}/otp", post(iam::issue_otp));

    // Public documents a relying party's page may read from any origin.
    let documents = Router::new()
        .route(
            "/openid/{app}/.well-known/openid-configuration",
            cors::preflight(get(oidc::discovery)),
        )
        .route("/openid/{app}/jwks", cors::preflight(get(oidc::jwks_of)))
        .route("/openid/jwks", cors::preflight(get(oidc::jwks)))
        // CORS outside the limit, so that a 429 is readable by the page that got it.
        .route_layer(middleware::from_fn_with_state(
            state.limits.clone(),
            rate_limit::per_address,
        ))
        .route_layer(cors::documents());

    // Routes without an API key or bearer token: limited per client address.
    let open = Router::new()
        .route("/jwt/public-key", get(jwt::public_key))
        .route(
            "/openid/{app}/auth",
            get(oidc::authorize).post(oidc::authorize_form),
        )
        .route(
            "/openid/auth",
            get(oidc::authorize).post(oidc::authorize_form),
        )
        .route("/openid/login", get(login_page::page))
        .route("/openid/login/login.js", get(login_page::script))
        .route("/openid/login/login.css", get(login_page::style))
        .route("/openid/login/api/context", get(login_page::context))
        .route("/openid/login/api/sign-up", post(login_page::sign_up))
        .route(
            "/openid/login/api/activate-user",
            post(login_page::activate_user),
        )
        .route("/openid/login/api/add-device", post(login_page::add_device))
        .route(
            "/openid/login/api/activate-device",
            post(login_page::activate_device),
        )
        .route("/openid/login/api/login", post(login_page::login))
        .route("/openid/login/api/forgot-pin", post(login_page::forgot_pin))
        .route("/openid/login/api/reset-pin", post(login_page::reset_pin))
        .route_layer(middleware::from_fn_with_state(
            state.limits.clone(),
            rate_limit::per_address,
        ));

    // What a relying party's back end calls: limited per address, but with a limit of its own.
    let relying_party = Router::new()
        .route("/openid/{app}/token", cors::preflight(post(oidc::token)))
        .route("/openid/token", cors::preflight(post(oidc::token)))
        .route(
            "/openid/{app}/userinfo",
            cors::preflight(get(oidc::userinfo).post(oidc::userinfo)),
        )
        .route(
            "/openid/userinfo",
            cors::preflight(get(oidc::userinfo).post(oidc::userinfo)),
        )
        .route(
            "/openid/{app}/introspect",
            cors::preflight(post(oidc::introspect)),
        )
        .route(
            "/openid/introspect",
            cors::preflight(post(oidc::introspect)),
        )
        .route("/openid/{app}/revoke", cors::preflight(post(oidc::revoke)))
        .route("/openid/revoke", cors::preflight(post(oidc::revoke)))
        .route_layer(middleware::from_fn_with_state(
            state.limits.clone(),
            rate_limit::per_relying_party_address,
        ))
        .route_layer(cors::relying_party(state.engine.clone()));

    Router::new()
        .nest(BASE, api.merge(documents).merge(open).merge(relying_party))
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.body.max_bytes))
        .layer(middleware::from_fn(log_faults))
        .layer(GlobalConcurrencyLimitLayer::new(limits.max_in_flight))
        .layer(middleware::from_fn(move |req, next| {
            body::read_whole(limits.body, req, next)
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned());
            let route = route.as_deref().unwrap_or("?");
            tracing::debug_span!("request", method = %req.method(), route)
        }))
}

/// Logs our-fault errors once, with the id the client was given.
async fn log_faults(req: Request, next: Next) -> Response {
    let route = req.uri().path().to_owned();
    let response = next.run(req).await;
    if let Some(fault) = response.extensions().get::<Fault>() {
        tracing::error!(route = %route, fault = %fault.0, "request failed on our side");
    }
    response
}
