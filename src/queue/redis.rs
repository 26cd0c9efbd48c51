//! The Redis store: one queue shared by several sidecars (one per service
//! replica), on a Redis Streams consumer group.
//!
//! Keys (under `queue.redis_prefix`, `p` below):
//! - `p:stream`: one entry per queued order (field `id`), consumer group
//!   `replayers`. A replica claims the next entry with `XREADGROUP`, so each
//!   order goes to one replica; entries another replica left pending longer
//!   than `claim_idle` (it died mid-replay) are taken over with `XAUTOCLAIM`.
//! - `p:order:<id>`: the record (JSON), expiring on its own at `expires_ms`
//!   (`PXAT`), so `GET /orders/<id>` works on any replica.
//! - `p:queued`: sorted set of queued ids by acceptance time (position,
//!   depth, oldest); `p:dead`: dead letters by expiry.
//!
//! Each change is one `MULTI`/`EXEC`: a final state is stored, acknowledged
//! and taken off the queue together, so an order whose answer is stored is
//! never replayed again. A failed replay is put back as a new stream entry.
//! How durable an accepted order is depends on the server's persistence
//! (`appendonly yes` with `appendfsync always` loses nothing).
//!
//! Nothing connects to Redis unless this backend is configured: the
//! connection is made on first use and re-made by redis-rs's connection
//! manager when it breaks.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};
use tokio::sync::OnceCell;

use super::record::{OrderId, OrderRecord, OrderState};
use super::store::{Claim, Lookup, QueueStats, Store, StoreError, StoreFuture};
use crate::config::QueueConfig;
use crate::times::millis;

const GROUP: &str = "replayers";
/// Bounds every connect and every command.
const TIMEOUT: Duration = Duration::from_secs(2);

/// See the module docs.
pub struct RedisStore {
    client: Client,
    conn: OnceCell<ConnectionManager>,
    consumer: String,
    claim_idle_ms: u64,
    ttl_ms: u64,
    stream: String,
    queued: String,
    dead: String,
    prefix: String,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

impl RedisStore {
    /// Parses the URL; connects on first use.
    pub fn new(config: &QueueConfig) -> Result<RedisStore, StoreError> {
        let client = Client::open(config.redis_url.expose())
            .map_err(|e| StoreError::Unavailable(format!("redis_url: {e}")))?;
        let p = &config.redis_prefix;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let nonce = OrderId::random().map_or(0, |i| i.0 as u32);
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            consumer: format!("{host}-{}-{nonce:08x}", std::process::id()),
            claim_idle_ms: millis(config.claim_idle),
            ttl_ms: millis(config.ttl),
            stream: format!("{p}:stream"),
            queued: format!("{p}:queued"),
            dead: format!("{p}:dead"),
            prefix: p.clone(),
        })
    }

    fn key(&self, id: OrderId) -> String {
        format!("{}:order:{id}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                let mut conn = self
                    .client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(err)?;
                self.ensure_group(&mut conn).await?;
                Ok(conn)
            })
            .await?;
        Ok(conn.clone())
    }

    /// Creates the stream and its group unless they exist (BUSYGROUP). Run
    /// on first connect, and again when a server that lost its data says
    /// NOGROUP.
    async fn ensure_group(&self, conn: &mut ConnectionManager) -> Result<(), StoreError> {
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(err(e)),
            _ => Ok(()),
        }
    }

    /// The order record, if it still exists.
    async fn record(
        &self,
        conn: &mut ConnectionManager,
        id: OrderId,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(id))
            .query_async(conn)
            .await
            .map_err(err)?;
        Ok(bytes.and_then(|b| OrderRecord::decode(&b).ok()))
    }

    /// One stream entry (claimed from a dead replica, else new), or none.
    async fn next_entry(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<Option<(String, Option<OrderId>)>, StoreError> {
        let stolen: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .map_err(err)?;
        if let Some(e) = array(&stolen)
            .and_then(|a| a.get(1))
            .and_then(array)
            .and_then(|entries| entries.first())
            .and_then(entry)
        {
            return Ok(Some(e));
        }
        let new: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(conn)
            .await
            .map_err(err)?;
        // [[stream, [[id, [field, value, ...]]]]] (or a map in RESP3)
        let streams = match &new {
            Value::Map(m) => m.iter().map(|(_, v)| v).collect::<Vec<_>>(),
            v => array(v)
                .map(|a| a.iter().filter_map(|s| array(s)?.get(1)).collect())
                .unwrap_or_default(),
        };
        Ok(streams
            .into_iter()
            .filter_map(array)
            .flat_map(|entries| entries.iter())
            .find_map(entry))
    }

    /// Takes a stream entry off (acknowledged and deleted) in `pipe`.
    fn ack(&self, pipe: &mut redis::Pipeline, sid: &str) {
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(sid)
            .ignore();
        pipe.cmd("XDEL").arg(&self.stream).arg(sid).ignore();
    }

    fn put_back(&self, pipe: &mut redis::Pipeline, id: OrderId) {
        pipe.cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("id")
            .arg(id.to_string())
            .ignore();
    }

    async fn run(
        &self,
        conn: &mut ConnectionManager,
        pipe: &redis::Pipeline,
    ) -> Result<(), StoreError> {
        pipe.exec_async(conn).await.map_err(err)
    }

    async fn claim_inner(&self, now_ms: u64) -> Result<Option<Claim>, StoreError> {
        let mut conn = self.conn().await?;
        match self.claim_from(&mut conn, now_ms).await {
            Err(StoreError::Redis(e)) if e.contains("NOGROUP") => {
                self.ensure_group(&mut conn).await?;
                self.claim_from(&mut conn, now_ms).await
            }
            r => r,
        }
    }

    async fn claim_from(
        &self,
        conn: &mut ConnectionManager,
        now_ms: u64,
    ) -> Result<Option<Claim>, StoreError> {
        // A few entries at most per call: stale ones are cleaned on the way.
        for _ in 0..4 {
            let Some((sid, id)) = self.next_entry(conn).await? else {
                return Ok(None);
            };
            let record = match id {
                Some(id) => self.record(conn, id).await?,
                None => None,
            };
            let mut pipe = redis::pipe();
            pipe.atomic();
            match record {
                // Expired, or already answered (a replica that was taken
                // over finished it after all): nothing to replay.
                None => {
                    self.ack(&mut pipe, &sid);
                    if let Some(id) = id {
                        pipe.cmd("ZREM")
                            .arg(&self.queued)
                            .arg(id.to_string())
                            .ignore();
                    }
                }
                Some(r) if r.state.is_final() => {
                    self.ack(&mut pipe, &sid);
                    pipe.cmd("ZREM")
                        .arg(&self.queued)
                        .arg(r.id.to_string())
                        .ignore();
                }
                // Not due yet: to the back of the stream.
                Some(r) if r.next_ms > now_ms => {
                    self.ack(&mut pipe, &sid);
                    self.put_back(&mut pipe, r.id);
                    self.run(conn, &pipe).await?;
                    return Ok(None);
                }
                Some(record) => return Ok(Some(Claim { record, token: sid })),
            }
            self.run(conn, &pipe).await?;
        }
        Ok(None)
    }

    async fn finish_inner(&self, claim: Claim, record: OrderRecord) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let id = record.id.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        // XX: an order that expired meanwhile is not brought back.
        pipe.cmd("SET")
            .arg(self.key(record.id))
            .arg(record.encode())
            .arg("PXAT")
            .arg(record.expires_ms.max(1))
            .arg("XX")
            .ignore();
        self.ack(&mut pipe, &claim.token);
        if record.state == OrderState::Queued {
            self.put_back(&mut pipe, record.id);
        } else {
            pipe.cmd("ZREM").arg(&self.queued).arg(&id).ignore();
            if record.state == OrderState::DeadLetter {
                pipe.cmd("ZADD")
                    .arg(&self.dead)
                    .arg(record.expires_ms)
                    .arg(&id)
                    .ignore();
            }
        }
        self.run(&mut conn, &pipe).await
    }

    async fn stats_inner(&self) -> Result<QueueStats, StoreError> {
        let mut conn = self.conn().await?;
        let (depth, oldest, dead): (u64, Vec<(String, f64)>, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(&self.queued)
            .cmd("ZRANGE")
            .arg(&self.queued)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .cmd("ZCARD")
            .arg(&self.dead)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(QueueStats {
            depth,
            oldest_ms: oldest.first().map(|(_, s)| *s as u64),
            dead_letters: dead,
        })
    }
}

fn array(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[id, [field, value, ...]]` → (entry id, order id if readable).
fn entry(v: &Value) -> Option<(String, Option<OrderId>)> {
    let a = array(v)?;
    let sid = text(a.first()?)?;
    let fields: HashMap<String, String> = match a.get(1)? {
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        v => array(v)?
            .chunks(2)
            .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
            .collect(),
    };
    Some((sid, fields.get("id").and_then(|s| OrderId::parse(s))))
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn enqueue(&self, record: OrderRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let id = record.id.to_string();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(self.key(record.id))
                .arg(record.encode())
                .arg("PXAT")
                .arg(record.expires_ms.max(1))
                .ignore()
                .cmd("ZADD")
                .arg(&self.queued)
                .arg(record.enqueued_ms)
                .arg(&id)
                .ignore();
            self.put_back(&mut pipe, record.id);
            self.run(&mut conn, &pipe).await
        })
    }

    fn claim(&self, now_ms: u64) -> StoreFuture<'_, Option<Claim>> {
        Box::pin(self.claim_inner(now_ms))
    }

    fn finish(&self, claim: Claim, record: OrderRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.finish_inner(claim, record))
    }

    fn get(&self, id: OrderId) -> StoreFuture<'_, Option<Lookup>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let Some(record) = self.record(&mut conn, id).await? else {
                return Ok(None);
            };
            let position: Option<u64> = if record.state == OrderState::Queued {
                redis::cmd("ZRANK")
                    .arg(&self.queued)
                    .arg(id.to_string())
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?
            } else {
                None
            };
            Ok(Some(Lookup { record, position }))
        })
    }

    fn stats(&self) -> StoreFuture<'_, QueueStats> {
        Box::pin(self.stats_inner())
    }

    fn dead_letters(&self) -> StoreFuture<'_, Vec<OrderRecord>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&self.dead)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let mut out = Vec::new();
            for id in ids.iter().filter_map(|s| OrderId::parse(s)) {
                if let Some(r) = self.record(&mut conn, id).await? {
                    out.push(r);
                }
            }
            out.sort_by_key(|r| r.enqueued_ms);
            Ok(out)
        })
    }

    fn drop_dead_letter(&self, id: OrderId) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let removed: u64 = redis::cmd("ZREM")
                .arg(&self.dead)
                .arg(id.to_string())
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            if removed > 0 {
                let _: u64 = redis::cmd("DEL")
                    .arg(self.key(id))
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
            }
            Ok(removed > 0)
        })
    }

    fn expire(&self, now_ms: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let cutoff = now_ms.saturating_sub(self.ttl_ms);
            let old: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&self.queued)
                .arg("-inf")
                .arg(cutoff)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let mut unmade = 0;
            for id in old {
                // Only the replica whose ZREM removes it counts it.
                let removed: u64 = redis::cmd("ZREM")
                    .arg(&self.queued)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
                unmade += removed;
            }
            let _: u64 = redis::cmd("ZREMRANGEBYSCORE")
                .arg(&self.dead)
                .arg("-inf")
                .arg(now_ms)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            Ok(unmade)
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            Ok(())
        })
    }
}
