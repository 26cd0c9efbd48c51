//! Costs on the order path: inspecting a factory answer (target < 2 us),
//! masking its link, and verifying a pizza JWT with the key already held
//! (a full RS256 check, and a hit in the verified-token cache), and the
//! shortcut the order path takes for the usual answer with a known token.
//!
//! `cargo bench --bench inspect`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use factory_sidecar::boxed::BoxError;
use factory_sidecar::chaos::jwt::{JwksCache, KeySet};
use factory_sidecar::chaos::side::{SideChannel, SideService};
use factory_sidecar::chaos::testkit::{TestKey, jwks, pizza_claims};
use factory_sidecar::chaos::{inspect, mask_link, redact};
use factory_sidecar::proxy::body::ProxyBody;
use http::Response;

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
        b.iter(|| set.verify(black_box(&jwt)))
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
    rt.block_on(cache.verify(&jwt));
    c.bench_function(
        "jwt/verify a token seen before (cache hit, incl. block_on)",
        |b| b.iter(|| rt.block_on(cache.verify(black_box(&jwt)))),
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
