//! End-to-end tests of the factory simulator over loopback HTTP: every row
//! of docs/factory.md, the `/sim/*` control endpoints and the
//! `factory-sidecar sim` command. The chaos types: `sim_chaos.rs`.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use factory_sidecar::sim::{self, ChaosKind, ChaosSpec};
use http::{Method, StatusCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use support::http::{Http, eventually, request};
use support::sim::{
    fast_options, keys, link_path, msg, order, pizza_validation, sample_order, set_chaos, start,
    start_with, stats, verify,
};

#[tokio::test]
async fn order_without_chaos_gets_a_jwt_that_verifies_against_the_jwks() {
    let sim = start().await;
    let http = Http::new();

    let reply = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let body = reply.json();
    assert_eq!(
        keys(&body),
        ["jwt"],
        "no chaos: no reportUrl, as the real factory"
    );
    let jwt = body["jwt"].as_str().expect("jwt string");

    // The JWKS, fetched over HTTP, verifies it with the jsonwebtoken crate.
    let jwks = http
        .get(&format!("{}/.well-known/jwks.json", sim.url()))
        .await
        .expect("jwks");
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.body, sim.jwks());
    let jwks_json = jwks.json();
    assert_eq!(keys(&jwks_json["keys"][0]), ["e", "kid", "kty", "n"]);
    let set: JwkSet = serde_json::from_slice(&jwks.body).expect("a JWK set");
    let header = jsonwebtoken::decode_header(jwt).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    assert_eq!(kid, sim.kid());
    let key = DecodingKey::from_jwk(set.find(&kid).expect("kid published")).expect("RSA key");
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &pizza_validation()).expect("verifies");
    let sent: Value = serde_json::from_str(sim::SAMPLE_ORDER).expect("sample");
    assert_eq!(data.claims["diner"], sent["diner"]);
    assert_eq!(data.claims["order"], sent["order"]);
    assert_eq!(keys(&data.claims["vendor"]), ["id", "name"]);

    // The real header shape: iat/exp/iss beside alg/kid; the payload has no exp,
    // so jsonwebtoken's default validation (exp required) refuses it.
    let raw_header: Value = serde_json::from_slice(
        &B64.decode(jwt.split('.').next().expect("header part"))
            .expect("b64"),
    )
    .expect("header JSON");
    assert_eq!(keys(&raw_header), ["alg", "exp", "iat", "iss", "kid"]);
    assert_eq!(raw_header["iss"], sim::ISSUER);
    let lifetime =
        raw_header["exp"].as_u64().expect("exp") - raw_header["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, sim::LIFETIME_SECS);
    let strict = jsonwebtoken::decode::<Value>(jwt, &key, &Validation::new(Algorithm::RS256));
    assert!(
        strict.is_err(),
        "a verifier that requires exp rejects every real pizza"
    );

    // And the factory's own verify endpoint agrees.
    let verify = verify(&http, &sim, jwt).await;
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.json()["message"], "valid");
    assert_eq!(verify.json()["payload"], data.claims);

    let s = stats(&http, &sim).await;
    assert_eq!(
        (s.orders, s.orders_ok, s.jwks_requests, s.requests),
        (1, 1, 1, 3)
    );
    assert_eq!(s.chaos, ChaosKind::None);
}

#[tokio::test]
async fn each_distinct_order_gets_its_own_pizza_and_repeats_stay_valid() {
    let sim = start().await;
    let http = Http::new();
    let other = sim::SAMPLE_ORDER.replace("\"id\":719", "\"id\":720");
    let verify = |jwt: String| {
        let http = http.clone();
        let url = format!("{}/api/order/verify", sim.url());
        async move {
            let r = http
                .post_json(&url, None, &json!({ "jwt": jwt }).to_string())
                .await
                .expect("verify");
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["payload"]["diner"]["id"]
                .as_i64()
                .expect("diner id")
        }
    };
    for _ in 0..3 {
        for (body, id) in [(sim::SAMPLE_ORDER, 719), (other.as_str(), 720)] {
            let r = order(&http, &sim, body).await.expect("answer");
            assert_eq!(r.status, StatusCode::OK);
            let jwt = r.json()["jwt"].as_str().expect("jwt").to_owned();
            assert_eq!(verify(jwt).await, id, "the cache never mixes bodies up");
        }
    }
    assert_eq!(stats(&http, &sim).await.orders_ok, 6);
}

#[tokio::test]
async fn a_token_pool_answers_each_order_with_the_next_of_n_valid_pizzas() {
    const POOL: usize = 4;
    let sim = start_with(fast_options().token_pool(POOL)).await;
    let http = Http::new();
    let mut jwts = Vec::new();
    for _ in 0..2 * POOL {
        let r = sample_order(&http, &sim).await.expect("answer");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(keys(&r.json()), ["jwt"], "the real factory's shape");
        jwts.push(r.json()["jwt"].as_str().expect("jwt").to_owned());
    }
    assert_eq!(jwts[..POOL], jwts[POOL..], "the pool, in turn");
    let distinct: std::collections::HashSet<&String> = jwts.iter().collect();
    assert_eq!(distinct.len(), POOL, "no two orders in a row share a token");
    for jwt in &jwts[..POOL] {
        assert!(sim.verify(jwt), "each pooled pizza verifies");
    }
    let other = sim::SAMPLE_ORDER.replace("\"id\":719", "\"id\":720");
    let r = order(&http, &sim, &other).await.expect("answer");
    let jwt = r.json()["jwt"].as_str().expect("jwt").to_owned();
    assert!(sim.verify(&jwt) && !distinct.contains(&jwt), "its own pool");
    assert!(
        sim::spawn(fast_options().token_pool(100_000))
            .await
            .is_err(),
        "a pool too large is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_on_the_cheap_path_all_get_valid_pizzas() {
    const CLIENTS: usize = 16;
    const EACH: usize = 25;
    let sim = start().await;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let http = Http::new();
        let url = format!("{}/api/order", sim.url());
        let key = sim.api_key().to_owned();
        tasks.spawn(async move {
            let mut jwts = Vec::with_capacity(EACH);
            for _ in 0..EACH {
                let r = http
                    .post_json(&url, Some(&key), sim::SAMPLE_ORDER)
                    .await
                    .expect("answer");
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                jwts.push(r.json()["jwt"].as_str().expect("jwt").to_owned());
            }
            jwts
        });
    }
    let mut jwts = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        jwts.extend(done.expect("client task"));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} orders in {elapsed:?} ({:.0}/s, debug build, for information only)",
        CLIENTS * EACH,
        (CLIENTS * EACH) as f64 / elapsed.as_secs_f64()
    );
    // One body: one distinct pizza per second of the run at most (the
    // signature cache), each of them valid.
    assert!(
        jwts.len() <= elapsed.as_secs() as usize + 2,
        "{} signatures",
        jwts.len()
    );
    let set: JwkSet = serde_json::from_slice(&sim.jwks()).expect("jwks");
    let key = DecodingKey::from_jwk(&set.keys[0]).expect("key");
    for jwt in &jwts {
        jsonwebtoken::decode::<Value>(jwt, &key, &pizza_validation()).expect("verifies");
    }
    let s = sim.stats();
    assert_eq!(
        (s.orders, s.orders_ok),
        ((CLIENTS * EACH) as u64, (CLIENTS * EACH) as u64)
    );
}

#[tokio::test]
async fn bad_or_missing_api_key_is_401() {
    let sim = start().await;
    let http = Http::new();
    let url = format!("{}/api/order", sim.url());
    for key in [None, Some("0123456789abcdef0123456789abcdef"), Some("")] {
        let r = http
            .post_json(&url, key, sim::SAMPLE_ORDER)
            .await
            .expect("answer");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json(), json!({ "message": "invalid authentication" }));
    }
    // The apiKey check comes before the body checks, as in the real route.
    let r = http.post_json(&url, None, "{}").await.expect("answer");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // `bearer` is matched case-insensitively.
    let mut req = request(
        Method::POST,
        &url,
        None,
        Some("application/json"),
        sim::SAMPLE_ORDER,
    )
    .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("bEaReR {}", sim.api_key()).parse().expect("header"),
    );
    assert_eq!(http.send(req).await.expect("answer").status, StatusCode::OK);
    assert_eq!(
        stats(&http, &sim).await.orders,
        5,
        "every POST counts as an order received"
    );
}

#[tokio::test]
async fn missing_diner_or_order_is_400() {
    let sim = start().await;
    let http = Http::new();
    for body in [
        r#"{"order":{"items":[{"menuId":1}]}}"#,
        r#"{"diner":{"id":1}}"#,
        r#"{"diner":null,"order":{"items":[1]}}"#,
        "{}",
        "",
    ] {
        let r = order(&http, &sim, body).await.expect("answer");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            r.json(),
            json!({ "message": "Missing required parameters" })
        );
    }
    // Like express.json(), a body that is not application/json is not read.
    let req = request(
        Method::POST,
        &format!("{}/api/order", sim.url()),
        Some(sim.api_key()),
        Some("text/plain"),
        sim::SAMPLE_ORDER,
    )
    .expect("request");
    let r = Http::new().send(req).await.expect("answer");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_json_is_500_as_the_real_error_handler_answers() {
    let sim = start().await;
    let http = Http::new();
    for body in ["{\"diner\":", "\"just a string\"", "nope"] {
        let r = order(&http, &sim, body).await.expect("answer");
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(keys(&r.json()), ["message"]);
    }
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200 * 1024));
    let r = order(&http, &sim, &big).await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(msg(&r), "request entity too large");
}

#[tokio::test]
async fn no_items_or_more_than_20_waits_then_the_oven_is_full() {
    let oven = Duration::from_millis(80);
    let sim = start_with(fast_options().oven_delay(oven)).await;
    let http = Http::new();
    let items = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({ "menuId": i, "description": "Veggie", "price": 0.0038 }))
            .collect();
        json!({ "diner": { "id": 1, "name": "d", "email": "d@jwt.com" },
                "order": { "franchiseId": 1, "storeId": 1, "items": items } })
        .to_string()
    };
    for n in [0, 21] {
        let started = tokio::time::Instant::now();
        let r = order(&http, &sim, &items(n)).await.expect("answer");
        assert!(
            started.elapsed() >= oven,
            "the oven-full answer waits first"
        );
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.json(),
            json!({ "message": "Unable to satisfy pizza order. The oven is full." }),
            "nothing else: no reportUrl"
        );
    }
    for n in [1, 20] {
        assert_eq!(
            order(&http, &sim, &items(n)).await.expect("answer").status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn verify_rejects_anything_it_did_not_sign() {
    let sim = start().await;
    let http = Http::new();
    let url = format!("{}/api/order/verify", sim.url());
    let good = sample_order(&http, &sim).await.expect("order").json()["jwt"]
        .as_str()
        .expect("jwt")
        .to_owned();
    let mut tampered: Vec<String> = good.split('.').map(str::to_owned).collect();
    tampered[1] = B64.encode(br#"{"vendor":{"id":"me"},"diner":{},"order":{}}"#);
    for body in [
        json!({ "jwt": tampered.join(".") }).to_string(),
        json!({ "jwt": "not.a.jwt" }).to_string(),
        json!({ "jwt": 42 }).to_string(),
        "{}".to_owned(),
    ] {
        let r = http.post_json(&url, None, &body).await.expect("answer");
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(r.json(), json!({ "message": "invalid" }));
    }
}

#[tokio::test]
async fn docs_and_unknown_endpoints() {
    let sim = start().await;
    let http = Http::new();
    let docs = http
        .get(&format!("{}/api/docs", sim.url()))
        .await
        .expect("docs");
    assert_eq!(docs.status, StatusCode::OK);
    assert_eq!(docs.json()["message"], "welcome to JWT Pizza Factory");
    let paths: Vec<&str> = docs.json()["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .map(|p| match p {
            "/api/order" => "order",
            "/api/order/verify" => "verify",
            "/.well-known/jwks.json" => "jwks",
            _ if p.starts_with("/api/support/") => "support",
            _ => "other",
        })
        .collect();
    assert_eq!(paths, ["order", "verify", "jwks", "support"]);
    for path in ["/", "/nope", "/api/order", "/api/support", "/sim/nope"] {
        let r = http
            .get(&format!("{}{path}", sim.url()))
            .await
            .expect("answer");
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json(), json!({ "message": "unknown endpoint" }));
    }
}

#[tokio::test]
async fn connections_counts_tcp_connections_and_requests_skip_control() {
    let sim = start().await;
    let pooled = Http::new();
    let fresh = Http::fresh_connections();
    for _ in 0..3 {
        sample_order(&fresh, &sim).await.expect("answer");
    }
    assert_eq!(sim.stats().connections, 3);
    for _ in 0..5 {
        stats(&pooled, &sim).await;
    }
    let s = sim.stats();
    assert_eq!(
        s.connections, 4,
        "keep-alive: one connection for all the stats GETs"
    );
    assert_eq!(s.requests, 3, "/sim/* requests are not counted");
    let body = pooled
        .get(&format!("{}/sim/stats", sim.url()))
        .await
        .expect("stats")
        .json();
    assert_eq!(
        keys(&body),
        [
            "chaos",
            "connections",
            "dropped",
            "held",
            "jwksRequests",
            "orders",
            "ordersOk",
            "requests",
            "resolves",
            "supportRequests"
        ]
    );
}

#[tokio::test]
async fn control_endpoints_and_the_handle_share_one_state() {
    let sim = start().await;
    let http = Http::new();
    let url = format!("{}/sim/chaos", sim.url());
    assert_eq!(
        http.get(&url).await.expect("status").json(),
        json!({ "type": "none", "episode": 0 })
    );
    sim.set_chaos(ChaosSpec::throttle().delay(Duration::from_secs(2)).count(4));
    assert_eq!(
        http.get(&url).await.expect("status").json(),
        json!({ "type": "throttle", "remaining": 4, "delay": "2s", "episode": 1 })
    );
    set_chaos(&http, &sim, r#"{"type":"badjwt"}"#).await;
    assert_eq!(sim.chaos().kind, ChaosKind::BadJwt);
    assert_eq!(sim.stats().chaos, ChaosKind::BadJwt);

    for bad in [
        r#"{"type":"explode"}"#,
        r#"{"type":"fail","count":0}"#,
        "{",
        r#"{"type":"fail","extra":1}"#,
    ] {
        let r = set_chaos(&http, &sim, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(keys(&r.json()), ["message"]);
    }
    assert_eq!(
        sim.chaos().kind,
        ChaosKind::BadJwt,
        "a refused change changes nothing"
    );
    let delete = http
        .send(request(Method::DELETE, &url, None, None, "").expect("request"))
        .await
        .expect("answer");
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_leaked_api_key_can_start_chaos_through_the_vendor_route() {
    let sim = start().await;
    let http = Http::new();
    let url = |t: &str| format!("{}/api/vendor/chaos/{t}", sim.url());
    let put = |t: &str, key: Option<&str>| {
        let mut req = request(Method::PUT, &url(t), key, None, "").expect("request");
        *req.method_mut() = Method::PUT;
        http.send(req)
    };
    let r = put("fail", None).await.expect("answer");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = put("down", Some(sim.api_key())).await.expect("answer");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(msg(&r), "Invalid chaos type");
    let r = put("fail", Some(sim.api_key())).await.expect("answer");
    assert_eq!(r.json(), json!({ "message": "Chaos initiated" }));
    assert_eq!(sim.chaos().kind, ChaosKind::Fail);
}

#[tokio::test]
async fn h2c_clients_are_served_too() {
    let sim = start_with(fast_options().chaos(ChaosSpec::fail().count(1))).await;
    let http = Http::h2c();
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let link = r.json()["reportUrl"].as_str().expect("link").to_owned();
    assert!(
        link.starts_with("https://127.0.0.1/api/support/"),
        "host from :authority: {link}"
    );
    let r = sample_order(&http, &sim).await.expect("answer");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sim.stats().connections, 1, "one h2 connection carries both");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let sim = start().await;
    let addr = sim.addr();
    sim.shutdown().await;
    let refused = eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "nothing listens after shutdown");
}

#[test]
fn sim_help_lists_the_spec_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
        .args(["sim", "--help"])
        .output()
        .expect("run the binary");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--chaos",
        "--throttle-delay",
        "--api-key",
        "--public-url",
        "--oven-delay",
        "--token-pool",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "no spaces allowed",
        ])
        .output()
        .expect("run the binary");
    assert_eq!(bad.status.code(), Some(1), "bad options exit 1");
}

/// Kills the child simulator (by its own id) if a test fails midway.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn sim_command_prints_its_address_serves_and_exits_cleanly_on_sigterm() {
    use std::io::{BufRead as _, BufReader, Read as _};
    let key = "a11ce0000000000000000000000b0b42";
    let mut child = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_factory-sidecar"))
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--chaos",
                "fail",
                "--api-key",
                key,
            ])
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the simulator"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    // Blocking read off the runtime; it returns as soon as the line is out
    // (or at EOF if the process dies, which the assertion below reports).
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("reader thread")
    .expect("read stdout");
    let url = line
        .trim()
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("the parseable line, got {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = Http::new();
    let r = http
        .post_json(&format!("{url}/api/order"), Some(key), sim::SAMPLE_ORDER)
        .await
        .expect("answer");
    assert_eq!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "--chaos fail from the start"
    );
    let link = r.json()["reportUrl"].as_str().expect("link").to_owned();
    let resolved = http
        .get(&format!("{url}{}", link_path(&link)))
        .await
        .expect("resolve");
    assert_eq!(resolved.status, StatusCode::OK);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let mut logs = String::new();
        // stderr reaches EOF when the process exits.
        let _ = stderr.read_to_string(&mut logs);
        (child.0.wait(), logs)
    })
    .await
    .expect("waiter thread");
    let status = status.expect("wait");
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(logs.contains("chaos started"), "{logs}");
    assert!(logs.contains("****0b42"), "the key shows masked: {logs}");
    assert!(
        !logs.contains(key),
        "the apiKey never appears in clear: {logs}"
    );
    let code = link.rsplit('/').next().expect("code");
    assert!(!logs.contains(code), "nor the fix code: {logs}");
}
