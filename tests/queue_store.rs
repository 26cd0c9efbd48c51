//! The queue's Store trait, one suite run against each backend: the
//! embedded redb file and a real redis-server. Both must keep the same
//! promises (FIFO by acceptance, one claim per order, final states off the
//! queue, dead letters, expiry, positions).

mod support;

use std::sync::Arc;
use std::time::Duration;

use factory_sidecar::config::{QueueBackend, QueueConfig, Secret};
use factory_sidecar::queue::embedded::EmbeddedStore;
use factory_sidecar::queue::record::StoredAnswer;
use factory_sidecar::queue::redis::RedisStore;
use factory_sidecar::queue::{AuthHash, OrderId, OrderRecord, OrderState, QueuedBecause, Store};
use factory_sidecar::times::now_ms;
use support::redis::RedisServer;
use support::{free_port, temp_dir};

const TTL: Duration = Duration::from_secs(3600);

fn record(enqueued_ms: u64) -> OrderRecord {
    OrderRecord {
        id: OrderId::random().expect("rng"),
        state: OrderState::Queued,
        because: QueuedBecause::CircuitOpen,
        auth: AuthHash([7; 32]),
        enqueued_ms,
        updated_ms: enqueued_ms,
        next_ms: enqueued_ms,
        expires_ms: enqueued_ms + TTL.as_millis() as u64,
        attempts: 0,
        failures: 0,
        last_error: None,
        request: None,
        answer: None,
    }
}

/// The suite every backend passes.
async fn suite(store: Arc<dyn Store>) {
    let now = now_ms();
    let (a, b, c) = (record(now), record(now + 1), record(now + 2));
    for r in [&a, &b, &c] {
        store.enqueue(r.clone()).await.expect("enqueue");
    }
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.depth, 3);
    assert_eq!(stats.oldest_ms, Some(now));
    let found = store.get(c.id).await.expect("get").expect("found");
    assert_eq!(found.record, c);
    assert_eq!(found.position, Some(2));
    assert!(store.get(OrderId(1)).await.expect("get").is_none());

    // Oldest first, each handed out once.
    let first = store.claim(now + 10).await.expect("claim").expect("due");
    assert_eq!(first.record.id, a.id);
    let second = store.claim(now + 10).await.expect("claim").expect("due");
    assert_eq!(
        second.record.id, b.id,
        "a claimed order is not handed out twice"
    );

    // a: made (off the queue, answer kept); b: back in the queue, due later.
    let mut made = first.record.clone();
    made.state = OrderState::Made;
    made.answer = Some(StoredAnswer {
        status: 200,
        headers: vec![],
        body: b"{\"jwt\":\"j\"}".to_vec(),
    });
    store.finish(first, made.clone()).await.expect("finish");
    let mut later = second.record.clone();
    later.attempts = 1;
    later.next_ms = now + 60_000;
    store.finish(second, later).await.expect("finish");

    let got = store.get(a.id).await.expect("get").expect("kept");
    assert_eq!(got.record.state, OrderState::Made);
    assert_eq!(got.record.answer, made.answer);
    assert_eq!(got.position, None);
    assert_eq!(store.stats().await.expect("stats").depth, 2);

    // c is due; b is not: c comes next, then nothing.
    let third = store.claim(now + 10).await.expect("claim").expect("c due");
    assert_eq!(third.record.id, c.id);
    // Nothing else due (b waits; the backend may need a call to skip it).
    for _ in 0..3 {
        assert!(store.claim(now + 10).await.expect("claim").is_none());
    }
    let mut dead = third.record.clone();
    dead.state = OrderState::DeadLetter;
    dead.attempts = 5;
    store.finish(third, dead).await.expect("finish");
    let letters = store.dead_letters().await.expect("dead letters");
    assert_eq!(letters.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c.id]);
    assert_eq!(store.stats().await.expect("stats").dead_letters, 1);
    assert!(store.drop_dead_letter(c.id).await.expect("drop"));
    assert!(!store.drop_dead_letter(c.id).await.expect("drop"));
    assert!(store.get(c.id).await.expect("get").is_none());

    // b comes due.
    let again = store
        .claim(now + 61_000)
        .await
        .expect("claim")
        .expect("b due");
    assert_eq!(again.record.id, b.id);
    assert_eq!(again.record.attempts, 1);
    let mut b_made = again.record.clone();
    b_made.state = OrderState::Made;
    store.finish(again, b_made).await.expect("finish");
    assert_eq!(store.stats().await.expect("stats").depth, 0);
    assert!(store.claim(now + 61_000).await.expect("claim").is_none());

    // Expiry: a queued order past its ttl is dropped and counted.
    let mut old = record(now);
    old.expires_ms = now + 50;
    store.enqueue(old.clone()).await.expect("enqueue");
    store.check().await.expect("check");
    let expired = store
        .expire(old.enqueued_ms + TTL.as_millis() as u64 + 1)
        .await;
    assert_eq!(expired.expect("expire"), 1);
}

#[tokio::test]
async fn the_embedded_store_keeps_the_promises() {
    let dir = temp_dir("store-suite");
    let store = EmbeddedStore::open_async(dir.clone()).await.expect("open");
    suite(Arc::new(store)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_redis_store_keeps_the_promises() {
    let redis = RedisServer::start().await;
    let config = QueueConfig {
        backend: QueueBackend::Redis,
        redis_url: Secret::new(redis.url()),
        redis_prefix: format!("suite{}", free_port()),
        ttl: TTL,
        ..QueueConfig::default()
    };
    suite(Arc::new(RedisStore::new(&config).expect("store"))).await;
    redis.stop().await;
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let config = QueueConfig {
        backend: QueueBackend::Redis,
        redis_url: Secret::new(format!("redis://127.0.0.1:{}", free_port())),
        ..QueueConfig::default()
    };
    let store = RedisStore::new(&config).expect("store");
    let err = store.check().await.expect_err("nobody listens");
    assert!(err.to_string().contains("redis"), "{err}");
}
