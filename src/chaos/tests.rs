//! The chaos layer over a scripted factory (`tower::service_fn`), end to
//! end inside the crate: detection, resolve, cooldown, badjwt with real
//! RS256 keys, throttle and background learning on tokio's paused clock,
//! masking, strict paths.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tower::{Layer, ServiceExt};

use crate::boxed::BoxError;
use crate::chaos::testkit::{TestKey, jwks, pizza_claims};
use crate::chaos::{Chaos, ChaosLayer, ChaosType, How, ResolveResult};
use crate::config::ChaosConfig;
use crate::proxy::body::ProxyBody;
use crate::proxy::client::UpstreamError;
use crate::resilience::classify::BadJwt;
use crate::telemetry::metrics::Metrics;

const KEY: &str = "feedfacecafebeef0123456789abc0de";
const CODE: &str = "fx7k2q9z";

fn signing_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate("factory-key").expect("rsa key"))
}

fn other_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate("factory-key").expect("rsa key"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Healthy,
    Fail,
    BadJwt,
    /// A valid jwt and a link after `delay`.
    Throttle,
    /// A 502 HTML page from a load balancer.
    Gateway,
    /// No answer at all.
    Down,
    /// A fail answer whose link is `odd_link`.
    OddLink,
    /// A JSON content type over a truncated body with a link.
    Truncated,
    /// A valid jwt signed by a key the JWKS does not hold, with a link.
    ForeignJwt,
    /// A fast valid pizza with a link (the factory's healthy answer, docs/factory.md).
    LinkedPizza,
    /// 503 "The oven is full." (an order with no items).
    OvenFull,
}

/// A factory as docs/factory.md describes it; records every request.
struct Factory {
    mode: Mutex<Mode>,
    delay: Duration,
    /// The support route refuses every fix code.
    stubborn: bool,
    jwks_up: Mutex<bool>,
    odd_link: Mutex<String>,
    /// Every request URI as received (must be origin-form).
    seen: Mutex<Vec<(Method, String)>>,
    orders: AtomicUsize,
}

impl Factory {
    fn new(mode: Mode) -> Arc<Factory> {
        Arc::new(Factory {
            mode: Mutex::new(mode),
            delay: Duration::from_secs(2),
            stubborn: false,
            jwks_up: Mutex::new(true),
            odd_link: Mutex::new(String::new()),
            seen: Mutex::new(Vec::new()),
            orders: AtomicUsize::new(0),
        })
    }

    fn support_gets(&self) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .filter(|(_, p)| p.starts_with("/api/support/"))
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn jwks_gets(&self) -> usize {
        self.seen
            .lock()
            .iter()
            .filter(|(_, p)| p == "/.well-known/jwks.json")
            .count()
    }

    fn link() -> String {
        // The host of the order request, as the factory writes it: never contacted.
        format!("https://evil.example:6666/api/support/{KEY}/report/{CODE}")
    }

    async fn answer(
        self: Arc<Self>,
        req: crate::proxy::Outgoing,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let path = req.uri().to_string();
        self.seen.lock().push((req.method().clone(), path.clone()));
        let mode = *self.mode.lock();
        let odd = self.odd_link.lock().clone();
        let good_jwt = || signing_key().sign(&pizza_claims()).expect("sign");
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/.well-known/jwks.json") => {
                if *self.jwks_up.lock() {
                    Ok(json(200, &jwks(&[signing_key()])))
                } else {
                    Ok(json(503, r#"{"message":"down"}"#))
                }
            }
            (Method::GET, p) if p.starts_with("/api/support/") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let right = p == format!("/api/support/{KEY}/report/{CODE}");
                let chaos = mode != Mode::Healthy;
                Ok(if chaos && (!right || self.stubborn) {
                    json(400, r#"{"message":"Problem unresolved"}"#)
                } else if chaos {
                    *self.mode.lock() = Mode::Healthy;
                    json(
                        200,
                        r#"{"message":"Problem resolved. Pizza is back on the menu!"}"#,
                    )
                } else {
                    json(200, r#"{"message":"No chaos currently executing"}"#)
                })
            }
            (Method::POST, "/api/order") => {
                self.orders.fetch_add(1, Ordering::SeqCst);
                let link = Self::link();
                Ok(match mode {
                    Mode::Healthy => json(200, &serde_json::json!({"jwt": good_jwt()}).to_string()),
                    Mode::Fail => json(
                        500,
                        &serde_json::json!({"message": "chaos monkey", "reportUrl": link})
                            .to_string(),
                    ),
                    Mode::BadJwt => {
                        let good = good_jwt();
                        let bad = format!("deadx{}", &good[5..]);
                        json(
                            200,
                            &serde_json::json!({"jwt": bad, "reportUrl": link}).to_string(),
                        )
                    }
                    Mode::Throttle => {
                        tokio::time::sleep(self.delay).await;
                        json(
                            200,
                            &serde_json::json!({"jwt": good_jwt(), "reportUrl": link}).to_string(),
                        )
                    }
                    Mode::Gateway => {
                        let mut res =
                            Response::new(ProxyBody::full("<html>502 Bad Gateway</html>"));
                        *res.status_mut() = StatusCode::BAD_GATEWAY;
                        res.headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
                        res
                    }
                    Mode::Down => {
                        return Err(Box::new(UpstreamError::new(
                            "cannot connect to the factory",
                            "connection refused",
                        )));
                    }
                    Mode::OddLink => json(
                        500,
                        &serde_json::json!({"message": "chaos monkey", "reportUrl": odd})
                            .to_string(),
                    ),
                    Mode::Truncated => json(
                        500,
                        &format!(r#"{{"message":"chaos monkey","reportUrl":"{link}"#),
                    ),
                    Mode::LinkedPizza => json(
                        200,
                        &serde_json::json!({"jwt": good_jwt(), "reportUrl": link}).to_string(),
                    ),
                    Mode::OvenFull => json(
                        503,
                        r#"{"message":"Unable to satisfy pizza order. The oven is full."}"#,
                    ),
                    Mode::ForeignJwt => {
                        let jwt = other_key().sign(&pizza_claims()).expect("sign");
                        json(
                            200,
                            &serde_json::json!({"jwt": jwt, "reportUrl": link}).to_string(),
                        )
                    }
                })
            }
            _ => Ok(json(404, r#"{"message":"unknown endpoint"}"#)),
        }
    }
}

fn json(status: u16, body: &str) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(body.to_owned()));
    *res.status_mut() = StatusCode::from_u16(status).expect("status");
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    res
}

fn config() -> ChaosConfig {
    ChaosConfig {
        detect: true,
        auto_resolve: true,
        resolve_cooldown: Duration::from_secs(10),
        redact_in_responses: true,
        verify_jwt: true,
        slow_threshold: Duration::from_secs(1),
        inspect_max_bytes: 64 * 1024,
        background_timeout: Duration::from_secs(40),
    }
}

type Inner =
    tower::util::BoxCloneSyncService<crate::proxy::Outgoing, Response<ProxyBody>, BoxError>;
type Svc = crate::chaos::ChaosService<Inner>;

fn stack(factory: &Arc<Factory>, cfg: ChaosConfig) -> (Arc<Chaos>, Svc) {
    let chaos = Chaos::new(&cfg, Arc::new(Metrics::default()));
    let f = Arc::clone(factory);
    let inner = Inner::new(tower::service_fn(move |req| Arc::clone(&f).answer(req)));
    let svc = ChaosLayer::new(Arc::clone(&chaos)).layer(inner);
    (chaos, svc)
}

fn order() -> Request<Bytes> {
    let mut req = Request::new(Bytes::from_static(crate::sim::SAMPLE_ORDER.as_bytes()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/api/order".parse().expect("uri");
    req
}

async fn send(svc: &Svc, req: Request<Bytes>) -> Response<ProxyBody> {
    svc.clone().oneshot(Arc::new(req)).await.expect("an answer")
}

async fn body(res: Response<ProxyBody>) -> (http::response::Parts, Bytes) {
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

/// Polls `cond` on the (possibly paused) clock, up to 60 s of it.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

fn assert_masked(parts: &http::response::Parts, body: &Bytes) {
    let text = std::str::from_utf8(body).expect("utf8");
    assert!(!text.contains(KEY) && !text.contains(CODE), "{text}");
    serde_json::from_slice::<serde_json::Value>(body).expect("still JSON");
    assert_eq!(
        parts.headers[header::CONTENT_LENGTH],
        body.len().to_string().as_str(),
        "Content-Length fixed"
    );
}

#[tokio::test(start_paused = true)]
async fn fail_opens_an_episode_and_concurrent_detections_send_one_resolve_get() {
    let factory = Factory::new(Mode::Fail);
    let (chaos, svc) = stack(&factory, config());
    let mut events = chaos.subscribe();
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(svc.oneshot(Arc::new(order())))
        })
        .collect();
    for t in tries {
        let res = t.await.expect("task").expect("an answer");
        assert_eq!(res.status(), 500);
        let (parts, b) = body(res).await;
        assert_masked(&parts, &b);
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(
            v["reportUrl"],
            "https://evil.example:6666/api/support/****c0de/report/****"
        );
    }
    assert_eq!(
        factory.support_gets(),
        [format!("/api/support/{KEY}/report/{CODE}")]
    );
    assert!(
        factory.seen.lock().iter().all(|(_, p)| p.starts_with('/')),
        "origin-form only, never the link's host"
    );
    let s = chaos.snapshot();
    assert!(s.episodes.active.is_empty());
    let ep = &s.episodes.recent[0];
    assert_eq!(
        (ep.chaos, ep.how, ep.attempts),
        (ChaosType::Fail, Some(How::Auto), 10)
    );
    assert_eq!(ep.resolves[0].answer.result, ResolveResult::Resolved);
    let started = events.recv().await.expect("event");
    assert_eq!(started.chaos, ChaosType::Fail);
    let json = serde_json::to_string(&s).expect("status JSON");
    assert!(!json.contains(KEY) && !json.contains(CODE));

    // The retry's next try finds a healthy factory.
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 200);
    assert!(res.extensions().get::<BadJwt>().is_none());
}

#[tokio::test(start_paused = true)]
async fn one_follow_per_cooldown_while_the_factory_refuses() {
    let mut f = Factory::new(Mode::Fail);
    Arc::get_mut(&mut f).expect("sole owner").stubborn = true;
    let factory = f;
    let (chaos, svc) = stack(&factory, config());
    for _ in 0..5 {
        assert_eq!(send(&svc, order()).await.status(), 500);
    }
    assert_eq!(factory.support_gets().len(), 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..5 {
        assert_eq!(send(&svc, order()).await.status(), 500);
    }
    assert_eq!(factory.support_gets().len(), 2);
    let s = chaos.snapshot();
    let ep = &s.episodes.active[0];
    assert_eq!(ep.resolves.len(), 2);
    assert!(
        ep.resolves
            .iter()
            .all(|r| r.answer.result == ResolveResult::Unresolved)
    );
}

#[tokio::test(start_paused = true)]
async fn auto_resolve_off_never_follows_but_resolve_now_does() {
    let factory = Factory::new(Mode::Fail);
    let (chaos, svc) = stack(
        &factory,
        ChaosConfig {
            auto_resolve: false,
            ..config()
        },
    );
    for _ in 0..5 {
        assert_eq!(send(&svc, order()).await.status(), 500);
    }
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(send(&svc, order()).await.status(), 500);
    assert!(factory.support_gets().is_empty(), "no support GET ever");
    assert_eq!(chaos.snapshot().episodes.active[0].attempts, 6);

    let done = chaos.resolve_now().await.expect("a link to follow");
    assert_eq!(done.answer.result, ResolveResult::Resolved);
    assert_eq!(done.link, "/api/support/****c0de/report/****");
    assert_eq!(factory.support_gets().len(), 1);
    assert_eq!(chaos.snapshot().episodes.recent[0].how, Some(How::Manual));
    assert_eq!(send(&svc, order()).await.status(), 200);
}

#[tokio::test]
async fn resolve_now_without_a_link_says_so() {
    let factory = Factory::new(Mode::Healthy);
    let (chaos, _svc) = stack(&factory, config());
    assert!(matches!(
        chaos.resolve_now().await,
        Err(crate::chaos::ResolveNowError::NoLink)
    ));
    let unattached = Chaos::new(&config(), Arc::new(Metrics::default()));
    assert!(matches!(
        unattached.resolve_now().await,
        Err(crate::chaos::ResolveNowError::NotAttached)
    ));
}

#[tokio::test(start_paused = true)]
async fn badjwt_is_marked_and_resolved_valid_pizzas_pass() {
    let factory = Factory::new(Mode::Healthy);
    let (chaos, svc) = stack(&factory, config());
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 200);
    assert!(res.extensions().get::<BadJwt>().is_none(), "a valid pizza");
    assert!(chaos.snapshot().episodes.active.is_empty());

    *factory.mode.lock() = Mode::BadJwt;
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.extensions().get::<BadJwt>().is_some(),
        "marked for retry and breaker"
    );
    let (parts, b) = body(res).await;
    assert_masked(&parts, &b);
    // Resolved before the answer went back up: the retry gets a good pizza.
    assert_eq!(factory.support_gets().len(), 1);
    let res = send(&svc, order()).await;
    assert!(res.extensions().get::<BadJwt>().is_none());
    let s = chaos.snapshot();
    assert_eq!(s.episodes.recent[0].chaos, ChaosType::BadJwt);
    assert_eq!(s.episodes.recent[0].how, Some(How::Auto));
    assert_eq!(s.jwks.state, "available");
    assert_eq!(factory.jwks_gets(), 1, "the JWKS is fetched once and kept");
}

#[tokio::test(start_paused = true)]
async fn jwks_unavailable_is_not_badjwt_and_status_says_so() {
    let factory = Factory::new(Mode::ForeignJwt);
    *factory.jwks_up.lock() = false;
    let (chaos, svc) = stack(&factory, config());
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.extensions().get::<BadJwt>().is_none(),
        "no verdict, no guess"
    );
    let s = chaos.snapshot();
    assert_eq!(s.jwks.state, "unavailable");
    assert!(
        s.jwks
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("jwks unavailable"))
    );
    assert!(s.episodes.active.is_empty());

    // Once the JWKS can be had, the foreign signature is badjwt.
    *factory.jwks_up.lock() = true;
    tokio::time::advance(Duration::from_secs(11)).await;
    let res = send(&svc, order()).await;
    assert!(res.extensions().get::<BadJwt>().is_some());
    assert_eq!(
        chaos.snapshot().episodes.active.len() + chaos.snapshot().episodes.recent.len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn throttle_passes_the_slow_pizza_and_resolves_beside_it() {
    let factory = Factory::new(Mode::Throttle);
    let (chaos, svc) = stack(&factory, config());
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.extensions().get::<BadJwt>().is_none(),
        "still a good pizza"
    );
    let (parts, b) = body(res).await;
    assert_masked(&parts, &b);
    until("the throttle resolve GET", || {
        factory.support_gets().len() == 1
    })
    .await;
    until("the episode closes", || {
        chaos.snapshot().episodes.active.is_empty()
    })
    .await;
    let s = chaos.snapshot();
    assert_eq!(
        (s.episodes.recent[0].chaos, s.episodes.recent[0].how),
        (ChaosType::Throttle, Some(How::Auto))
    );
    let before = tokio::time::Instant::now();
    assert_eq!(send(&svc, order()).await.status(), 200);
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "the next order is fast"
    );
}

#[tokio::test(start_paused = true)]
async fn a_try_cut_by_the_attempt_timeout_still_learns_the_link() {
    let mut f = Factory::new(Mode::Throttle);
    Arc::get_mut(&mut f).expect("sole owner").delay = Duration::from_secs(32);
    let factory = f;
    let (chaos, svc) = stack(&factory, config());
    let cut = tokio::time::timeout(Duration::from_secs(5), send(&svc, order())).await;
    assert!(cut.is_err(), "the caller gave up after 5 s");
    until("the background try resolves", || {
        factory.support_gets().len() == 1
    })
    .await;
    until("the episode closes", || {
        chaos.snapshot().episodes.recent.len() == 1
    })
    .await;
    assert_eq!(
        chaos.snapshot().episodes.recent[0].chaos,
        ChaosType::Throttle
    );
}

#[tokio::test(start_paused = true)]
async fn background_learning_is_bounded_by_background_timeout() {
    let mut f = Factory::new(Mode::Throttle);
    Arc::get_mut(&mut f).expect("sole owner").delay = Duration::from_secs(32);
    let factory = f;
    let (chaos, svc) = stack(
        &factory,
        ChaosConfig {
            background_timeout: Duration::from_secs(20),
            ..config()
        },
    );
    let cut = tokio::time::timeout(Duration::from_secs(5), send(&svc, order())).await;
    assert!(cut.is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        factory.support_gets().is_empty(),
        "cut at 20 s, before the answer at 32 s"
    );
    // No answer within background_timeout: recorded as an outage.
    let s = chaos.snapshot();
    assert_eq!(s.episodes.active.len(), 1);
    assert_eq!(s.episodes.active[0].chaos, ChaosType::Unknown);
}

#[tokio::test(start_paused = true)]
async fn odd_links_are_masked_but_never_followed() {
    let factory = Factory::new(Mode::OddLink);
    let (chaos, svc) = stack(&factory, config());
    for odd in [
        format!("https://h/api/support/../x/{KEY}/report/{CODE}"),
        format!("https://h/api/support/{KEY}/report/{CODE}?next=/admin"),
        format!("https://h/api/support/{KEY}/report/{CODE}/extra"),
        format!("https://h/api/support/{KEY}%2F../report/{CODE}"),
        format!("https://h/other/api/support/{KEY}/report/{CODE}"),
        format!("/api/support/{KEY}/resolve/{CODE}"),
    ] {
        *factory.odd_link.lock() = odd.clone();
        let res = send(&svc, order()).await;
        assert_eq!(res.status(), 500);
        let (parts, b) = body(res).await;
        assert_masked(&parts, &b);
    }
    assert!(
        factory.support_gets().is_empty(),
        "{:?}",
        factory.support_gets()
    );
    let s = chaos.snapshot();
    assert!(!s.episodes.active[0].followable);
}

#[tokio::test(start_paused = true)]
async fn outages_are_unknown_episodes_that_end_by_themselves() {
    let factory = Factory::new(Mode::Gateway);
    let (chaos, svc) = stack(&factory, config());
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 502);
    let (_, b) = body(res).await;
    assert_eq!(b, "<html>502 Bad Gateway</html>", "untouched");
    *factory.mode.lock() = Mode::Down;
    assert!(svc.clone().oneshot(Arc::new(order())).await.is_err());
    *factory.mode.lock() = Mode::Truncated;
    let res = send(&svc, order()).await;
    let (_, b) = body(res).await;
    assert!(b.ends_with(CODE.as_bytes()), "garbage passes untouched");
    let s = chaos.snapshot();
    assert_eq!(s.episodes.active.len(), 1);
    assert_eq!(
        (s.episodes.active[0].chaos, s.episodes.active[0].attempts),
        (ChaosType::Unknown, 3)
    );
    assert!(factory.support_gets().is_empty());

    *factory.mode.lock() = Mode::Healthy;
    assert_eq!(send(&svc, order()).await.status(), 200);
    let s = chaos.snapshot();
    assert!(s.episodes.active.is_empty());
    assert_eq!(s.episodes.recent[0].how, Some(How::EndedByItself));
}

#[tokio::test(start_paused = true)]
async fn a_fast_verified_pizza_with_a_link_is_healthy_and_masked() {
    let factory = Factory::new(Mode::Gateway);
    let (chaos, svc) = stack(&factory, config());
    assert_eq!(send(&svc, order()).await.status(), 502);
    assert_eq!(chaos.snapshot().episodes.active.len(), 1);
    // The factory's healthy answer carries the link too: still a good pizza.
    *factory.mode.lock() = Mode::LinkedPizza;
    let res = send(&svc, order()).await;
    assert_eq!(res.status(), 200);
    assert!(res.extensions().get::<BadJwt>().is_none());
    let (parts, b) = body(res).await;
    assert_masked(&parts, &b);
    let s = chaos.snapshot();
    assert!(s.episodes.active.is_empty(), "the outage ended by itself");
    assert_eq!(s.episodes.recent.len(), 1);
    assert!(factory.support_gets().is_empty(), "nothing to resolve");
}

#[tokio::test(start_paused = true)]
async fn the_oven_full_refusal_opens_no_episode() {
    let factory = Factory::new(Mode::OvenFull);
    let (chaos, svc) = stack(&factory, config());
    assert_eq!(send(&svc, order()).await.status(), 503);
    let s = chaos.snapshot();
    assert!(s.episodes.active.is_empty() && s.episodes.recent.is_empty());
}

#[tokio::test]
async fn other_requests_and_disabled_features_pass_untouched() {
    let factory = Factory::new(Mode::Fail);
    let (chaos, svc) = stack(&factory, config());
    // Not POST /api/order: not even looked at.
    let mut req = order();
    *req.uri_mut() = "/api/order/verify".parse().expect("uri");
    let res = send(&svc, req).await;
    assert_eq!(res.status(), 404);
    let mut req = order();
    *req.method_mut() = Method::GET;
    let _ = send(&svc, req).await;
    assert!(chaos.snapshot().episodes.active.is_empty());

    // Redaction off: the link goes back as the factory wrote it.
    let (_, plain) = stack(
        &factory,
        ChaosConfig {
            redact_in_responses: false,
            auto_resolve: false,
            ..config()
        },
    );
    let (_, b) = body(send(&plain, order()).await).await;
    assert!(std::str::from_utf8(&b).expect("utf8").contains(KEY));

    // Everything off: no inspection at all.
    let (off, none) = stack(
        &factory,
        ChaosConfig {
            detect: false,
            redact_in_responses: false,
            verify_jwt: false,
            ..config()
        },
    );
    let (_, b) = body(send(&none, order()).await).await;
    assert!(std::str::from_utf8(&b).expect("utf8").contains(KEY));
    assert!(off.snapshot().episodes.active.is_empty());
    assert_eq!(off.snapshot().jwks.state, "disabled");
}

#[tokio::test(start_paused = true)]
async fn answers_over_the_inspection_limit_pass_unbuffered() {
    let factory = Factory::new(Mode::Fail);
    let (chaos, svc) = stack(
        &factory,
        ChaosConfig {
            inspect_max_bytes: 16,
            ..config()
        },
    );
    let res = send(&svc, order()).await;
    let (_, b) = body(res).await;
    assert!(
        std::str::from_utf8(&b)
            .expect("utf8")
            .contains("chaos monkey")
    );
    assert!(factory.support_gets().is_empty());
    assert_eq!(
        chaos.snapshot().episodes.active[0].chaos,
        ChaosType::Unknown
    );
}
