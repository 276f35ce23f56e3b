//! The atomic unit of change.

use crate::{Record, Result, Space};

/// One write inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or overwrite a key.
    Put {
        /// Where.
        space: Space,
        /// The key.
        key: Vec<u8>,
        /// The encoded value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// Where.
        space: Space,
        /// The key.
        key: Vec<u8>,
    },
}

/// Writes that land together or not at all: a record and its index entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an encoded record.
    ///
    /// # Errors
    ///
    /// Returns the codec error if the record cannot be encoded.
    pub fn put<R: Record>(
        &mut self,
        space: Space,
        key: impl Into<Vec<u8>>,
        record: &R,
    ) -> Result<()> {
        let value = record.encode()?;
        self.ops.push(Op::Put {
            space,
            key: key.into(),
            value,
        });
        Ok(())
    }

    /// Adds a raw value (index entries).
    pub fn put_raw(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            space,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a removal.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            space,
            key: key.into(),
        });
    }

    /// Whether the batch has no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Takes the writes out.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}
