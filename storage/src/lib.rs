//! Durable storage for Latchkey: record types, the keyspace layout, and the group-commit writer.
//!
//! # Layout
//!
//! - [`Space`]: one fjall keyspace per record kind, and how keys in each are built.
//! - [`records`]: the versioned records (applications, users, devices, sessions, signing keys,
//!   audit entries).
//! - [`Batch`]: the atomic unit of change: a record and its index entries, written together.
//! - [`Store`]: the trait the domain talks to, so that another backend can replace fjall.
//! - [`FjallStore`]: the embedded implementation, whose writer shares one fsync among many
//!   concurrent batches (group commit) and acknowledges none before it is on disk.
//!
//! Business rules do not belong here: this crate stores what it is given.

mod batch;
mod codec;
mod error;
mod fjall_store;
pub mod records;
mod space;
mod store;
mod writer;

pub use batch::{Batch, Op};
pub use codec::Record;
pub use error::{Error, Result};
pub use fjall_store::{Durability, FjallStore};
pub use space::{Space, pair_key, uuid_str_key};
pub use store::{Commit, Store, StoreExt, StoreStats};
