//! The embedded store: one redb file, `queue.redb`, under `queue.dir`.
//!
//! Why redb: a pure-Rust, maintained, ACID embedded key-value store
//! (copy-on-write B-trees, a commit is durable when `commit()` returns:
//! two-phase fsync), crash-safe without a recovery step we would have to
//! write, no C library and no server. A kill -9 at any moment leaves the
//! file at its last commit.
//!
//! Tables: `orders` (id → record JSON), `queue` (sequence → id, due time:
//! FIFO order), `order_seq` (id → sequence, for positions), `dead` (id →
//! when), `meta` (the next sequence), `episodes` (chaos episodes, for
//! `/status` across restarts). Which orders are being replayed is kept in
//! memory only: after a restart every queued order is due again.
//!
//! Accepts are group-committed: one writer thread takes every order waiting
//! to be stored and commits them in one transaction (one fsync), then
//! answers each; under load an accept waits for at most one commit in
//! progress plus its own, instead of a queue of fsyncs.
//!
//! The file holds requests with the vendor apiKey: it is created 0600 and
//! its directory, when created here, 0700. Every other call runs on tokio's
//! blocking pool; nothing blocks an async worker.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::record::{OrderId, OrderRecord, OrderState};
use super::store::{Claim, Lookup, QueueStats, Store, StoreError, StoreFuture};

const ORDERS: TableDefinition<u128, &[u8]> = TableDefinition::new("orders");
const QUEUE: TableDefinition<u64, (u128, u64)> = TableDefinition::new("queue");
const ORDER_SEQ: TableDefinition<u128, u64> = TableDefinition::new("order_seq");
const DEAD: TableDefinition<u128, u64> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EPISODES: TableDefinition<u64, &[u8]> = TableDefinition::new("episodes");

/// The file's name under `queue.dir`.
pub const FILE_NAME: &str = "queue.redb";

/// Orders stored together in one commit at most.
const BATCH: usize = 256;

/// An order waiting for the writer thread, and who to tell.
type Job = (
    OrderRecord,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// See the module docs.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// To the writer thread; dropping it ends the thread.
    writer: std::sync::mpsc::Sender<Job>,
}

struct Inner {
    db: Database,
    /// Orders claimed and not finished (this process only).
    in_flight: Mutex<HashSet<u128>>,
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            StoreError::Full(e.to_string())
        }
        redb::Error::Io(e) if e.raw_os_error() == Some(28) => StoreError::Full(e.to_string()),
        e @ (redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_)) => {
            StoreError::Unavailable(e.to_string())
        }
        e => StoreError::Io(e.to_string()),
    }
}

fn decode(bytes: &[u8]) -> Result<OrderRecord, StoreError> {
    OrderRecord::decode(bytes)
        .map_err(|e| StoreError::Unavailable(format!("unreadable record: {e}")))
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/queue.redb`. Blocking: call it from
    /// `spawn_blocking` (or [`EmbeddedStore::open_async`]).
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        if !dir.exists() {
            create_private_dir(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let path = dir.join(FILE_NAME);
        let file = open_private_file(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let unavailable = |e: redb::DatabaseError| {
            StoreError::Unavailable(format!("{}: {}", path.display(), redb::Error::from(e)))
        };
        let backend = redb::backends::FileBackend::new(file).map_err(unavailable)?;
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(unavailable)?;
        let txn = db.begin_write().map_err(io)?;
        {
            txn.open_table(ORDERS).map_err(io)?;
            txn.open_table(QUEUE).map_err(io)?;
            txn.open_table(ORDER_SEQ).map_err(io)?;
            txn.open_table(DEAD).map_err(io)?;
            txn.open_table(META).map_err(io)?;
            txn.open_table(EPISODES).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        let inner = Arc::new(Inner {
            db,
            in_flight: Mutex::new(HashSet::new()),
        });
        let (writer, jobs) = std::sync::mpsc::channel::<Job>();
        // Weak: the file is closed as soon as the store is dropped (a
        // restart in the same process can open it again at once).
        let worker = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || write_batches(&worker, &jobs))
            .map_err(|e| StoreError::Io(format!("cannot start the queue writer: {e}")))?;
        Ok(EmbeddedStore { inner, writer })
    }

    /// [`EmbeddedStore::open`] on the blocking pool.
    pub async fn open_async(dir: PathBuf) -> Result<EmbeddedStore, StoreError> {
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
        })
    }

    /// Saved chaos episodes (JSON each), oldest first. Blocking.
    pub fn load_episodes(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(io)?;
        let table = txn.open_table(EPISODES).map_err(io)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Replaces the saved chaos episodes. Blocking.
    pub fn save_episodes(&self, episodes: &[Vec<u8>]) -> Result<(), StoreError> {
        let txn = self.inner.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(EPISODES).map_err(io)?;
            table.retain(|_, _| false).map_err(io)?;
            for (i, e) in episodes.iter().enumerate() {
                table.insert(i as u64, e.as_slice()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }
}

/// The embedded file keeps the chaos episodes too.
impl crate::chaos::persist::EpisodeStore for EmbeddedStore {
    fn load(&self) -> Result<Vec<Vec<u8>>, String> {
        self.load_episodes().map_err(|e| e.to_string())
    }

    fn save(&self, episodes: &[Vec<u8>]) -> Result<(), String> {
        self.save_episodes(episodes).map_err(|e| e.to_string())
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // A file made earlier with looser rights is tightened too.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(not(unix))]
fn open_private_file(path: &Path) -> std::io::Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// The writer thread: waits for an order, takes every other one already
/// waiting (up to [`BATCH`]), stores them in one commit, answers them all.
fn write_batches(inner: &std::sync::Weak<Inner>, jobs: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = inner.enqueue(batch.iter().map(|(r, _)| r));
        for (_, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

impl Inner {
    /// Stores new orders, in the given order, in one commit.
    fn enqueue<'a>(
        &self,
        records: impl Iterator<Item = &'a OrderRecord>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut seq = meta.get("next_seq").map_err(io)?.map_or(0, |v| v.value());
            let mut orders = txn.open_table(ORDERS).map_err(io)?;
            let mut queue = txn.open_table(QUEUE).map_err(io)?;
            let mut seqs = txn.open_table(ORDER_SEQ).map_err(io)?;
            for record in records {
                orders
                    .insert(record.id.0, record.encode().as_slice())
                    .map_err(io)?;
                queue
                    .insert(seq, (record.id.0, record.next_ms))
                    .map_err(io)?;
                seqs.insert(record.id.0, seq).map_err(io)?;
                seq += 1;
            }
            meta.insert("next_seq", seq).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    fn claim(&self, now_ms: u64) -> Result<Option<Claim>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let queue = txn.open_table(QUEUE).map_err(io)?;
        let orders = txn.open_table(ORDERS).map_err(io)?;
        let mut in_flight = self.in_flight.lock();
        for row in queue.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            let (id, next_ms) = v.value();
            if next_ms > now_ms || in_flight.contains(&id) {
                continue;
            }
            let Some(bytes) = orders.get(id).map_err(io)? else {
                continue;
            };
            let record = decode(bytes.value())?;
            in_flight.insert(id);
            return Ok(Some(Claim {
                record,
                token: String::new(),
            }));
        }
        Ok(None)
    }

    fn finish(&self, record: &OrderRecord) -> Result<(), StoreError> {
        let result = self.write_finish(record);
        self.in_flight.lock().remove(&record.id.0);
        result
    }

    fn write_finish(&self, record: &OrderRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let id = record.id.0;
            let mut orders = txn.open_table(ORDERS).map_err(io)?;
            if orders.get(id).map_err(io)?.is_none() {
                // Expired (or dropped) while it was replayed: nothing to keep.
                drop(orders);
                return txn.commit().map_err(io);
            }
            orders.insert(id, record.encode().as_slice()).map_err(io)?;
            let mut seqs = txn.open_table(ORDER_SEQ).map_err(io)?;
            let seq = seqs.get(id).map_err(io)?.map(|v| v.value());
            let mut queue = txn.open_table(QUEUE).map_err(io)?;
            match (record.state, seq) {
                (OrderState::Queued, Some(seq)) => {
                    queue.insert(seq, (id, record.next_ms)).map_err(io)?;
                }
                (_, seq) => {
                    if let Some(seq) = seq {
                        queue.remove(seq).map_err(io)?;
                        seqs.remove(id).map_err(io)?;
                    }
                    if record.state == OrderState::DeadLetter {
                        txn.open_table(DEAD)
                            .map_err(io)?
                            .insert(id, record.updated_ms)
                            .map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }

    fn get(&self, id: OrderId) -> Result<Option<Lookup>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let orders = txn.open_table(ORDERS).map_err(io)?;
        let Some(bytes) = orders.get(id.0).map_err(io)? else {
            return Ok(None);
        };
        let record = decode(bytes.value())?;
        let position = match txn
            .open_table(ORDER_SEQ)
            .map_err(io)?
            .get(id.0)
            .map_err(io)?
        {
            Some(seq) => {
                let queue = txn.open_table(QUEUE).map_err(io)?;
                Some(queue.range(..seq.value()).map_err(io)?.count() as u64)
            }
            None => None,
        };
        Ok(Some(Lookup { record, position }))
    }

    fn stats(&self) -> Result<QueueStats, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let queue = txn.open_table(QUEUE).map_err(io)?;
        let oldest_ms = match queue.first().map_err(io)? {
            Some((_, v)) => {
                let (id, _) = v.value();
                let orders = txn.open_table(ORDERS).map_err(io)?;
                match orders.get(id).map_err(io)? {
                    Some(bytes) => Some(decode(bytes.value())?.enqueued_ms),
                    None => None,
                }
            }
            None => None,
        };
        Ok(QueueStats {
            depth: queue.len().map_err(io)?,
            oldest_ms,
            dead_letters: txn.open_table(DEAD).map_err(io)?.len().map_err(io)?,
        })
    }

    fn dead_letters(&self) -> Result<Vec<OrderRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let dead = txn.open_table(DEAD).map_err(io)?;
        let orders = txn.open_table(ORDERS).map_err(io)?;
        let mut out = Vec::new();
        for row in dead.iter().map_err(io)? {
            let (id, _) = row.map_err(io)?;
            if let Some(bytes) = orders.get(id.value()).map_err(io)? {
                out.push(decode(bytes.value())?);
            }
        }
        out.sort_by_key(|r| r.enqueued_ms);
        Ok(out)
    }

    fn drop_dead_letter(&self, id: OrderId) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let dropped = {
            let mut dead = txn.open_table(DEAD).map_err(io)?;
            let was = dead.remove(id.0).map_err(io)?.is_some();
            if was {
                txn.open_table(ORDERS)
                    .map_err(io)?
                    .remove(id.0)
                    .map_err(io)?;
            }
            was
        };
        txn.commit().map_err(io)?;
        Ok(dropped)
    }

    fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let mut unmade = 0;
        {
            let mut orders = txn.open_table(ORDERS).map_err(io)?;
            let mut gone = Vec::new();
            for row in orders.iter().map_err(io)? {
                let (id, bytes) = row.map_err(io)?;
                // An unreadable record is kept for an operator to look at.
                if let Ok(r) = OrderRecord::decode(bytes.value())
                    && r.expires_ms <= now_ms
                {
                    gone.push((id.value(), r.state));
                }
            }
            if gone.is_empty() {
                drop(orders);
                txn.abort().map_err(io)?;
                return Ok(0);
            }
            let mut seqs = txn.open_table(ORDER_SEQ).map_err(io)?;
            let mut queue = txn.open_table(QUEUE).map_err(io)?;
            let mut dead = txn.open_table(DEAD).map_err(io)?;
            for (id, state) in gone {
                orders.remove(id).map_err(io)?;
                dead.remove(id).map_err(io)?;
                if let Some(seq) = seqs.remove(id).map_err(io)? {
                    queue.remove(seq.value()).map_err(io)?;
                }
                if state == OrderState::Queued {
                    unmade += 1;
                }
            }
        }
        txn.commit().map_err(io)?;
        Ok(unmade)
    }

    fn check(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Io(e.to_string()))?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let n = meta.get("checks").map_err(io)?.map_or(0, |v| v.value());
            meta.insert("checks", n.wrapping_add(1)).map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}

impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn enqueue(&self, record: OrderRecord) -> StoreFuture<'_, ()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let sent = self.writer.send((record, done));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Io("the queue writer stopped".into()))?;
            answer
                .await
                .map_err(|_| StoreError::Io("the queue writer stopped".into()))?
        })
    }

    fn claim(&self, now_ms: u64) -> StoreFuture<'_, Option<Claim>> {
        self.run(move |s| s.claim(now_ms))
    }

    fn finish(&self, _claim: Claim, record: OrderRecord) -> StoreFuture<'_, ()> {
        self.run(move |s| s.finish(&record))
    }

    fn get(&self, id: OrderId) -> StoreFuture<'_, Option<Lookup>> {
        self.run(move |s| s.get(id))
    }

    fn stats(&self) -> StoreFuture<'_, QueueStats> {
        self.run(|s| s.stats())
    }

    fn dead_letters(&self) -> StoreFuture<'_, Vec<OrderRecord>> {
        self.run(|s| s.dead_letters())
    }

    fn drop_dead_letter(&self, id: OrderId) -> StoreFuture<'_, bool> {
        self.run(move |s| s.drop_dead_letter(id))
    }

    fn expire(&self, now_ms: u64) -> StoreFuture<'_, u64> {
        self.run(move |s| s.expire(now_ms))
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        self.run(|s| s.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "factory-sidecar-embedded-{name}-{}-{}",
            std::process::id(),
            OrderId::random().map_or(0, |i| i.0 as u64)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[cfg(unix)]
    #[test]
    fn the_dir_is_0700_and_the_file_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("perms").join("nested");
        let _store = EmbeddedStore::open(&dir).expect("opens");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(FILE_NAME);
        let junk = vec![0x5au8; 8192];
        fs::write(&path, &junk).expect("write");
        let err = EmbeddedStore::open(&dir).err().expect("refused");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert_eq!(fs::read(&path).expect("read"), junk, "nothing overwritten");
    }

    #[test]
    fn episodes_are_replaced_whole() {
        let store = EmbeddedStore::open(&temp_dir("episodes")).expect("opens");
        store
            .save_episodes(&[b"a".to_vec(), b"b".to_vec()])
            .expect("save");
        store.save_episodes(&[b"c".to_vec()]).expect("save");
        assert_eq!(store.load_episodes().expect("load"), vec![b"c".to_vec()]);
    }
}
