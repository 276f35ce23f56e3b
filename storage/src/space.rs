//! The keyspace layout: one fjall keyspace per record kind, and how their keys are built.

use uuid::Uuid;

/// A keyspace (partition) of the store, one per record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Server-wide records such as the keyed-hash secrets. Key: a name.
    Meta,
    /// Applications. Key: applicationUuid (16 bytes).
    Apps,
    /// Users. Key: userUuid (16 bytes).
    Users,
    /// Username index. Key: applicationUuid ‖ normalised username; value: userUuid.
    Usernames,
    /// Devices. Key: userUuid ‖ deviceUuid, so a user's devices are one prefix scan.
    Devices,
    /// Pending sessions (activation, reset-PIN, ...). Key: the session id string.
    Sessions,
    /// Signing keys. Key: applicationUuid ‖ kid.
    Keys,
    /// The audit log, append-only. Key: applicationUuid ‖ a time-ordered (v7) entry id, so an
    /// application's newest entries are the end of its prefix.
    Audit,
    /// Messages waiting for delivery. Key: the record's UUIDv7 (16 bytes), so a scan yields
    /// them in the order they were queued.
    Outbox,
    /// Registered OpenID Connect clients. Key: the client id string.
    Clients,
    /// OpenID Connect grants: authorization requests, codes and refresh-token families. Key:
    /// the grant id string (`request/…`, `code/…`, `family/…`).
    Grants,
}

impl Space {
    /// Every space, in a fixed order.
    ///
    /// IMPORTANT: new spaces go at the end, here and in the enum: the writer indexes its
    /// keyspace handles by position.
    pub const ALL: [Space; 11] = [
        Space::Meta,
        Space::Apps,
        Space::Users,
        Space::Usernames,
        Space::Devices,
        Space::Sessions,
        Space::Keys,
        Space::Audit,
        Space::Outbox,
        Space::Clients,
        Space::Grants,
    ];

    /// The fjall keyspace name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Apps => "apps",
            Space::Users => "users",
            Space::Usernames => "usernames",
            Space::Devices => "devices",
            Space::Sessions => "sessions",
            Space::Keys => "keys",
            Space::Audit => "audit",
            Space::Outbox => "outbox",
            Space::Clients => "clients",
            Space::Grants => "grants",
        }
    }

    /// Position in [`Space::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A key made of two UUIDs, for the compound keys above.
pub fn pair_key(a: Uuid, b: Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(a.as_bytes());
    key.extend_from_slice(b.as_bytes());
    key
}

/// A key made of a UUID and a string suffix.
pub fn uuid_str_key(a: Uuid, suffix: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + suffix.len());
    key.extend_from_slice(a.as_bytes());
    key.extend_from_slice(suffix.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_space_sits_at_its_index() {
        for (i, space) in Space::ALL.iter().enumerate() {
            assert_eq!(space.index(), i, "{space:?}");
        }
        assert_eq!(Space::Audit.index(), 7);
        assert_eq!(Space::Outbox.index(), 8);
    }
}
