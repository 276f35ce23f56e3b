//! Latchkey: a self-hosted passwordless authentication server speaking the Authenticate v1.2
//! API.
//!
//! # Layout
//!
//! - [`Server`]: build from a [`Config`], serve on a listener you own, shut down gracefully;
//!   this is how an appliance embeds Latchkey, and how the tests run it.
//! - [`config`]: the TOML file and its defaults.
//! - [`audit`]: reading the audit log of a stopped server, as `latchkey audit tail` prints it.
//! - `http`: the façade: routes, extractors and the error envelope. It holds no business
//!   rules; those live in `latchkey-actors`, and storage in `latchkey-storage`.

pub mod audit;
pub mod config;
mod connections;
mod http;
mod server;

pub use config::Config;
pub use http::BASE;
pub use latchkey_actors::{Clock, Engine};
pub use server::{NewApplication, Running, Server, ServerError};
