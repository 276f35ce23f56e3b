//! Black-box tests over real TCP against a server on a fresh fjall data directory.
//!
//! One test binary (see STYLE.md): this file only declares the modules; `helpers` has the
//! harness that every module uses.

// Tests fail loudly: a panic is the failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit;
mod authorization;
mod bad_input;
mod crash;
mod delivery;
mod devices;
mod enumeration;
mod flow;
mod hardening;
mod iam;
mod jwt;
mod lockout;
mod node_clients;
mod oidc_clients;
mod oidc_codes;
mod oidc_cors;
mod oidc_flow;
mod oidc_keys;
mod oidc_login_page;
mod oidc_redirects;
mod oidc_sessions;
mod otp;
mod rate_limits;
mod restart;
mod secrets_in_logs;
mod slow_clients;
mod supervision;
mod usernames;

// Not every test module uses every helper.
#[allow(dead_code)]
mod helpers;
// The OpenID Connect harness; not every `oidc_*` module uses every part of it.
#[allow(dead_code)]
mod oidc;
// Not every test module uses every receiver.
#[allow(dead_code)]
mod receivers;
