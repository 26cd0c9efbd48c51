//! Costs on the order path: inspecting a factory answer (target < 2 us),
//! masking its link, and verifying a pizza JWT with the key already held:
//! a token not seen before (what every order of the real factory costs,
//! which signs every pizza anew), beside the floor (the bare RSA check
//! with a prepared key) and a generic JWT library's path for reference; a
//! hit in the verified-token cache; and the shortcut the order path takes
//! for the usual answer with a known token.
//!
//! `cargo bench --bench inspect`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use factory_sidecar::boxed::BoxError;
use factory_sidecar::chaos::jwt::{JwksCache, KeySet, RECENT_VALID, Verdict};
use factory_sidecar::chaos::side::{SideChannel, SideService};
#[path = "../src/chaos/testkit.rs"]
#[allow(dead_code)]
mod testkit;
use factory_sidecar::chaos::{inspect, mask_link, redact};
use factory_sidecar::proxy::body::ProxyBody;
use http::Response;
use testkit::{TestKey, jwks, pizza_claims};

const LINK: &str = "https://pizza-factory.cs329.click/api/support/feedfacecafebeef0123456789abc0de/report/fx7k2q9z";

fn answers(key: &TestKey) -> (Bytes, Bytes, String) {
    let fail = serde_json::json!({"message": "chaos monkey", "reportUrl": LINK}).to_string();
    let jwt = key.sign(&pizza_claims()).expect("sign");
    let ok = serde_json::json!({ "jwt": jwt }).to_string();
    (Bytes::from(fail), Bytes::from(ok), jwt)
}

fn bench(c: &mut Criterion) {
    let key = TestKey::generate("bench-key").expect("rsa key");
    let (fail, ok, jwt) = answers(&key);
    let throttle = Bytes::from(serde_json::json!({"jwt": jwt, "reportUrl": LINK}).to_string());

    c.bench_function("inspect/fail answer", |b| {
        b.iter(|| inspect(black_box(&fail)).map(|i| i.report_link()))
    });
    c.bench_function("inspect/success answer", |b| {
        b.iter(|| inspect(black_box(&ok)).map(|i| i.jwt().map(str::len)))
    });
    c.bench_function("inspect/throttle answer", |b| {
        b.iter(|| inspect(black_box(&throttle)).map(|i| i.has_link()))
    });
    c.bench_function("mask/mask_link", |b| b.iter(|| mask_link(black_box(LINK))));
    c.bench_function("mask/redact fail answer", |b| {
        b.iter(|| redact(black_box(&fail)))
    });
    c.bench_function("mask/redact throttle answer", |b| {
        b.iter(|| redact(black_box(&throttle)))
    });

    let set = KeySet::from_jwks(jwks(&[&key]).as_bytes()).expect("jwks");
    c.bench_function("jwt/verify RS256 with the key held", |b| {
        b.iter(|| set.verify(black_box(jwt.as_bytes())))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = jwks(&[&key]);
    let side = Arc::new(SideChannel::new(Duration::from_secs(1)));
    side.attach(SideService::new(tower::service_fn(
        move |_req: factory_sidecar::proxy::Outgoing| {
            let body = body.clone();
            async move { Ok::<_, BoxError>(Response::new(ProxyBody::full(body))) }
        },
    )));
    let cache = JwksCache::new(side, Duration::from_secs(10));
    rt.block_on(cache.verify(jwt.as_bytes()));
    fresh_tokens(c, &key, &cache);
    c.bench_function(
        "jwt/verify a token seen before (cache hit, incl. block_on)",
        |b| b.iter(|| rt.block_on(cache.verify(black_box(jwt.as_bytes())))),
    );
    // What the order path does first with a healthy answer: the shape, then
    // the token against the last verified ones (no scan, no signature).
    c.bench_function("order/usual answer with a token verified lately", |b| {
        b.iter(|| {
            factory_sidecar::chaos::inspect::healthy_shape(black_box(&ok))
                .is_some_and(|t| cache.is_known_valid(t))
        })
    });
}

/// A token not seen before, as with the real factory: more distinct tokens
/// than the verifier remembers, in turn, through the order path's check
/// (remembered tokens first, then the keys held); beside it the floor, the
/// RSA check alone with a prepared key over the same bytes, and a generic
/// JWT library that rebuilds the key for every token.
fn fresh_tokens(c: &mut Criterion, key: &TestKey, cache: &JwksCache) {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    let tokens: Vec<String> = (0..4 * RECENT_VALID)
        .map(|i| {
            let mut claims = pizza_claims();
            claims["order"]["id"] = serde_json::json!(i);
            key.sign(&claims).expect("sign")
        })
        .collect();
    let mut turn = tokens.iter().cycle();
    c.bench_function("jwt/verify a token not seen before (order path)", |b| {
        b.iter(|| {
            let token = turn.next().expect("cycle");
            assert_eq!(
                cache.verify_now(black_box(token.as_bytes())),
                Some(Verdict::Valid)
            );
        })
    });

    let jwk = key.jwk();
    let part = |name: &str| B64.decode(jwk[name].as_str().expect("n, e")).expect("b64");
    let floor = RsaPublicKeyComponents {
        n: part("n"),
        e: part("e"),
    }
    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
    .expect("key");
    let token = &tokens[0];
    let cut = token.rfind('.').expect("a dot");
    let sig = B64.decode(&token[cut + 1..]).expect("b64");
    c.bench_function("jwt/floor: RSA check alone, prepared key", |b| {
        b.iter(|| floor.verify_sig(black_box(&token.as_bytes()[..cut]), black_box(&sig)))
    });

    let decoding =
        jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).expect("jwk"))
            .expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    c.bench_function("jwt/reference: jsonwebtoken::decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde::de::IgnoredAny>(black_box(token), &decoding, &validation)
                .is_ok()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
