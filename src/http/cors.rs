//! Cross-origin access for the OpenID Connect endpoints a browser application calls itself:
//! a single-page application (a public client) exchanges its code and reads userinfo with
//! `fetch`, which the browser allows only when the answer names the page's origin.

use std::time::Duration;

use axum::{
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    routing::MethodRouter,
};
use latchkey_actors::Engine;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use super::AppState;

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Adds OPTIONS to a route, so that a browser's preflight reaches the CORS layer (which
/// answers it) rather than the 405 of a method the route does not serve.
pub(crate) fn preflight(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.options(|| async { StatusCode::NO_CONTENT })
}

/// Discovery and the JWKS: public documents, readable from any origin.
pub(crate) fn documents() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET])
        .expose_headers([header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Token, userinfo, introspection and revocation: only from the origin of a redirect URI some
/// client registered, the pages the provider already sends codes to. No cookies are involved
/// (the caller authenticates in headers or the body), so credentials are not allowed.
///
/// Limitation: an origin registered by one application's client is allowed on every
/// application's endpoints; what the endpoints answer still depends on the client's own
/// authentication, which CORS does not replace.
pub(crate) fn relying_party(engine: Engine) -> CorsLayer {
    let allowed = move |origin: &HeaderValue, _: &Parts| {
        origin
            .to_str()
            .is_ok_and(|origin| engine.oidc_cors_origin_allowed(origin))
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(allowed))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        // What a page needs to read of an error: why its token failed, when to try again.
        .expose_headers([header::WWW_AUTHENTICATE, header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}
