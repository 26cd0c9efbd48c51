//! Verifying pizza JWTs against the factory's JWKS: how `badjwt` chaos is
//! caught (the answer is a normal 200; only the token is wrong).
//!
//! - The JWKS is fetched with `GET /.well-known/jwks.json` through the side
//!   channel (path only, to the upstream), kept, and fetched again when a
//!   token names a key id it does not hold (the factory restarted with a new
//!   key). Refreshes are single-flight (concurrent callers wait for one
//!   fetch) and rate-limited (at most one per `min_refresh`).
//! - RS256, checked by [`jws`](super::jws) with keys parsed once per fetch.
//!   The factory writes `iat`/`exp` in the JWT *header*, so no payload claim
//!   is required, or every real pizza would be rejected.
//! - No guessing: a token that is not even a JWS (the factory's badjwt
//!   token has a mangled header) is invalid whatever the keys; a token whose
//!   signature needs checking while the JWKS cannot be had is
//!   [`Verdict::Unknown`], not badjwt, and `/status` says why.
//! - Cheap for a repeated token: the last [`RECENT_VALID`] tokens that
//!   verified are kept verbatim and compared byte for byte (no hash, so
//!   nothing to collide), so the same pizza is not checked twice; an
//!   RSA-2048 verification costs about 20 microseconds, a hit well under
//!   one. The slots are reused, so remembering a token allocates nothing
//!   once they are filled. A real factory signs every order anew, so there
//!   this only helps repeats; the simulator's cheap path answers one token
//!   (`sim --token-pool` answers fresh ones).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::chaos::jws::well_formed;
use crate::chaos::side::SideChannel;
use crate::times::rfc3339;

pub use crate::chaos::jws::{KeySet, Verdict};

/// Where the factory publishes its keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 64 * 1024;
/// Default: at most one JWKS fetch per this long.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Valid tokens remembered verbatim.
pub const RECENT_VALID: usize = 16;
/// Longer tokens are checked every time, not remembered (the memory stays
/// within `RECENT_VALID` times this).
const REMEMBER_MAX_BYTES: usize = 4096;

/// The last valid tokens, verbatim, in slots reused round-robin.
#[derive(Debug, Default)]
struct Recent {
    slots: Vec<Vec<u8>>,
    /// The slot the next token overwrites once all are filled.
    next: usize,
}

impl Recent {
    fn contains(&self, token: &[u8]) -> bool {
        self.slots.iter().any(|t| t == token)
    }

    fn insert(&mut self, token: &[u8]) {
        if token.len() > REMEMBER_MAX_BYTES || self.contains(token) {
            return;
        }
        if self.slots.len() < RECENT_VALID {
            self.slots.push(token.to_vec());
            return;
        }
        let slot = &mut self.slots[self.next % RECENT_VALID];
        slot.clear();
        slot.extend_from_slice(token);
        self.next = (self.next + 1) % RECENT_VALID;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The JWKS part of `GET /status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwksSnapshot {
    /// `not fetched`, `available`, `unavailable`.
    pub state: &'static str,
    pub keys: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// Why the last fetch failed (`jwks unavailable: ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub fetches: u64,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// Bumped after every fetch (success or not).
    generation: u64,
    last_attempt: Option<Instant>,
    fetched_at: Option<SystemTime>,
    last_error: Option<String>,
}

impl State {
    /// What callers get from the latest fetch.
    fn result(&self) -> Result<Arc<KeySet>, String> {
        if let Some(e) = &self.last_error {
            return Err(e.clone());
        }
        self.keys
            .clone()
            .ok_or_else(|| "jwks unavailable: not fetched yet".to_owned())
    }
}

async fn fetch(side: &SideChannel) -> Result<KeySet, String> {
    let answer = side
        .get(JWKS_PATH, JWKS_MAX_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    if answer.status != http::StatusCode::OK {
        return Err(format!("the factory answered {}", answer.status.as_u16()));
    }
    KeySet::from_jwks(&answer.body)
}

/// Keeps a fetch's outcome; a failed refresh keeps the keys held before.
fn store(state: &Mutex<State>, fetched: Result<KeySet, String>) -> Result<Arc<KeySet>, String> {
    let mut st = state.lock();
    st.generation += 1;
    match fetched {
        Ok(set) => {
            let set = Arc::new(set);
            tracing::info!(keys = set.len(), "factory JWKS fetched");
            st.keys = Some(Arc::clone(&set));
            st.fetched_at = Some(SystemTime::now());
            st.last_error = None;
            Ok(set)
        }
        Err(e) => {
            let e = format!("jwks unavailable: {e}");
            tracing::warn!(reason = %e, "cannot verify pizza JWTs");
            st.last_error = Some(e.clone());
            Err(e)
        }
    }
}

/// The factory's keys, fetched and refreshed on demand. See the module docs.
pub struct JwksCache {
    side: Arc<SideChannel>,
    min_refresh: Duration,
    /// Shared with the fetch task, which outlives a cancelled caller.
    state: Arc<Mutex<State>>,
    /// Single flight: one fetch at a time. An async gate that guards no data
    /// (the state sits behind the sync lock, never held across an await).
    gate: tokio::sync::Mutex<()>,
    valid: Mutex<Recent>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl JwksCache {
    pub fn new(side: Arc<SideChannel>, min_refresh: Duration) -> JwksCache {
        JwksCache {
            side,
            min_refresh,
            state: Arc::new(Mutex::new(State::default())),
            gate: tokio::sync::Mutex::new(()),
            valid: Mutex::new(Recent::default()),
        }
    }

    /// Checks a pizza JWT with what is at hand (a remembered token, the keys
    /// held): `None` when that takes a JWKS fetch ([`verify`](Self::verify)).
    pub fn verify_now(&self, token: &[u8]) -> Option<Verdict> {
        if self.is_known_valid(token) {
            return Some(Verdict::Valid);
        }
        let Some(keys) = self.state.lock().keys.clone() else {
            // No keys yet: only a token that is not even a JWS is judged.
            return well_formed(token).err().map(Verdict::Invalid);
        };
        let verdict = keys.verify(token)?;
        Some(self.remember(token, verdict))
    }

    /// Whether `token` is, byte for byte, one of the last valid tokens.
    pub fn is_known_valid(&self, token: &[u8]) -> bool {
        self.valid.lock().contains(token)
    }

    /// Remembers `token` when `verdict` says it is valid.
    fn remember(&self, token: &[u8], verdict: Verdict) -> Verdict {
        if verdict == Verdict::Valid {
            self.valid.lock().insert(token);
        }
        verdict
    }

    /// Checks a pizza JWT; fetches the JWKS when it has none yet or the
    /// token's key id is unknown.
    pub async fn verify(&self, token: &[u8]) -> Verdict {
        if let Some(verdict) = self.verify_now(token) {
            return verdict;
        }
        let (keys, generation) = {
            let st = self.state.lock();
            (st.keys.clone(), st.generation)
        };
        let keys = match keys {
            Some(k) => k,
            None => match self.refresh(generation).await {
                Ok((k, _)) => k,
                Err(e) => return Verdict::Unknown(e),
            },
        };
        let verdict = match keys.verify(token) {
            Some(verdict) => verdict,
            None => {
                let generation = self.state.lock().generation;
                match self.refresh(generation).await {
                    Ok((fresh, true)) => fresh
                        .verify(token)
                        .unwrap_or(Verdict::Invalid("unknown key id")),
                    // No fetch allowed yet: the key may be new, so no verdict.
                    Ok((_, false)) => {
                        return Verdict::Unknown(
                            "unknown key id; the JWKS was fetched too recently to fetch again"
                                .to_owned(),
                        );
                    }
                    Err(e) => return Verdict::Unknown(e),
                }
            }
        };
        self.remember(token, verdict)
    }

    /// Fetches the JWKS unless another caller did since `seen` (then its
    /// result is shared) or the last attempt is too recent (then the last
    /// result stands). The flag says whether the keys were fetched after
    /// `seen`, i.e. whether a missing key id is really missing.
    ///
    /// The fetch runs in its own task and the attempt is stamped before it
    /// starts: a caller cut by its timeout neither cancels the fetch nor
    /// lets the next caller start a second one.
    async fn refresh(&self, seen: u64) -> Result<(Arc<KeySet>, bool), String> {
        let _flight = self.gate.lock().await;
        {
            let mut st = self.state.lock();
            if st.generation != seen {
                return st.result().map(|k| (k, true));
            }
            if st
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.min_refresh)
            {
                return st.result().map(|k| (k, false));
            }
            st.last_attempt = Some(Instant::now());
        }
        let side = Arc::clone(&self.side);
        let state = Arc::clone(&self.state);
        let fetch = tokio::spawn(async move {
            let fetched = fetch(&side).await;
            store(&state, fetched)
        });
        match fetch.await {
            Ok(result) => result.map(|k| (k, true)),
            Err(e) => Err(format!("jwks unavailable: the fetch task failed: {e}")),
        }
    }

    /// The JWKS part of `/status`.
    pub fn snapshot(&self) -> JwksSnapshot {
        let st = self.state.lock();
        JwksSnapshot {
            state: match (&st.last_error, &st.keys) {
                (Some(_), _) => "unavailable",
                (None, Some(_)) => "available",
                (None, None) => "not fetched",
            },
            keys: st.keys.as_ref().map_or(0, |k| k.len()),
            fetched_at: st.fetched_at.map(rfc3339),
            reason: st.last_error.clone(),
            fetches: st.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Response, StatusCode};

    use crate::boxed::BoxError;
    use crate::chaos::side::SideService;
    use crate::chaos::testkit::{TestKey, jwks, keys, pizza_claims};
    use crate::proxy::body::ProxyBody;

    /// A factory whose JWKS answer is `answer()` at each fetch; counts fetches.
    fn cache_with(
        answer: impl Fn() -> (StatusCode, String) + Send + Sync + 'static,
    ) -> (JwksCache, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&fetches);
        let answer = Arc::new(answer);
        let side = Arc::new(SideChannel::new(Duration::from_secs(1)));
        side.attach(SideService::new(tower::service_fn(
            move |req: crate::proxy::Outgoing| {
                assert_eq!(req.uri().path(), JWKS_PATH);
                count.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer();
                async move {
                    let mut res = Response::new(ProxyBody::full(body));
                    *res.status_mut() = status;
                    Ok::<_, BoxError>(res)
                }
            },
        )));
        (JwksCache::new(side, Duration::from_secs(60)), fetches)
    }

    #[tokio::test]
    async fn valid_pizza_passes_and_is_remembered() {
        let (a, _) = keys();
        let (cache, fetches) = cache_with(move || (StatusCode::OK, jwks(&[a])));
        let token = a.sign(&pizza_claims()).expect("sign");
        assert_eq!(cache.verify(token.as_bytes()).await, Verdict::Valid);
        assert_eq!(cache.verify(token.as_bytes()).await, Verdict::Valid);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let s = cache.snapshot();
        assert_eq!((s.state, s.keys), ("available", 1));
        assert_eq!(cache.valid.lock().len(), 1, "one token remembered once");
        // A remembered token is a hit even once its key is gone: proof the
        // second check above never reached the signature.
        cache.state.lock().keys = None;
        assert_eq!(cache.verify(token.as_bytes()).await, Verdict::Valid);
    }

    #[tokio::test]
    async fn only_the_most_recent_valid_tokens_are_remembered() {
        let (a, _) = keys();
        let (cache, _) = cache_with(move || (StatusCode::OK, jwks(&[a])));
        let tokens: Vec<String> = (0..RECENT_VALID + 4)
            .map(|i| {
                let mut claims = pizza_claims();
                claims["n"] = serde_json::json!(i);
                a.sign(&claims).expect("sign")
            })
            .collect();
        for t in &tokens {
            assert_eq!(cache.verify(t.as_bytes()).await, Verdict::Valid);
        }
        assert_eq!(cache.valid.lock().len(), RECENT_VALID);
        assert!(cache.is_known_valid(tokens[tokens.len() - 1].as_bytes()));
        assert!(cache.is_known_valid(tokens[4].as_bytes()));
        for old in &tokens[..4] {
            assert!(
                !cache.is_known_valid(old.as_bytes()),
                "the oldest are forgotten"
            );
        }
        // The check without waiting remembers too; an invalid token is not.
        let fresh = a.sign(&serde_json::json!({"fresh": 1})).expect("sign");
        assert_eq!(cache.verify_now(fresh.as_bytes()), Some(Verdict::Valid));
        assert!(cache.is_known_valid(fresh.as_bytes()));
        let bad = format!("{}x", &fresh[..fresh.len() - 1]);
        assert!(matches!(
            cache.verify_now(bad.as_bytes()),
            Some(Verdict::Invalid(_))
        ));
        assert!(!cache.is_known_valid(bad.as_bytes()));
    }

    #[test]
    fn the_memory_of_valid_tokens_stays_bounded() {
        let mut recent = Recent::default();
        for i in 0..RECENT_VALID * 50 {
            recent.insert(format!("token-{i:06}").as_bytes());
            assert!(recent.len() <= RECENT_VALID);
        }
        assert_eq!(recent.len(), RECENT_VALID);
        let last = RECENT_VALID * 50 - 1;
        for i in last + 1 - RECENT_VALID..=last {
            assert!(recent.contains(format!("token-{i:06}").as_bytes()), "{i}");
        }
        assert!(!recent.contains(format!("token-{:06}", last - RECENT_VALID).as_bytes()));
        // A repeat takes no second slot; an oversized token none at all.
        recent.insert(format!("token-{last:06}").as_bytes());
        recent.insert(&vec![b'a'; REMEMBER_MAX_BYTES + 1]);
        assert!(!recent.contains(&vec![b'a'; REMEMBER_MAX_BYTES + 1]));
        assert!(recent.contains(format!("token-{:06}", last + 1 - RECENT_VALID).as_bytes()));
        // Slots are reused, so the memory is at most the cap times the largest token.
        let held: usize = recent.slots.iter().map(Vec::capacity).sum();
        assert!(held <= RECENT_VALID * REMEMBER_MAX_BYTES, "{held}");
    }

    #[tokio::test]
    async fn tampered_and_mangled_tokens_are_invalid() {
        let (a, b) = keys();
        let (cache, _) = cache_with(move || (StatusCode::OK, jwks(&[a])));
        // Signed by another key under a's key id.
        let forged = b.sign_as(Some("key-a"), &pizza_claims()).expect("sign");
        assert_eq!(
            cache.verify(forged.as_bytes()).await,
            Verdict::Invalid("bad signature")
        );
        // The factory's badjwt: a real-looking token with its header overwritten.
        let good = a.sign(&pizza_claims()).expect("sign");
        let mangled = format!("deadx{}", &good[5..]);
        assert!(matches!(
            cache.verify(mangled.as_bytes()).await,
            Verdict::Invalid(_)
        ));
        assert!(matches!(
            cache.verify(b"not a jwt").await,
            Verdict::Invalid(_)
        ));
        assert!(matches!(cache.verify(b"").await, Verdict::Invalid(_)));
        // A payload changed under a valid signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = "eyJ4IjoxfQ";
        assert!(matches!(
            cache.verify(parts.join(".").as_bytes()).await,
            Verdict::Invalid(_)
        ));
        // Without a kid, every key is tried.
        let anonymous = a.sign_as(None, &pizza_claims()).expect("sign");
        assert_eq!(cache.verify(anonymous.as_bytes()).await, Verdict::Valid);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kid_triggers_one_refresh_shared_by_concurrent_callers() {
        let (a, b) = keys();
        let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&rotated);
        let (cache, fetches) = cache_with(move || {
            let keys: Vec<&TestKey> = if flag.load(Ordering::SeqCst) {
                vec![a, b]
            } else {
                vec![a]
            };
            (StatusCode::OK, jwks(&keys))
        });
        let cache = Arc::new(cache);
        let ta = a.sign(&pizza_claims()).expect("sign");
        assert_eq!(cache.verify(ta.as_bytes()).await, Verdict::Valid);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // The factory restarts with a new key, later than the refresh interval.
        rotated.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(61)).await;
        let tb = b.sign(&pizza_claims()).expect("sign");
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let tb = tb.clone();
                tokio::spawn(async move { cache.verify(tb.as_bytes()).await })
            })
            .collect();
        for c in checks {
            assert_eq!(c.await.expect("task"), Verdict::Valid);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "one refresh for all");

        // Another unknown kid right after: rate-limited, no fetch, no verdict.
        let tc = a.sign_as(Some("key-c"), &pizza_claims()).expect("sign");
        assert!(matches!(
            cache.verify(tc.as_bytes()).await,
            Verdict::Unknown(_)
        ));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Once a fetch is allowed and the key is still missing: invalid.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            cache.verify(tc.as_bytes()).await,
            Verdict::Invalid("unknown key id")
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn jwks_unavailable_is_unknown_never_badjwt_and_is_retried_later() {
        let (a, _) = keys();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&up);
        let (cache, fetches) = cache_with(move || {
            if flag.load(Ordering::SeqCst) {
                (StatusCode::OK, jwks(&[a]))
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<html>down</html>".to_owned(),
                )
            }
        });
        let token = a.sign(&pizza_claims()).expect("sign");
        match cache.verify(token.as_bytes()).await {
            Verdict::Unknown(why) => assert!(why.contains("jwks unavailable"), "{why}"),
            v => panic!("must not guess: {v:?}"),
        }
        let s = cache.snapshot();
        assert_eq!(s.state, "unavailable");
        assert!(
            s.reason.as_deref().is_some_and(|r| r.contains("503")),
            "{s:?}"
        );
        // Within the refresh interval: no new fetch, still unknown.
        assert!(matches!(
            cache.verify(token.as_bytes()).await,
            Verdict::Unknown(_)
        ));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A token that is not a JWS needs no key: invalid even now.
        assert!(matches!(
            cache.verify(b"deadx.y.z").await,
            Verdict::Invalid(_)
        ));

        up.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.verify(token.as_bytes()).await, Verdict::Valid);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(cache.snapshot().state, "available");
    }

    #[tokio::test]
    async fn garbage_jwks_is_unavailable() {
        let (a, _) = keys();
        for body in [
            "{}",
            "not json",
            r#"{"keys":[{"kty":"EC"},{"kty":"RSA","n":"!","e":"AQAB"}]}"#,
        ] {
            let (cache, _) = cache_with(move || (StatusCode::OK, body.to_owned()));
            let token = a.sign(&pizza_claims()).expect("sign");
            assert!(
                matches!(cache.verify(token.as_bytes()).await, Verdict::Unknown(_)),
                "{body}"
            );
        }
        // A good key beside unusable entries is kept.
        let mixed = format!(r#"{{"keys":[{{"kty":"EC"}},{}]}}"#, a.jwk());
        let set = KeySet::from_jwks(mixed.as_bytes()).expect("one usable key");
        assert_eq!(set.len(), 1);
        let token = a.sign(&pizza_claims()).expect("sign");
        assert_eq!(set.verify(token.as_bytes()), Some(Verdict::Valid));
    }

    #[tokio::test]
    async fn not_attached_is_unknown() {
        let cache = JwksCache::new(Arc::new(SideChannel::default()), Duration::from_secs(1));
        let (a, _) = keys();
        let token = a.sign(&pizza_claims()).expect("sign");
        assert!(matches!(
            cache.verify(token.as_bytes()).await,
            Verdict::Unknown(_)
        ));
    }
}
