//! Async orders end to end: `Prefer: respond-async` orders that cannot be
//! made now are stored (embedded redb file or Redis), answered 202 with a
//! Location, replayed through the stack once the factory is back, and
//! readable at that Location by the service that sent them, across a
//! kill -9 of the sidecar and across replicas sharing one Redis.

mod support;

use std::path::Path;
use std::time::Duration;

use factory_sidecar::config::{QueueBackend, Secret};
use factory_sidecar::sim::{self, ChaosSpec, SimOptions};
use http::Method;
use support::binary::Binary;
use support::client::{Answer, TestClient};
use support::redis::RedisServer;
use support::sidecar::{self, ADMIN_TOKEN};
use support::{eventually, metrics, sim as simulator};
use support::{free_port, temp_dir};

const LIMIT: Duration = Duration::from_secs(30);

/// An order as the pizza service sends it, asking for an async answer.
async fn async_order(client: &TestClient, proxy: &str, key: &str) -> Answer {
    let url = format!("{proxy}/api/order");
    let prefer = [("prefer", "return=minimal, respond-async")];
    client.order_to(&url, key, &prefer).await
}

/// The order at `location`, read by the service that sent it.
async fn read(client: &TestClient, proxy: &str, location: &str, key: &str) -> Answer {
    client
        .with_token(Method::GET, &format!("{proxy}{location}"), key)
        .await
}

/// The Location of a 202, checked against the async contract.
fn accepted_location(res: &Answer) -> String {
    assert_eq!(res.status, 202, "{}", res.text());
    assert_eq!(res.header("preference-applied"), Some("respond-async"));
    let location = res.header("location").expect("Location").to_owned();
    let id = location.strip_prefix("/orders/").expect("/orders/<id>");
    assert_eq!(id.len(), 32, "128-bit id in hex");
    let body = res.json();
    assert_eq!(body["state"], "queued");
    assert!(body["message"].is_string());
    location
}

async fn admin(client: &TestClient, base: &str, method: Method, path: &str) -> Answer {
    client
        .with_token(method, &format!("{base}{path}"), ADMIN_TOKEN)
        .await
}

/// Waits until every order at `locations` reads 200, and returns the answers.
async fn all_made(
    client: &TestClient,
    proxy: &str,
    locations: &[String],
    key: &str,
) -> Vec<Answer> {
    let mut out = Vec::new();
    for loc in locations {
        let res = eventually("the order to be made", LIMIT, || {
            let (client, proxy, loc) = (client.clone(), proxy.to_owned(), loc.clone());
            async move {
                let res = read(&client, &proxy, &loc, key).await;
                (res.status == 200).then_some(res)
            }
        })
        .await;
        out.push(res);
    }
    out
}

/// The queue's own contract is tested with orders that fail fast (no
/// patience), so "cannot be made now" is immediate; patience and the queue
/// together are tested apart.
fn queue_config(c: &mut factory_sidecar::config::Config, dir: &Path) {
    c.orders.patience = Duration::ZERO;
    c.queue.dir = Some(dir.to_path_buf());
    c.queue.replay_delay = Duration::from_millis(50);
    c.queue.replay_max_delay = Duration::from_millis(200);
    c.queue.replay_per_second = 50;
}

/// A simulator and a sidecar with an embedded queue in a fresh directory.
struct Setup {
    factory: sim::SimHandle,
    key: String,
    dir: std::path::PathBuf,
    sc: sidecar::Running,
}

impl Setup {
    async fn start(name: &str, tweak: impl FnOnce(&mut factory_sidecar::config::Config)) -> Setup {
        let factory = simulator::start().await;
        let key = factory.api_key().to_owned();
        let dir = temp_dir(name);
        let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
            queue_config(c, &dir);
            tweak(c);
        }))
        .await;
        Setup {
            factory,
            key,
            dir,
            sc,
        }
    }

    async fn stop(self) {
        stop(self.sc, &self.dir).await;
    }
}

async fn stop(sc: sidecar::Running, dir: &Path) {
    sc.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn orders_wait_out_an_open_circuit_and_are_made_once_it_closes() {
    let setup = Setup::start("queue-open", |_| {}).await;
    let (factory, key, sc) = (&setup.factory, setup.key.as_str(), &setup.sc);
    let client = TestClient::http1();

    let opened = admin(&client, &sc.admin, Method::POST, "/circuit/open").await;
    assert_eq!(opened.status, 200);
    let mut locations = Vec::new();
    for _ in 0..3 {
        locations.push(accepted_location(&async_order(&client, &sc.url, key).await));
    }
    // Without the preference nothing changes: the usual fail-fast answer.
    let plain = client.order(&sc.url, key).await;
    assert_eq!(plain.status, 503);
    assert_eq!(plain.header("x-sidecar-error"), Some("circuit-open"));

    // Queued: 202 with its place; another service (or none) sees nothing.
    let pending = read(&client, &sc.url, &locations[2], key).await;
    assert_eq!(pending.status, 202, "{}", pending.text());
    let body = pending.json();
    assert_eq!(body["state"], "queued");
    assert_eq!(body["position"], 2);
    assert_eq!(body["attempts"], 0);
    assert!(!pending.text().contains(key), "no apiKey in the answer");
    for other in ["feedfacecafebeef0123456789abcdee", ""] {
        let res = read(&client, &sc.url, &locations[0], other).await;
        assert_eq!(res.status, 404, "another Authorization: as if unknown");
    }
    let res = client.get(&format!("{}{}", sc.url, locations[0])).await;
    assert_eq!(res.status, 404, "no Authorization at all");
    for bad in ["/orders/nope", "/orders/00000000000000000000000000000000"] {
        let res = read(&client, &sc.url, bad, key).await;
        assert_eq!(res.status, 404);
        assert_eq!(res.header("x-sidecar-error"), Some("order-not-found"));
    }
    assert_eq!(factory.stats().orders, 0, "nothing sent while open");

    let status = client.status(&sc.admin, ADMIN_TOKEN).await;
    assert_eq!(status["queue"]["accepting"], true);
    assert_eq!(status["queue"]["backend"], "embedded");

    let closed = admin(&client, &sc.admin, Method::POST, "/circuit/close").await;
    assert_eq!(closed.status, 200);
    let answers = all_made(&client, &sc.url, &locations, key).await;
    for a in &answers {
        assert_eq!(a.header("x-sidecar-order-state"), Some("made"));
        assert!(factory.verify(a.json()["jwt"].as_str().expect("jwt")));
    }
    // Each made exactly once, and read again the same.
    assert_eq!(factory.stats().orders, 3);
    assert_eq!(factory.stats().orders_ok, 3);
    let again = read(&client, &sc.url, &locations[0], key).await;
    assert_eq!(again.body, answers[0].body);

    let text = client.metrics(&sc.admin).await;
    assert_eq!(
        metrics::value(&text, "sidecar_queue_replayed_total{result=\"made\"}"),
        Some(3.0)
    );
    assert_eq!(
        metrics::value(
            &text,
            "sidecar_queue_replayed_total{result=\"dead_letter\"}"
        ),
        Some(0.0)
    );
    metrics::reaches(&client, &sc.admin, "sidecar_queue_depth", 0.0, LIMIT).await;
    setup.stop().await;
}

#[tokio::test]
async fn an_unreachable_factory_queues_and_a_healthy_one_answers_as_before() {
    // A port where nothing listens: the factory is down.
    let port = free_port();
    let dir = temp_dir("queue-down");
    let sc = sidecar::start(sidecar::config(&format!("http://127.0.0.1:{port}"), |c| {
        queue_config(c, &dir);
        c.upstream.request_timeout = Duration::from_secs(2);
        c.upstream.attempt_timeout = Duration::from_millis(500);
        // Refused connections must not open the circuit in this test.
        c.circuit_breaker.consecutive_failures = 100;
        c.circuit_breaker.minimum_calls = 100;
    }))
    .await;
    let client = TestClient::http1();
    let key = sim::DEFAULT_API_KEY;

    let res = async_order(&client, &sc.url, key).await;
    let location = accepted_location(&res);
    assert_eq!(res.json()["reason"], "unreachable");
    let plain = client.order(&sc.url, key).await;
    assert_eq!(plain.status, 502, "no preference: today's answer");
    assert_eq!(plain.header("x-sidecar-error"), Some("unreachable"));

    // The factory comes back on that port: the order is made.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is still free");
    let factory = sim::spawn_on(listener, simulator::fast_options())
        .await
        .expect("sim");
    all_made(&client, &sc.url, &[location], key).await;
    // At least once: a replay that connected while the factory was still
    // starting may have been cut and retried, and both tries made a pizza
    // (harmless: only the stored answer is handed back).
    assert!(factory.stats().orders_ok >= 1);

    // A healthy factory: a Prefer order is answered at once, as before.
    let res = async_order(&client, &sc.url, key).await;
    assert_eq!(res.status, 200);
    assert!(res.header("preference-applied").is_none());
    stop(sc, &dir).await;
}

#[tokio::test]
async fn orders_that_keep_failing_become_dead_letters_an_operator_can_drop() {
    let setup = Setup::start("queue-dead", |c| {
        c.queue.dead_letter_after = 2;
        c.retry.max_attempts = 1;
        c.chaos.auto_resolve = false;
    })
    .await;
    let (factory, key, sc) = (&setup.factory, setup.key.as_str(), &setup.sc);
    let client = TestClient::http1();
    admin(&client, &sc.admin, Method::POST, "/circuit/open").await;
    let location = accepted_location(&async_order(&client, &sc.url, key).await);
    let id = location.trim_start_matches("/orders/").to_owned();
    factory.set_chaos(ChaosSpec::fail());
    admin(&client, &sc.admin, Method::POST, "/circuit/close").await;

    let list = eventually("a dead letter", LIMIT, || {
        let (client, admin_url) = (client.clone(), sc.admin.clone());
        async move {
            let res = admin(&client, &admin_url, Method::GET, "/queue/dead-letters").await;
            let list = res.json()["deadLetters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (!list.is_empty()).then_some(list)
        }
    })
    .await;
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["attempts"], 2);
    assert_eq!(list[0]["lastStatus"], 500);
    assert!(
        !serde_json::Value::Array(list.clone())
            .to_string()
            .contains(key)
    );

    // The service reads the factory's last answer (its link masked).
    let res = read(&client, &sc.url, &location, key).await;
    assert_eq!(res.status, 500, "{}", res.text());
    assert_eq!(res.header("x-sidecar-order-state"), Some("dead_letter"));
    assert!(!res.text().contains(key));

    let text = client.metrics(&sc.admin).await;
    assert_eq!(
        metrics::value(
            &text,
            "sidecar_queue_replayed_total{result=\"dead_letter\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics::value(&text, "sidecar_queue_replayed_total{result=\"failed\"}"),
        Some(1.0)
    );

    let no_token = client
        .request(
            Method::GET,
            &format!("{}/queue/dead-letters", sc.admin),
            &[],
            "",
        )
        .await;
    assert_eq!(no_token.status, 401);
    let dropped = admin(
        &client,
        &sc.admin,
        Method::DELETE,
        &format!("/queue/dead-letters/{id}"),
    )
    .await;
    assert_eq!(dropped.status, 200, "{}", dropped.text());
    let again = admin(
        &client,
        &sc.admin,
        Method::DELETE,
        &format!("/queue/dead-letters/{id}"),
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(read(&client, &sc.url, &location, key).await.status, 404);
    setup.stop().await;
}

#[tokio::test]
async fn an_order_not_made_within_its_ttl_expires() {
    let setup = Setup::start("queue-ttl", |c| c.queue.ttl = Duration::from_secs(1)).await;
    let (factory, key, sc) = (&setup.factory, setup.key.as_str(), &setup.sc);
    let client = TestClient::http1();
    admin(&client, &sc.admin, Method::POST, "/circuit/open").await;
    let location = accepted_location(&async_order(&client, &sc.url, key).await);
    let expired = "sidecar_queue_replayed_total{result=\"expired\"}";
    metrics::reaches(&client, &sc.admin, expired, 1.0, LIMIT).await;
    assert_eq!(read(&client, &sc.url, &location, key).await.status, 404);
    admin(&client, &sc.admin, Method::POST, "/circuit/close").await;
    assert_eq!(factory.stats().orders, 0, "an expired order is never sent");
    setup.stop().await;
}

#[tokio::test]
async fn a_corrupt_store_turns_async_off_and_the_sidecar_still_proxies() {
    let factory = simulator::start().await;
    let key = factory.api_key().to_owned();
    let dir = temp_dir("queue-corrupt");
    let file = dir.join("queue.redb");
    let junk = vec![0x42u8; 16 * 1024];
    std::fs::write(&file, &junk).expect("junk file");
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| queue_config(c, &dir))).await;
    let client = TestClient::http1();

    let ready = client.get(&format!("{}/readyz", sc.admin)).await;
    assert_eq!(ready.status, 200, "still ready: orders still flow");
    assert!(
        ready
            .text()
            .contains("async orders off (store_unavailable)"),
        "{}",
        ready.text()
    );
    let status = client.status(&sc.admin, ADMIN_TOKEN).await;
    assert_eq!(status["queue"]["accepting"], false);
    assert_eq!(status["queue"]["offReason"], "store_unavailable");
    let text = client.metrics(&sc.admin).await;
    assert_eq!(
        metrics::value(
            &text,
            "sidecar_queue_async_off{reason=\"store_unavailable\"}"
        ),
        Some(1.0)
    );

    // Proxying goes on; an async order gets today's answers.
    assert_eq!(async_order(&client, &sc.url, &key).await.status, 200);
    admin(&client, &sc.admin, Method::POST, "/circuit/open").await;
    assert_eq!(async_order(&client, &sc.url, &key).await.status, 503);
    assert_eq!(
        std::fs::read(&file).expect("file"),
        junk,
        "the file is left as it was"
    );
    stop(sc, &dir).await;
}

/// The binary's config for a queue in `dir` and a factory at `port`.
fn binary_toml(port: u16, queue: &str) -> String {
    format!(
        "[upstream]\nurl = \"http://127.0.0.1:{port}\"\nattempt_timeout = \"5s\"\nrequest_timeout = \"10s\"\n\
         [orders]\npatience = \"0s\"\n\
         [queue]\n{queue}\nreplay_delay = \"50ms\"\nreplay_max_delay = \"200ms\"\nreplay_per_second = 50\ndead_letter_after = 100\n"
    )
}

async fn sim_stats(client: &TestClient, url: &str) -> serde_json::Value {
    client.get(&format!("{url}/sim/stats")).await.json()
}

#[tokio::test]
async fn kill_9_loses_no_accepted_order_and_a_restart_replays_each_once() {
    let port = free_port();
    let dir = temp_dir("queue-kill9");
    let toml = binary_toml(
        port,
        &format!("dir = {:?}", dir.join("store").display().to_string()),
    );
    let client = TestClient::http1();
    let key = sim::DEFAULT_API_KEY;

    let first = start_binary(&toml).await;
    let mut locations = Vec::new();
    for _ in 0..5 {
        locations.push(accepted_location(
            &async_order(&client, &first.url, key).await,
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("store")), 0o700);
        assert_eq!(mode(&dir.join("store").join("queue.redb")), 0o600);
    }
    first.kill9().await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the factory's port is free");
    let factory = sim::spawn_on(listener, simulator::fast_options())
        .await
        .expect("sim");
    let second = start_binary(&toml).await;
    all_made(&client, &second.url, &locations, key).await;
    let stats = sim_stats(&client, &factory.url()).await;
    assert_eq!(
        stats["orders"], 5,
        "each order replayed exactly once: {stats}"
    );
    assert_eq!(stats["ordersOk"], 5);

    // Killed again after the answers were stored: nothing is replayed twice.
    second.kill9().await;
    let third = start_binary(&toml).await;
    let answers = all_made(&client, &third.url, &locations, key).await;
    assert_eq!(answers.len(), 5);
    let text = client.metrics(&third.admin).await;
    assert_eq!(
        metrics::value(&text, "sidecar_queue_replayed_total{result=\"made\"}"),
        Some(0.0)
    );
    assert_eq!(sim_stats(&client, &factory.url()).await["orders"], 5);
    third.kill9().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn redis_tweak(c: &mut factory_sidecar::config::Config, url: &str) {
    c.orders.patience = Duration::ZERO;
    c.queue.backend = QueueBackend::Redis;
    c.queue.redis_url = Secret::new(url);
    c.queue.redis_prefix = format!("t{}", free_port());
    c.queue.replay_delay = Duration::from_millis(50);
    c.queue.replay_max_delay = Duration::from_millis(200);
    c.queue.replay_per_second = 50;
}

#[tokio::test]
async fn two_sidecars_on_one_redis_make_every_order_exactly_once() {
    let redis = RedisServer::start().await;
    let factory = simulator::start().await;
    let key = factory.api_key().to_owned();
    let prefix = format!("t{}", free_port());
    let tweak = |c: &mut factory_sidecar::config::Config| {
        redis_tweak(c, &redis.url());
        c.queue.redis_prefix = prefix.clone();
    };
    let a = sidecar::start(sidecar::config(&factory.url(), tweak)).await;
    let b = sidecar::start(sidecar::config(&factory.url(), tweak)).await;
    let client = TestClient::http1();
    for sc in [&a, &b] {
        admin(&client, &sc.admin, Method::POST, "/circuit/open").await;
    }
    let mut locations = Vec::new();
    for i in 0..10 {
        let sc = if i % 2 == 0 { &a } else { &b };
        locations.push(accepted_location(
            &async_order(&client, &sc.url, &key).await,
        ));
    }
    // Readable on either replica.
    assert_eq!(read(&client, &b.url, &locations[0], &key).await.status, 202);
    assert_eq!(read(&client, &a.url, &locations[1], &key).await.status, 202);
    for sc in [&a, &b] {
        admin(&client, &sc.admin, Method::POST, "/circuit/close").await;
    }
    all_made(&client, &a.url, &locations, &key).await;
    all_made(&client, &b.url, &locations, &key).await;
    assert_eq!(factory.stats().orders, 10, "every order made exactly once");
    let made = |text: &str| {
        metrics::value(text, "sidecar_queue_replayed_total{result=\"made\"}").unwrap_or(0.0)
    };
    let ta = client.metrics(&a.admin).await;
    let tb = client.metrics(&b.admin).await;
    assert_eq!(made(&ta) + made(&tb), 10.0);
    for sc in [a, b] {
        sc.stop().await;
    }
    redis.stop().await;
}

#[tokio::test]
async fn a_replica_killed_mid_replay_leaves_its_orders_to_the_other() {
    let redis = RedisServer::start().await;
    // Slow pizzas: replays are in flight when the first replica dies.
    let factory = simulator::start_with(
        SimOptions::default()
            .throttle_delay(Duration::from_millis(1500))
            .shutdown_grace(Duration::from_secs(1)),
    )
    .await;
    let key = factory.api_key().to_owned();
    let dir = temp_dir("queue-redis-kill");
    let prefix = format!("t{}", free_port());
    let toml = format!(
        "[upstream]\nurl = {:?}\nattempt_timeout = \"3s\"\nrequest_timeout = \"3s\"\n\
         [orders]\npatience = \"0s\"\n\
         [chaos]\nauto_resolve = false\nslow_threshold = \"10s\"\n\
         [queue]\nbackend = \"redis\"\nredis_url = {:?}\nredis_prefix = {prefix:?}\nreplay_delay = \"50ms\"\nreplay_max_delay = \"200ms\"\nreplay_per_second = 50\nreplay_concurrency = 8\nclaim_idle = \"4s\"\n",
        factory.url(),
        redis.url()
    );
    let client = TestClient::http1();
    let first = start_binary(&toml).await;
    admin(&client, &first.admin, Method::POST, "/circuit/open").await;
    let mut locations = Vec::new();
    for _ in 0..6 {
        locations.push(accepted_location(
            &async_order(&client, &first.url, &key).await,
        ));
    }
    factory.set_chaos(ChaosSpec::new(sim::ChaosKind::Throttle));
    admin(&client, &first.admin, Method::POST, "/circuit/close").await;
    eventually("replays in flight at the first replica", LIMIT, || {
        let factory = &factory;
        async move { (factory.stats().orders >= 1).then_some(()) }
    })
    .await;
    first.kill9().await;
    factory.set_chaos(ChaosSpec::none());

    let second = sidecar::start(sidecar::config(&factory.url(), |c| {
        redis_tweak(c, &redis.url());
        c.queue.redis_prefix = prefix.clone();
        c.queue.claim_idle = Duration::from_secs(4);
        c.upstream.request_timeout = Duration::from_secs(3);
    }))
    .await;
    let answers = all_made(&client, &second.url, &locations, &key).await;
    assert_eq!(answers.len(), 6, "the survivor finished every order");
    let text = client.metrics(&second.admin).await;
    let made =
        metrics::value(&text, "sidecar_queue_replayed_total{result=\"made\"}").unwrap_or(0.0);
    assert!(
        made >= 1.0,
        "the survivor took over at least the orders in flight:\n{text}"
    );
    second.stop().await;
    redis.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn chaos_episodes_survive_a_restart_in_the_same_store() {
    let factory = simulator::start().await;
    let key = factory.api_key().to_owned();
    let dir = temp_dir("queue-episodes");
    let config = || sidecar::config(&factory.url(), |c| queue_config(c, &dir));
    let sc = sidecar::start(config()).await;
    let client = TestClient::http1();
    factory.set_chaos(ChaosSpec::fail());
    assert_eq!(
        client.order(&sc.url, &key).await.status,
        200,
        "retried after the resolve"
    );
    let episodes = |status: serde_json::Value| {
        status["chaos"]["recent"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let before = episodes(client.status(&sc.admin, ADMIN_TOKEN).await);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["how"], "auto");
    sc.stop().await;

    let again = sidecar::start(config()).await;
    let after = episodes(client.status(&again.admin, ADMIN_TOKEN).await);
    assert_eq!(after.len(), 1, "the episode is still there");
    for k in [
        "id",
        "type",
        "firstSeen",
        "resolvedAt",
        "how",
        "link",
        "attempts",
    ] {
        assert_eq!(after[0][k], before[0][k], "{k}");
    }
    assert!(!after[0].to_string().contains(&key), "masked link only");
    again.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn redis_down_turns_async_off_with_its_reason_and_back_on() {
    let redis = RedisServer::start().await;
    let port = redis.port();
    let factory = simulator::start().await;
    let key = factory.api_key().to_owned();
    let sc = sidecar::start(sidecar::config(&factory.url(), |c| {
        redis_tweak(c, &redis.url())
    }))
    .await;
    let client = TestClient::http1();
    admin(&client, &sc.admin, Method::POST, "/circuit/open").await;
    accepted_location(&async_order(&client, &sc.url, &key).await);

    redis.stop().await;
    // The order that finds Redis gone gets today's answer, and async turns off.
    let res = async_order(&client, &sc.url, &key).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("x-sidecar-error"), Some("circuit-open"));
    let status = client.status(&sc.admin, ADMIN_TOKEN).await;
    assert_eq!(status["queue"]["accepting"], false);
    assert_eq!(status["queue"]["offReason"], "redis_unreachable");
    let ready = client.get(&format!("{}/readyz", sc.admin)).await;
    assert_eq!(ready.status, 200);
    assert!(
        ready.text().contains("redis_unreachable"),
        "{}",
        ready.text()
    );

    let back = RedisServer::start_on(port).await;
    eventually("async orders on again", LIMIT, || {
        let (client, admin_url) = (client.clone(), sc.admin.clone());
        async move {
            let s = client.status(&admin_url, ADMIN_TOKEN).await;
            (s["queue"]["accepting"] == true).then_some(())
        }
    })
    .await;
    // A server that lost its data: the group is made again and replays go on.
    let location = accepted_location(&async_order(&client, &sc.url, &key).await);
    admin(&client, &sc.admin, Method::POST, "/circuit/close").await;
    all_made(&client, &sc.url, &[location], &key).await;
    sc.stop().await;
    back.stop().await;
}

/// The real binary on `toml` plus both listeners on port 0 and the admin token.
async fn start_binary(toml: &str) -> Binary {
    Binary::start(&format!(
        "{toml}\n[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n"
    ))
    .await
}

/// With patience (the default), an async order still does not wait on an
/// open circuit: it is queued at once, while an order without the
/// preference parks and is delivered when the circuit closes.
#[tokio::test]
async fn with_patience_async_orders_queue_at_once_and_plain_ones_park() {
    let setup = Setup::start("queue-patience", |c| {
        c.orders.patience = Duration::from_secs(60);
    })
    .await;
    let (factory, key, sc) = (&setup.factory, setup.key.as_str(), &setup.sc);
    let client = TestClient::http1();
    assert_eq!(
        admin(&client, &sc.admin, Method::POST, "/circuit/open")
            .await
            .status,
        200
    );
    let location = accepted_location(&async_order(&client, &sc.url, key).await);
    let plain = {
        let (client, url, key) = (client.clone(), sc.url.clone(), key.to_owned());
        tokio::spawn(async move { client.order(&url, &key).await })
    };
    eventually("the plain order to park", LIMIT, || {
        let (client, admin_url) = (client.clone(), sc.admin.clone());
        async move {
            let status = admin(&client, &admin_url, Method::GET, "/status")
                .await
                .json();
            (status["orders"]["parked"] == 1).then_some(())
        }
    })
    .await;
    assert_eq!(factory.stats().orders, 0, "nothing sent while open");
    admin(&client, &sc.admin, Method::POST, "/circuit/close").await;
    let plain = plain.await.expect("the plain order's task");
    assert_eq!(
        plain.status,
        200,
        "parked, then delivered: {}",
        plain.text()
    );
    let made = all_made(&client, &sc.url, &[location], key).await;
    assert_eq!(made[0].header("x-sidecar-order-state"), Some("made"));
}
