//! What every actor of an engine shares: the store, the hash keys, the clock, the
//! applications, the audit log.

use std::sync::Arc;

use latchkey_storage::Store;

use crate::{Clock, apps::Apps, audit::Audit, crypto::Secrets};

/// Shared, immutable handles; cloned into every actor as an `Arc`.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) secrets: Secrets,
    pub(crate) clock: Clock,
    pub(crate) apps: Apps,
    pub(crate) audit: Audit,
}
