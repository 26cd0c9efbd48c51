//! Verifying pizza JWTs against the factory's JWKS: how `badjwt` chaos is
//! caught (the answer is a normal 200; only the token is wrong).
//!
//! - The JWKS is fetched with `GET /.well-known/jwks.json` through the side
//!   channel (path only, to the upstream), kept, and fetched again when a
//!   token names a key id it does not hold (the factory restarted with a new
//!   key). Refreshes are single-flight (concurrent callers wait for one
//!   fetch) and rate-limited (at most one per `min_refresh`).
//! - RS256 with `jsonwebtoken` (aws-lc-rs backend). The factory writes
//!   `iat`/`exp` in the JWT *header*, so no payload claim is required, or
//!   every real pizza would be rejected.
//! - No guessing: a token that is not even a JWS (the factory's badjwt
//!   token has a mangled header) is invalid whatever the keys; a token whose
//!   signature needs checking while the JWKS cannot be had is
//!   [`Verdict::Unknown`], not badjwt, and `/status` says why.
//! - Cheap for a repeated token: the last [`RECENT_VALID`] tokens that
//!   verified are kept verbatim and compared byte for byte (no hash, so
//!   nothing to collide), so the same pizza is not checked twice; an
//!   RSA-2048 verification costs tens of microseconds, a hit well under one.
//!   A real factory signs every order anew, so there this only helps
//!   repeats; the simulator's cheap path (load benchmarks) answers one token.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::chaos::side::SideChannel;

/// Where the factory publishes its keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 64 * 1024;
/// Default: at most one JWKS fetch per this long.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Valid tokens remembered verbatim (most recent first).
pub const RECENT_VALID: usize = 16;

/// What checking a pizza JWT found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a key of the factory's JWKS.
    Valid,
    /// Not a valid pizza (badjwt).
    Invalid(&'static str),
    /// Could not be decided: the JWKS cannot be had (reason).
    Unknown(String),
}

/// The factory's verification keys, parsed once per fetch.
pub struct KeySet {
    validation: Validation,
    by_kid: HashMap<String, DecodingKey>,
    /// Keys published without a `kid`: tried for tokens without one.
    anonymous: Vec<DecodingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.len()).finish()
    }
}

/// A key check that needs a fresh JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Done(Result<(), &'static str>),
    UnknownKid,
}

impl KeySet {
    /// Parses a JWKS document, keeping the RSA signing keys and skipping
    /// any entry it cannot use.
    pub fn from_jwks(body: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is not a key set: {e}"))?;
        let mut set = KeySet {
            validation: validation(),
            by_kid: HashMap::new(),
            anonymous: Vec::new(),
        };
        for entry in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry) else {
                continue;
            };
            if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
                || matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.anonymous.push(key),
            }
        }
        if set.is_empty() {
            return Err("JWKS holds no usable RSA key".to_owned());
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies `token` with these keys only (no fetching): `None` when its
    /// key id is not among them.
    pub fn verify(&self, token: &str) -> Option<Verdict> {
        let header = match parse_header(token) {
            Ok(h) => h,
            Err(v) => return Some(v),
        };
        match self.check(token, &header) {
            Check::Done(Ok(())) => Some(Verdict::Valid),
            Check::Done(Err(why)) => Some(Verdict::Invalid(why)),
            Check::UnknownKid => None,
        }
    }

    fn check(&self, token: &str, header: &Header) -> Check {
        let verify = |key: &DecodingKey| {
            jsonwebtoken::decode::<serde::de::IgnoredAny>(token, key, &self.validation)
                .map(|_| ())
                .map_err(|e| reason(&e))
        };
        match header.kid.as_deref() {
            Some(kid) => match self.by_kid.get(kid) {
                Some(key) => Check::Done(verify(key)),
                None => Check::UnknownKid,
            },
            None => {
                let mut last = Err("no key without a key id");
                for key in self.anonymous.iter().chain(self.by_kid.values()) {
                    last = verify(key);
                    if last.is_ok() {
                        break;
                    }
                }
                Check::Done(last)
            }
        }
    }
}

/// The structural checks that need no key.
fn parse_header(token: &str) -> Result<Header, Verdict> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Verdict::Invalid("not a JWS"))?;
    if header.alg != Algorithm::RS256 {
        return Err(Verdict::Invalid("not RS256"));
    }
    Ok(header)
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    // iat/exp sit in the factory's header; the payload has no claim to require.
    v.required_spec_claims.clear();
    v.validate_aud = false;
    v
}

fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidAlgorithm => "wrong algorithm",
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => "malformed",
        _ => "invalid",
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
    valid: Mutex<VecDeque<Box<str>>>,
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
            valid: Mutex::new(VecDeque::with_capacity(RECENT_VALID)),
        }
    }

    /// Checks a pizza JWT with what is at hand (a remembered token, the keys
    /// held): `None` when that takes a JWKS fetch ([`verify`](Self::verify)).
    pub fn verify_now(&self, token: &str) -> Option<Verdict> {
        if self.is_known_valid(token.as_bytes()) {
            return Some(Verdict::Valid);
        }
        let header = match parse_header(token) {
            Ok(h) => h,
            Err(v) => return Some(v),
        };
        let keys = self.state.lock().keys.clone()?;
        match keys.check(token, &header) {
            Check::Done(r) => Some(self.remember(token, r)),
            Check::UnknownKid => None,
        }
    }

    /// Whether `token` is, byte for byte, one of the last valid tokens.
    pub fn is_known_valid(&self, token: &[u8]) -> bool {
        self.valid.lock().iter().any(|t| t.as_bytes() == token)
    }

    /// A verdict, remembering the token when it is valid.
    fn remember(&self, token: &str, verdict: Result<(), &'static str>) -> Verdict {
        match verdict {
            Ok(()) => {
                let mut valid = self.valid.lock();
                if valid.len() >= RECENT_VALID {
                    valid.pop_back();
                }
                valid.push_front(token.into());
                Verdict::Valid
            }
            Err(why) => Verdict::Invalid(why),
        }
    }

    /// Checks a pizza JWT; fetches the JWKS when it has none yet or the
    /// token's key id is unknown.
    pub async fn verify(&self, token: &str) -> Verdict {
        if let Some(verdict) = self.verify_now(token) {
            return verdict;
        }
        let header = match parse_header(token) {
            Ok(h) => h,
            Err(v) => return v,
        };
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
        let verdict = match keys.check(token, &header) {
            Check::Done(r) => r,
            Check::UnknownKid => {
                let generation = self.state.lock().generation;
                match self.refresh(generation).await {
                    Ok((fresh, true)) => match fresh.check(token, &header) {
                        Check::Done(r) => r,
                        Check::UnknownKid => Err("unknown key id"),
                    },
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

    /// Fetches the JWKS if none is held yet (a warm-up; the outcome shows in
    /// the snapshot).
    pub async fn load(&self) {
        let (held, generation) = {
            let st = self.state.lock();
            (st.keys.is_some(), st.generation)
        };
        if !held {
            let _ = self.refresh(generation).await;
        }
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
            fetched_at: st
                .fetched_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            reason: st.last_error.clone(),
            fetches: st.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Response, StatusCode};

    use crate::boxed::BoxError;
    use crate::chaos::side::SideService;
    use crate::chaos::testkit::{TestKey, jwks, pizza_claims};
    use crate::proxy::body::ProxyBody;

    fn keys() -> &'static (TestKey, TestKey) {
        static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
        KEYS.get_or_init(|| {
            (
                TestKey::generate("key-a").expect("rsa key"),
                TestKey::generate("key-b").expect("rsa key"),
            )
        })
    }

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
        assert_eq!(cache.verify(&token).await, Verdict::Valid);
        assert_eq!(cache.verify(&token).await, Verdict::Valid);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let s = cache.snapshot();
        assert_eq!((s.state, s.keys), ("available", 1));
        assert_eq!(cache.valid.lock().len(), 1, "one token remembered once");
        // A remembered token is a hit even once its key is gone: proof the
        // second check above never reached the signature.
        cache.state.lock().keys = None;
        assert_eq!(cache.verify(&token).await, Verdict::Valid);
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
            assert_eq!(cache.verify(t).await, Verdict::Valid);
        }
        let valid = cache.valid.lock();
        assert_eq!(valid.len(), RECENT_VALID);
        assert_eq!(
            valid.front().map(|t| &**t),
            tokens.last().map(String::as_str)
        );
        assert!(
            !valid.iter().any(|t| **t == *tokens[0]),
            "the oldest is forgotten"
        );
    }

    #[tokio::test]
    async fn tampered_and_mangled_tokens_are_invalid() {
        let (a, b) = keys();
        let (cache, _) = cache_with(move || (StatusCode::OK, jwks(&[a])));
        // Signed by another key under a's key id.
        let forged = b.sign_as(Some("key-a"), &pizza_claims()).expect("sign");
        assert_eq!(
            cache.verify(&forged).await,
            Verdict::Invalid("bad signature")
        );
        // The factory's badjwt: a real-looking token with its header overwritten.
        let good = a.sign(&pizza_claims()).expect("sign");
        let mangled = format!("deadx{}", &good[5..]);
        assert!(matches!(cache.verify(&mangled).await, Verdict::Invalid(_)));
        assert!(matches!(
            cache.verify("not a jwt").await,
            Verdict::Invalid(_)
        ));
        assert!(matches!(cache.verify("").await, Verdict::Invalid(_)));
        // A payload changed under a valid signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = "eyJ4IjoxfQ";
        assert!(matches!(
            cache.verify(&parts.join(".")).await,
            Verdict::Invalid(_)
        ));
        // Without a kid, every key is tried.
        let anonymous = a.sign_as(None, &pizza_claims()).expect("sign");
        assert_eq!(cache.verify(&anonymous).await, Verdict::Valid);
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
        assert_eq!(cache.verify(&ta).await, Verdict::Valid);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // The factory restarts with a new key, later than the refresh interval.
        rotated.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(61)).await;
        let tb = b.sign(&pizza_claims()).expect("sign");
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let tb = tb.clone();
                tokio::spawn(async move { cache.verify(&tb).await })
            })
            .collect();
        for c in checks {
            assert_eq!(c.await.expect("task"), Verdict::Valid);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "one refresh for all");

        // Another unknown kid right after: rate-limited, no fetch, no verdict.
        let tc = a.sign_as(Some("key-c"), &pizza_claims()).expect("sign");
        assert!(matches!(cache.verify(&tc).await, Verdict::Unknown(_)));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Once a fetch is allowed and the key is still missing: invalid.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.verify(&tc).await, Verdict::Invalid("unknown key id"));
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
        match cache.verify(&token).await {
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
        assert!(matches!(cache.verify(&token).await, Verdict::Unknown(_)));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A token that is not a JWS needs no key: invalid even now.
        assert!(matches!(
            cache.verify("deadx.y.z").await,
            Verdict::Invalid(_)
        ));

        up.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.verify(&token).await, Verdict::Valid);
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
                matches!(cache.verify(&token).await, Verdict::Unknown(_)),
                "{body}"
            );
        }
        // A good key beside unusable entries is kept.
        let mixed = format!(r#"{{"keys":[{{"kty":"EC"}},{}]}}"#, a.jwk());
        let set = KeySet::from_jwks(mixed.as_bytes()).expect("one usable key");
        assert_eq!(set.len(), 1);
        let token = a.sign(&pizza_claims()).expect("sign");
        assert_eq!(set.verify(&token), Some(Verdict::Valid));
    }

    #[tokio::test]
    async fn not_attached_is_unknown() {
        let cache = JwksCache::new(Arc::new(SideChannel::default()), Duration::from_secs(1));
        let (a, _) = keys();
        let token = a.sign(&pizza_claims()).expect("sign");
        assert!(matches!(cache.verify(&token).await, Verdict::Unknown(_)));
    }
}
