//! Signing keys of one application: issue and verify access tokens.
//!
//! Keys are parsed once and kept: re-parsing a PKCS#8 key on every signature cost about 40%
//! of a login in the design spike, which is why signing calls aws-lc-rs directly instead of
//! `jsonwebtoken::encode` (which parses the key per call). Verification goes through
//! `jsonwebtoken` with the algorithm pinned to the key named by `kid`.

use std::sync::Arc;

use aws_lc_rs::{
    encoding::{AsBigEndian, AsDer, EcPublicKeyUncompressedBin},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use base64::{
    Engine as _, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey_storage::records::KeyRecord;
use openidconnect::{
    JsonWebKeyId, PrivateSigningKey, SigningError,
    core::{CoreJsonCurveType, CoreJsonWebKey, CoreJwsSigningAlgorithm},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Error, JwtAlgorithm, Result};

/// Claims of a Latchkey access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience: the applicationUuid.
    pub aud: String,
    /// Subject: the userUuid.
    pub sub: String,
    /// The userUuid, as the original names it.
    #[serde(rename = "userUUID")]
    pub user_uuid: Uuid,
    /// The applicationUuid, as the original names it.
    #[serde(rename = "applicationUUID")]
    pub application_uuid: Uuid,
    /// The device.
    #[serde(rename = "deviceUUID")]
    pub device_uuid: Uuid,
    /// The device's login session; logout revokes it.
    pub sid: Uuid,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expiry.
    pub exp: u64,
    /// Token id.
    pub jti: Uuid,
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// One parsed signing key.
pub struct SigningKey {
    /// The `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: JwtAlgorithm,
    signer: Signer,
    decoding: DecodingKey,
    header_b64: String,
    public_pem: String,
    jwk: Value,
    core_jwk: CoreJsonWebKey,
    /// When a rotation retired it (it still verifies until its tokens have expired).
    pub retired: Option<u64>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl SigningKey {
    /// Generates a new key; the record holds its PKCS#8 form for storage.
    ///
    /// # Errors
    ///
    /// Fails only if the crypto library does.
    pub fn generate(app: Uuid, alg: JwtAlgorithm, now: u64) -> Result<KeyRecord> {
        let rng = SystemRandom::new();
        let fail = |_| Error::Internal("key generation failed".into());
        let pkcs8 = match alg {
            JwtAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(fail)?
                    .as_ref()
                    .to_vec()
            }
            JwtAlgorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                    .map_err(fail)?
                    .as_ref()
                    .to_vec()
            }
            JwtAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            JwtAlgorithm::RS256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(fail)?;
                AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                    .map_err(fail)?
                    .as_ref()
                    .to_vec()
            }
        };
        let kid = URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<12>()?);
        Ok(KeyRecord {
            app,
            kid,
            alg: alg.name().into(),
            pkcs8,
            created: now,
            current: true,
            retired: None,
        })
    }

    /// Parses a stored key.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a corrupt record.
    pub fn from_record(record: &KeyRecord) -> Result<Self> {
        let alg = JwtAlgorithm::from_name(&record.alg)
            .ok_or_else(|| Error::Internal("stored key has an unknown algorithm".into()))?;
        fn bad<E>(_: E) -> Error {
            Error::Internal("stored signing key does not parse".into())
        }
        let kid = Some(JsonWebKeyId::new(record.kid.clone()));
        let (signer, spki, jwk, core_jwk) = match alg {
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => {
                let (sig_alg, crv) = if alg == JwtAlgorithm::ES256 {
                    (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
                } else {
                    (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
                };
                let pair = EcdsaKeyPair::from_pkcs8(sig_alg, &record.pkcs8).map_err(bad)?;
                let spki = pair.public_key().as_der().map_err(bad)?.as_ref().to_vec();
                let point: EcPublicKeyUncompressedBin =
                    pair.public_key().as_be_bytes().map_err(bad)?;
                let coords = point.as_ref().get(1..).unwrap_or_default();
                let (x, y) = coords.split_at(coords.len() / 2);
                let jwk = json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(x),
                                 "y": URL_SAFE_NO_PAD.encode(y)});
                let core_crv = if alg == JwtAlgorithm::ES256 {
                    CoreJsonCurveType::P256
                } else {
                    CoreJsonCurveType::P384
                };
                let core = CoreJsonWebKey::new_ec(x.to_vec(), y.to_vec(), core_crv, kid.clone());
                (Signer::Ecdsa(pair), spki, jwk, core)
            }
            JwtAlgorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(&record.pkcs8).map_err(bad)?;
                let spki = pair.public_key().as_der().map_err(bad)?.as_ref().to_vec();
                let x = pair.public_key().as_ref().to_vec();
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&x)});
                let core = CoreJsonWebKey::new_okp(x, CoreJsonCurveType::Ed25519, kid.clone());
                (Signer::Ed(pair), spki, jwk, core)
            }
            JwtAlgorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(&record.pkcs8).map_err(bad)?;
                let public = pair.public_key();
                let spki = public.as_der().map_err(bad)?.as_ref().to_vec();
                let n = public.modulus().big_endian_without_leading_zero().to_vec();
                let e = public.exponent().big_endian_without_leading_zero().to_vec();
                let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n),
                                 "e": URL_SAFE_NO_PAD.encode(&e)});
                let core = CoreJsonWebKey::new_rsa(n, e, kid.clone());
                (Signer::Rsa(pair), spki, jwk, core)
            }
        };

        let mut jwk = jwk;
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), json!(record.kid));
            obj.insert("alg".into(), json!(alg.name()));
            obj.insert("use".into(), json!("sig"));
        }
        let decoding = match alg {
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => {
                DecodingKey::from_ec_pem(pem("PUBLIC KEY", &spki).as_bytes())
            }
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem("PUBLIC KEY", &spki).as_bytes()),
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem("PUBLIC KEY", &spki).as_bytes()),
        }
        .map_err(|_| Error::Internal("public key does not parse".into()))?;
        let header = json!({"alg": alg.name(), "typ": "JWT", "kid": record.kid});

        Ok(Self {
            kid: record.kid.clone(),
            alg,
            signer,
            decoding,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            public_pem: pem("PUBLIC KEY", &spki),
            jwk,
            core_jwk,
            retired: record.retired,
        })
    }

    /// Signs claims into a compact JWS.
    ///
    /// # Errors
    ///
    /// Fails only if the crypto library does.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String> {
        let payload = serde_json::to_vec(claims).map_err(Error::internal)?;
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 120);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);

        let signature = self.sign_raw(out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }

    /// The JWS signature of `message` with this key's algorithm.
    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>> {
        let fail = |_| Error::Internal("signing failed".into());
        Ok(match &self.signer {
            Signer::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
                    .map_err(fail)?;
                sig
            }
        })
    }

    /// The JOSE algorithm as openidconnect names it.
    pub fn core_alg(&self) -> CoreJwsSigningAlgorithm {
        match self.alg {
            JwtAlgorithm::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            JwtAlgorithm::ES384 => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            JwtAlgorithm::EdDSA => CoreJwsSigningAlgorithm::EdDsa,
            JwtAlgorithm::RS256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        }
    }

    /// The public key as openidconnect's JWK type.
    pub fn core_jwk(&self) -> &CoreJsonWebKey {
        &self.core_jwk
    }

    /// SPKI PEM of the public key.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The public key as an RFC 7517 JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    fn jose_alg(&self) -> Algorithm {
        match self.alg {
            JwtAlgorithm::ES256 => Algorithm::ES256,
            JwtAlgorithm::ES384 => Algorithm::ES384,
            JwtAlgorithm::EdDSA => Algorithm::EdDSA,
            JwtAlgorithm::RS256 => Algorithm::RS256,
        }
    }
}

/// ID tokens are built by openidconnect and signed here, on the same aws-lc-rs key pair the
/// access tokens use (openidconnect's own RSA key type signs with the `rsa` crate, which has
/// a timing side-channel advisory).
impl PrivateSigningKey for SigningKey {
    type VerificationKey = CoreJsonWebKey;

    fn sign(
        &self,
        signature_alg: &CoreJwsSigningAlgorithm,
        message: &[u8],
    ) -> std::result::Result<Vec<u8>, SigningError> {
        if *signature_alg != self.core_alg() {
            return Err(SigningError::UnsupportedAlg(format!("{signature_alg:?}")));
        }
        self.sign_raw(message)
            .map_err(|_| SigningError::Other("signing failed".into()))
    }

    fn as_verification_key(&self) -> CoreJsonWebKey {
        self.core_jwk.clone()
    }
}

/// The keys of one application: the current ones sign (one for access tokens, one for ID
/// tokens, the same key when both use one algorithm), all of them verify.
#[derive(Debug, Clone)]
pub struct KeyRing {
    app: Uuid,
    current: Arc<SigningKey>,
    id_token: Arc<SigningKey>,
    all: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    /// Builds the ring from parsed keys; `current` and `id_token` must be among `all`.
    pub fn new(
        app: Uuid,
        current: Arc<SigningKey>,
        id_token: Arc<SigningKey>,
        all: Vec<Arc<SigningKey>>,
    ) -> Self {
        Self {
            app,
            current,
            id_token,
            all,
        }
    }

    /// The key new access tokens are signed with.
    pub fn current(&self) -> &Arc<SigningKey> {
        &self.current
    }

    /// The key new ID tokens are signed with (RS256, OIDC's mandatory algorithm).
    pub fn id_token_key(&self) -> &Arc<SigningKey> {
        &self.id_token
    }

    /// The keys a relying party may still need: current ones, and retired ones until
    /// `keep_secs` after their retirement (the longest lifetime of a token they signed).
    pub fn published(&self, now: u64, keep_secs: u64) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.all.iter().filter(move |k| {
            k.retired
                .is_none_or(|at| at.saturating_add(keep_secs) > now)
        })
    }

    /// Every key that still verifies.
    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.all
    }

    /// The RFC 7517 set of every verifying key.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.all.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()})
    }

    /// Checks signature, algorithm, audience and times; not revocation, which needs the user.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJwt`] or [`Error::ExpiredJwt`].
    pub fn verify(&self, key: &SigningKey, token: &str, now: u64) -> Result<AccessClaims> {
        let mut validation = Validation::new(key.jose_alg());
        validation.set_audience(&[self.app.to_string()]);
        validation.required_spec_claims.clear();
        validation.validate_exp = false; // checked below against the engine's clock
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|_| Error::InvalidJwt)?
            .claims;

        if claims.application_uuid != self.app {
            return Err(Error::InvalidJwt);
        }
        if claims.nbf > now {
            return Err(Error::InvalidJwt);
        }
        if claims.exp <= now {
            return Err(Error::ExpiredJwt);
        }
        Ok(claims)
    }

    /// Checks signature and algorithm (pinned to `key`) and audience of a token with other
    /// claims; times are the caller's to check.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJwt`].
    pub fn decode<C: DeserializeOwned>(
        &self,
        key: &SigningKey,
        token: &str,
        audience: &str,
    ) -> Result<C> {
        let mut validation = Validation::new(key.jose_alg());
        validation.set_audience(&[audience]);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        jsonwebtoken::decode::<C>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| Error::InvalidJwt)
    }
}

/// Finds the `kid` of a compact JWS without trusting anything else in it.
pub(crate) fn kid_of(token: &str) -> Result<String> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidJwt)?;
    header.kid.ok_or(Error::InvalidJwt)
}

/// PEM armour with 64-column lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(app: Uuid, now: u64) -> AccessClaims {
        let u = Uuid::new_v4();
        AccessClaims {
            iss: "test".into(),
            aud: app.to_string(),
            sub: u.to_string(),
            user_uuid: u,
            application_uuid: app,
            device_uuid: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            iat: now,
            nbf: now,
            exp: now + 60,
            jti: Uuid::new_v4(),
        }
    }

    #[test]
    fn every_algorithm_signs_and_verifies() {
        let app = Uuid::new_v4();
        for alg in [
            JwtAlgorithm::ES256,
            JwtAlgorithm::ES384,
            JwtAlgorithm::EdDSA,
            JwtAlgorithm::RS256,
        ] {
            let rec = SigningKey::generate(app, alg, 1000).unwrap();
            let key = Arc::new(SigningKey::from_record(&rec).unwrap());
            let ring = KeyRing::new(app, key.clone(), key.clone(), vec![key.clone()]);
            let token = key.sign(&claims(app, 1000)).unwrap();
            assert_eq!(kid_of(&token).unwrap(), key.kid);
            assert!(ring.verify(&key, &token, 1001).is_ok(), "{alg:?}");
            assert!(matches!(
                ring.verify(&key, &token, 1060),
                Err(Error::ExpiredJwt)
            ));
            assert!(matches!(
                ring.verify(&key, &token, 999),
                Err(Error::InvalidJwt)
            ));
        }
    }
}
