//! Keyed hashes, constant-time comparison and random secrets.
//!
//! Every secret the server only verifies (hashedPin, authKey, one-time tokens, API keys) is
//! stored as HMAC-SHA-256 under a server key, so a stolen data directory without the key
//! yields nothing to replay, and is compared with `subtle` so timing reveals nothing.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// What a keyed hash is of; part of the MAC input, so a hash of one kind never matches
/// another kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Pin,
    AuthKey,
    Token,
    ApiKey,
    ClientSecret,
    OidcCode,
    RefreshToken,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Pin => b"pin\0",
            Purpose::AuthKey => b"authkey\0",
            Purpose::Token => b"token\0",
            Purpose::ApiKey => b"apikey\0",
            Purpose::ClientSecret => b"client-secret\0",
            Purpose::OidcCode => b"oidc-code\0",
            Purpose::RefreshToken => b"refresh-token\0",
        }
    }
}

/// The server's hash keys.
#[derive(Clone)]
pub struct Secrets {
    credential: HmacSha256,
    api_key: HmacSha256,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

impl Secrets {
    /// Builds the hashers from raw keys.
    ///
    /// # Errors
    ///
    /// Fails only for keys HMAC refuses, which no length does.
    pub fn new(credential_key: &[u8], api_key_key: &[u8]) -> Result<Self> {
        let mk = |k: &[u8]| HmacSha256::new_from_slice(k).map_err(Error::internal);
        Ok(Self {
            credential: mk(credential_key)?,
            api_key: mk(api_key_key)?,
        })
    }

    pub(crate) fn hash(&self, purpose: Purpose, value: &[u8]) -> Vec<u8> {
        let mut mac = match purpose {
            Purpose::ApiKey | Purpose::ClientSecret => self.api_key.clone(),
            _ => self.credential.clone(),
        };
        mac.update(purpose.label());
        mac.update(value);
        mac.finalize().into_bytes().to_vec()
    }

    /// Hashes `value` and compares it with `stored` in constant time. A missing stored hash
    /// still costs the same hash, so absence is not visible in timing.
    pub(crate) fn verify(&self, purpose: Purpose, value: &[u8], stored: Option<&[u8]>) -> bool {
        let computed = self.hash(purpose, value);
        let decoy = [0u8; 32];
        let (against, present) = match stored {
            Some(s) => (s, true),
            None => (&decoy[..], false),
        };
        bool::from(computed.as_slice().ct_eq(against)) && present
    }
}

/// Whether two hashes are equal, in constant time.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// `n` bytes from the OS-seeded CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| Error::Internal("random source failed".into()))?;
    Ok(out)
}

/// A URL-safe secret of 64 random bytes, as authKeys are.
pub(crate) fn random_secret() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<64>()?))
}

/// A decimal code of `digits` digits, uniform (rejection sampling, no modulo bias).
pub(crate) fn random_code(digits: u32) -> Result<String> {
    let modulus = 10u64.pow(digits.clamp(4, 12));
    let limit = u64::MAX - u64::MAX % modulus;
    loop {
        let n = u64::from_le_bytes(random_bytes::<8>()?);
        if n < limit {
            return Ok(format!("{:0width$}", n % modulus, width = digits as usize));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_of_different_purposes_differ() {
        let s = Secrets::new(b"k1", b"k2").unwrap();
        assert_ne!(s.hash(Purpose::Pin, b"x"), s.hash(Purpose::AuthKey, b"x"));
        let stored = s.hash(Purpose::Pin, b"x");
        assert!(s.verify(Purpose::Pin, b"x", Some(&stored)));
        assert!(!s.verify(Purpose::Pin, b"y", Some(&stored)));
        assert!(!s.verify(Purpose::Pin, b"x", None));
    }

    #[test]
    fn codes_have_the_requested_digits() {
        for _ in 0..100 {
            let c = random_code(6).unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
