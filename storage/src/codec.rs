//! Versioned record encoding: one schema-version byte, then JSON.
//!
//! JSON keeps records readable in a debugger and cheap enough for records of a few hundred
//! bytes; the version byte lets a later build read every format an earlier one wrote.

use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// A stored record kind.
pub trait Record: Serialize + DeserializeOwned {
    /// A short name for errors and logs.
    const KIND: &'static str;
    /// The schema version this build writes.
    const VERSION: u8;

    /// Encodes the record with its version byte.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Codec`] if serde fails, which a derived impl never does.
    fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![Self::VERSION];
        serde_json::to_writer(&mut out, self).map_err(|source| Error::Codec {
            kind: Self::KIND,
            action: "encoded",
            source,
        })?;
        Ok(out)
    }

    /// Decodes a record written by this or an earlier build.
    ///
    /// # Errors
    ///
    /// Returns [`Error::UnknownVersion`] for a newer or unknown version byte, and
    /// [`Error::Codec`] for a corrupt body.
    fn decode(bytes: &[u8]) -> Result<Self> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(Error::UnknownVersion {
                kind: Self::KIND,
                version: 0,
            });
        };
        if version != Self::VERSION {
            return Err(Error::UnknownVersion {
                kind: Self::KIND,
                version,
            });
        }
        serde_json::from_slice(body).map_err(|source| Error::Codec {
            kind: Self::KIND,
            action: "decoded",
            source,
        })
    }
}
