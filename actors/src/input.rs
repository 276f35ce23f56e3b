//! Validated inputs: usernames and PIN hashes, checked once at the edge of the domain.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// A username as given, and the key it is matched by (NFKC, then lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    display: String,
    key: String,
}

impl Username {
    /// Checks the contract's username rules.
    ///
    /// # Errors
    ///
    /// [`Error::BadUsername`] naming the rule broken.
    pub fn parse(raw: &str) -> Result<Self> {
        let nfkc: String = raw.nfkc().collect();
        let len = nfkc.chars().count();
        if len == 0 {
            return Err(Error::BadUsername("it is empty"));
        }
        if len > 128 {
            return Err(Error::BadUsername("it is longer than 128 characters"));
        }
        if nfkc.starts_with(char::is_whitespace) || nfkc.ends_with(char::is_whitespace) {
            return Err(Error::BadUsername("it has leading or trailing space"));
        }
        if nfkc.chars().any(is_forbidden) {
            return Err(Error::BadUsername(
                "it contains control or invisible characters",
            ));
        }
        let key = nfkc.to_lowercase().nfkc().collect();
        Ok(Self {
            display: raw.to_owned(),
            key,
        })
    }

    /// As first given.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The matching key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn is_forbidden(c: char) -> bool {
    // Letters and symbols that render as nothing: fillers, the braille blank, selectors.
    let blank = matches!(
        c,
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}' | '\u{034F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{E0100}'..='\u{E01EF}'
    );
    blank
        || matches!(
            get_general_category(c),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::Unassigned
                | GeneralCategory::Surrogate
                | GeneralCategory::PrivateUse
        )
}

/// The client's PIN hash: Base64 of a SHA-512 digest (64 bytes, 88 characters).
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPin(Vec<u8>);

impl std::fmt::Debug for HashedPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashedPin([redacted])")
    }
}

impl HashedPin {
    /// Decodes and checks the length.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for anything but Base64 of 64 bytes.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = Error::InvalidField {
            field: "hashedPin",
            reason: "must be Base64 of a 64-byte SHA-512 digest",
        };
        if raw.len() != 88 {
            return Err(bad);
        }
        let bytes = STANDARD.decode(raw).map_err(|_| bad)?;
        if bytes.len() != 64 {
            return Err(Error::InvalidField {
                field: "hashedPin",
                reason: "must be Base64 of a 64-byte SHA-512 digest",
            });
        }
        Ok(Self(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A one-time token as typed by a person: digits only, 4 to 12 of them.
///
/// # Errors
///
/// [`Error::InvalidField`] otherwise.
pub fn parse_code(field: &'static str, raw: &str) -> Result<String> {
    if (4..=12).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_owned())
    } else {
        Err(Error::InvalidField {
            field,
            reason: "must be 4 to 12 digits",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_compatibility_forms_are_one_username() {
        let a = Username::parse("Alice").unwrap();
        assert_eq!(a.key(), Username::parse("alice").unwrap().key());
        assert_eq!(a.key(), Username::parse("ALICE").unwrap().key());
        assert_eq!(a.key(), Username::parse("\u{FF21}lice").unwrap().key());
        assert_eq!(a.display(), "Alice");
    }

    #[test]
    fn usernames_with_hidden_or_control_characters_are_refused() {
        for bad in [
            "",
            " bob",
            "bob ",
            "b\u{0}ob",
            "b\u{200B}ob",
            "b\nob",
            "b\u{2028}ob",
            "\u{3164}",
            "b\u{FE0F}",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Username::parse(&"x".repeat(129)).is_err());
        assert!(Username::parse("someone@example.com").is_ok());
    }

    #[test]
    fn hashed_pin_must_be_base64_of_64_bytes() {
        assert!(HashedPin::parse(&"!".repeat(88)).is_err());
        assert!(HashedPin::parse(&STANDARD.encode([7u8; 64])).is_ok());
        assert!(HashedPin::parse(&STANDARD.encode([7u8; 32])).is_err());
    }
}
