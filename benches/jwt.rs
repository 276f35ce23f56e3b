//! The cost of one access-token signature (the largest CPU cost of a login) and one
//! verification, per algorithm. Run: `cargo bench --bench jwt`.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_actors::{AccessClaims, JwtAlgorithm, KeyRing, SigningKey};
use uuid::Uuid;

fn claims(app: Uuid) -> AccessClaims {
    let user = Uuid::new_v4();
    AccessClaims {
        iss: format!("http://127.0.0.1:8080/authenticate/v1-2/openid/{app}"),
        aud: app.to_string(),
        sub: user.to_string(),
        user_uuid: user,
        application_uuid: app,
        device_uuid: Uuid::new_v4(),
        sid: Uuid::new_v4(),
        iat: 1_800_000_000,
        nbf: 1_800_000_000,
        exp: 1_800_000_900,
        jti: Uuid::new_v4(),
    }
}

fn signatures(c: &mut Criterion) {
    let app = Uuid::new_v4();
    for alg in [
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::RS256,
    ] {
        let Ok(record) = SigningKey::generate(app, alg, 1_800_000_000) else {
            return;
        };
        let Ok(key) = SigningKey::from_record(&record) else {
            return;
        };
        let key = Arc::new(key);
        let ring = KeyRing::new(app, key.clone(), key.clone(), vec![key.clone()]);
        let claims = claims(app);

        c.bench_function(&format!("sign {}", alg.name()), |b| {
            b.iter(|| black_box(key.sign(black_box(&claims))))
        });
        let Ok(token) = key.sign(&claims) else { return };
        c.bench_function(&format!("verify {}", alg.name()), |b| {
            b.iter(|| black_box(ring.verify(&key, black_box(&token), 1_800_000_001)))
        });
    }
}

criterion_group!(benches, signatures);
criterion_main!(benches);
