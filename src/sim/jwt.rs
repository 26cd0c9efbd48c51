//! Pizza JWTs: RS256 signing with a key generated at start, the JWKS that
//! publishes it, `/api/order/verify`, and a cache that keeps signing off the
//! hot path of load runs.
//!
//! Shapes follow the real factory (node-jose, compact JWS): the protected
//! header is `{"iat", "exp", "iss": "cs329.click", "alg": "RS256", "kid"}`,
//! the payload `{"vendor": {"id", "name"}, "diner", "order"}`. Note that `iat`
//! and `exp` sit in the *header*, so the payload has no `exp`: a verifier
//! built on `jsonwebtoken` must empty `required_spec_claims` or every real
//! pizza fails with "missing exp". The JWKS holds `{"kty", "kid", "n", "e"}`
//! with the RFC 7638 thumbprint as `kid`, as node-jose publishes it.
//!
//! # Why a cache
//! An RSA-2048 signature costs about a millisecond of CPU, far more than the
//! rest of an order, and a load run sends the same order body again and
//! again. RSA PKCS#1 v1.5 signatures are deterministic and `iat` has
//! one-second resolution, so within one second the real factory would return
//! the very same JWT for the same body. [`OrderCache`] therefore keeps, per
//! distinct body (a bounded map keyed by a hash of the body bytes, the bytes
//! compared on a hit), the payload and the JWT signed for the current second:
//! each distinct body costs one signature per second at most, and answers
//! stay exactly what the real factory would have sent.
//!
//! # Fresh tokens (`--token-pool N`)
//! That cache makes a load run answer every order with the same token,
//! which a verifier that remembers recent tokens checks for free; the real
//! factory signs every pizza anew, so there every order costs the verifier
//! one RSA check. With a pool, each distinct body gets `N` distinct tokens
//! (`iat` one second apart, going back from the first order), signed once
//! when the body is first seen, and its orders are answered with them in
//! turn: a load run then pays the verification the real factory causes,
//! while the simulator still signs nothing per order.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

/// The issuer the real factory writes into every pizza header.
pub const ISSUER: &str = "cs329.click";
/// How long a pizza is valid (`exp - iat`), as in the real factory.
pub const LIFETIME_SECS: u64 = 24 * 60 * 60;
/// Distinct order bodies remembered; when full the cache starts over.
const CACHE_CAPACITY: usize = 256;
/// Largest `--token-pool`: tokens kept per distinct body.
pub const MAX_TOKEN_POOL: usize = 4096;

/// The key could not be generated or used.
#[derive(Debug, thiserror::Error)]
#[error("RSA signing key: {0}")]
pub struct KeyError(&'static str);

impl KeyError {
    pub(crate) const GENERATION: KeyError = KeyError("generation failed");
    pub(crate) const SIGNING: KeyError = KeyError("signing failed");
}

/// The factory's signing key and what is derived from it once.
pub struct Signer {
    key: RsaKeyPair,
    /// PKCS#1 DER of the public key, for verification.
    public_der: Vec<u8>,
    kid: String,
    jwks: Bytes,
    bad_jwt: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Generates a fresh RSA-2048 key: 30-120 ms even in a debug build, so
    /// every simulator gets its own, as every factory process does.
    pub fn generate() -> Result<Self, KeyError> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::GENERATION)?;
        let public = key.public_key();
        let n = B64.encode(public.modulus().big_endian_without_leading_zero());
        let e = B64.encode(public.exponent().big_endian_without_leading_zero());
        // RFC 7638: members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = B64.encode(digest::digest(&digest::SHA256, thumbprint_input.as_bytes()));
        let jwks = serde_json::json!({
            "keys": [{ "kty": "RSA", "kid": kid, "n": n, "e": e }]
        });
        let mut signer = Signer {
            public_der: public.as_ref().to_vec(),
            key,
            kid,
            jwks: Bytes::from(jwks.to_string()),
            bad_jwt: String::new(),
            rng: SystemRandom::new(),
        };
        signer.bad_jwt = signer.make_bad_jwt()?;
        Ok(signer)
    }

    /// The key id in JWT headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The body of `GET /.well-known/jwks.json`.
    pub fn jwks_json(&self) -> &Bytes {
        &self.jwks
    }

    /// The `jwt` of `badjwt` answers: like the real factory's constant, a
    /// real-looking token whose header was overwritten, so it cannot verify.
    pub fn bad_jwt(&self) -> &str {
        &self.bad_jwt
    }

    fn make_bad_jwt(&self) -> Result<String, KeyError> {
        let payload = br#"{"vendor":{"id":"tacoLee","name":"Test vendor"},"diner":{"id":1,"name":"a","email":"a@jwt.com"},"order":{"franchiseId":1,"storeId":1,"items":[{"menuId":1,"description":"Veggie","price":0.05}]}}"#;
        let good = self.sign(&B64.encode(payload), 1_717_888_398)?;
        Ok(format!("deadx{}", good.get(5..).unwrap_or_default()))
    }

    /// Signs `payload_b64` (already base64url) as a compact RS256 JWS with
    /// the real factory's header for `iat`.
    pub fn sign(&self, payload_b64: &str, iat: u64) -> Result<String, KeyError> {
        let header = format!(
            r#"{{"iat":{iat},"exp":{exp},"iss":"{ISSUER}","alg":"RS256","kid":"{kid}"}}"#,
            exp = iat + LIFETIME_SECS,
            kid = self.kid,
        );
        let mut jwt = String::with_capacity(header.len() * 2 + payload_b64.len() + 350);
        B64.encode_string(header.as_bytes(), &mut jwt);
        jwt.push('.');
        jwt.push_str(payload_b64);
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                jwt.as_bytes(),
                &mut sig,
            )
            .map_err(|_| KeyError::SIGNING)?;
        jwt.push('.');
        B64.encode_string(&sig, &mut jwt);
        Ok(jwt)
    }

    /// `/api/order/verify`: the payload of a JWT this factory signed, or
    /// `None` for anything else (answered 403 `invalid`).
    pub fn verify(&self, jwt: &str) -> Option<serde_json::Value> {
        let mut parts = jwt.split('.');
        let (header_b64, payload_b64, sig_b64) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(header_b64).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "RS256" {
            return None;
        }
        if let Some(kid) = header.get("kid")
            && kid.as_str()? != self.kid
        {
            return None;
        }
        let sig = B64.decode(sig_b64).ok()?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signed = jwt.get(..signed_len)?;
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.public_der)
            .verify(signed.as_bytes(), &sig)
            .ok()?;
        serde_json::from_slice(&B64.decode(payload_b64).ok()?).ok()
    }
}

/// The vendor part of every pizza payload.
#[derive(Debug, Clone, Serialize)]
pub struct Vendor {
    pub id: &'static str,
    pub name: &'static str,
}

/// Builds the base64url payload of a pizza for a validated order body.
pub(crate) fn payload_b64(
    vendor: &Vendor,
    diner: &serde_json::Value,
    order: &serde_json::Value,
) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        vendor: &'a Vendor,
        diner: &'a serde_json::Value,
        order: &'a serde_json::Value,
    }
    // Serializing `Value`s into a Vec cannot fail (string keys only).
    let json = serde_json::to_vec(&Payload {
        vendor,
        diner,
        order,
    })
    .unwrap_or_default();
    B64.encode(json)
}

/// One distinct valid order body and its pizza for the current second.
#[derive(Debug)]
pub(crate) struct CachedOrder {
    body: Bytes,
    payload_b64: String,
    signed: RwLock<Option<Signed>>,
    /// `--token-pool`: the distinct pizzas for this body, signed once.
    pool: OnceLock<Box<[Signed]>>,
    /// Held while the pool is signed, so concurrent first orders wait for
    /// one signing rather than each signing a pool of its own (32 at once
    /// signed 8 192 tokens, seconds of CPU); counts the signings.
    filling: Mutex<usize>,
    /// Which pooled pizza answers next.
    turn: AtomicUsize,
}

#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub iat: u64,
    pub jwt: Arc<str>,
    /// `{"jwt": "..."}`, the whole answer when no report link is due.
    pub answer: Bytes,
}

/// Valid order bodies seen recently (see the module docs for why).
#[derive(Debug)]
pub(crate) struct OrderCache {
    hasher: RandomState,
    map: RwLock<HashMap<u64, Arc<CachedOrder>>>,
}

impl Default for OrderCache {
    fn default() -> Self {
        OrderCache {
            hasher: RandomState::new(),
            map: RwLock::new(HashMap::with_capacity(CACHE_CAPACITY)),
        }
    }
}

impl OrderCache {
    /// The entry for exactly these body bytes, if they were seen and valid.
    pub(crate) fn get(&self, body: &[u8]) -> Option<Arc<CachedOrder>> {
        let hash = self.hasher.hash_one(body);
        let entry = self.map.read().get(&hash).cloned()?;
        (entry.body == body).then_some(entry)
    }

    /// Remembers a valid body and its payload.
    pub(crate) fn insert(&self, body: Bytes, payload_b64: String) -> Arc<CachedOrder> {
        let hash = self.hasher.hash_one(&body[..]);
        let entry = Arc::new(CachedOrder {
            body,
            payload_b64,
            signed: RwLock::new(None),
            pool: OnceLock::new(),
            filling: Mutex::new(0),
            turn: AtomicUsize::new(0),
        });
        let mut map = self.map.write();
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(hash, Arc::clone(&entry));
        entry
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().len()
    }
}

impl CachedOrder {
    /// The pizza for this body at `now` (unix seconds): from the cache when
    /// signed this second, else signed now.
    pub(crate) fn signed(&self, signer: &Signer, now: u64) -> Result<Signed, KeyError> {
        if let Some(s) = self.signed.read().as_ref().filter(|s| s.iat == now) {
            return Ok(s.clone());
        }
        let jwt: Arc<str> = Arc::from(signer.sign(&self.payload_b64, now)?);
        let answer = Bytes::from(format!(r#"{{"jwt":"{jwt}"}}"#));
        let fresh = Signed {
            iat: now,
            jwt,
            answer,
        };
        let mut slot = self.signed.write();
        if slot.as_ref().is_none_or(|s| s.iat < now) {
            *slot = Some(fresh.clone());
        }
        Ok(fresh)
    }

    /// The next of this body's pooled pizzas, once [`fill_pool`](Self::fill_pool) ran.
    pub(crate) fn pooled(&self) -> Option<Signed> {
        let pool = self.pool.get()?;
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        pool.get(turn % pool.len()).cloned()
    }

    /// Signs `size` distinct pizzas for this body (`iat` = `now`, `now - 1`,
    /// ...), unless a pool is already there: CPU work of about a
    /// millisecond per token, for a blocking thread.
    pub(crate) fn fill_pool(&self, signer: &Signer, size: usize, now: u64) -> Result<(), KeyError> {
        if self.pool.get().is_some() {
            return Ok(());
        }
        let mut fills = self.filling.lock();
        if self.pool.get().is_some() {
            return Ok(()); // filled while this order waited
        }
        let pool = (0..size.max(1) as u64)
            .map(|back| {
                let iat = now.saturating_sub(back);
                let jwt: Arc<str> = Arc::from(signer.sign(&self.payload_b64, iat)?);
                let answer = Bytes::from(format!(r#"{{"jwt":"{jwt}"}}"#));
                Ok(Signed { iat, jwt, answer })
            })
            .collect::<Result<Box<[Signed]>, KeyError>>()?;
        let _ = self.pool.set(pool);
        *fills += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    const VENDOR: Vendor = Vendor { id: "v", name: "V" };

    fn signer() -> Arc<Signer> {
        static SIGNER: std::sync::OnceLock<Arc<Signer>> = std::sync::OnceLock::new();
        Arc::clone(SIGNER.get_or_init(|| Arc::new(Signer::generate().expect("key"))))
    }

    fn payload() -> String {
        payload_b64(
            &VENDOR,
            &serde_json::json!({"id": 1, "name": "d", "email": "d@jwt.com"}),
            &serde_json::json!({"items": [{"menuId": 1}]}),
        )
    }

    #[test]
    fn signed_pizza_verifies_here_and_with_jsonwebtoken_against_the_jwks() {
        let s = signer();
        let jwt = s.sign(&payload(), 1_700_000_000).expect("sign");
        let p = s.verify(&jwt).expect("valid");
        assert_eq!(p["vendor"]["id"], "v");
        assert_eq!(p["order"]["items"][0]["menuId"], 1);

        let set: JwkSet = serde_json::from_slice(s.jwks_json()).expect("jwks");
        let jwk = set.find(s.kid()).expect("kid in jwks");
        let key = DecodingKey::from_jwk(jwk).expect("rsa jwk");
        let header = jsonwebtoken::decode_header(&jwt).expect("header");
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(s.kid()));
        let mut v = Validation::new(Algorithm::RS256);
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v).expect("verifies");
        assert_eq!(data.claims["diner"]["name"], "d");
    }

    #[test]
    fn tampered_and_bad_tokens_do_not_verify() {
        let s = signer();
        let jwt = s.sign(&payload(), 1).expect("sign");
        let other = payload_b64(
            &VENDOR,
            &serde_json::json!({"id": 2}),
            &serde_json::json!({}),
        );
        let mut parts: Vec<&str> = jwt.split('.').collect();
        parts[1] = &other;
        assert!(s.verify(&parts.join(".")).is_none());
        assert!(s.verify(s.bad_jwt()).is_none());
        assert!(s.verify("").is_none());
        assert!(s.verify("a.b.c.d").is_none());
        assert!(jsonwebtoken::decode_header(s.bad_jwt()).is_err());
        assert_eq!(s.bad_jwt().split('.').count(), 3);
    }

    #[test]
    fn cache_reuses_a_signature_within_the_second_only() {
        let s = signer();
        let cache = OrderCache::default();
        let body = Bytes::from_static(b"{\"diner\":1}");
        assert!(cache.get(&body).is_none());
        let entry = cache.insert(body.clone(), payload());
        let a = entry.signed(&s, 100).expect("sign");
        let b = cache
            .get(&body)
            .expect("hit")
            .signed(&s, 100)
            .expect("cached");
        assert!(Arc::ptr_eq(&a.jwt, &b.jwt), "same second: no new signature");
        let c = entry.signed(&s, 101).expect("sign");
        assert_ne!(a.jwt, c.jwt, "a new second: a new iat");
        assert!(cache.get(b"{\"diner\":2}").is_none());
        let answer: serde_json::Value = serde_json::from_slice(&c.answer).expect("json");
        assert_eq!(answer["jwt"].as_str(), Some(&*c.jwt));
    }

    #[test]
    fn a_pool_answers_its_distinct_pizzas_in_turn() {
        let s = signer();
        let entry = OrderCache::default().insert(Bytes::from_static(b"{}"), payload());
        assert!(
            entry.pooled().is_none(),
            "nothing before the pool is filled"
        );
        entry.fill_pool(&s, 3, 1_000).expect("sign");
        let jwts: Vec<Arc<str>> = (0..6)
            .map(|_| entry.pooled().expect("pooled").jwt)
            .collect();
        assert_eq!(&jwts[..3], &jwts[3..], "in turn");
        let distinct: std::collections::HashSet<_> = jwts.iter().collect();
        assert_eq!(distinct.len(), 3);
        for jwt in &jwts[..3] {
            assert!(s.verify(jwt).is_some(), "each one valid");
        }
        // Filling again keeps the pool (no new signatures).
        entry.fill_pool(&s, 5, 2_000).expect("no-op");
        assert_eq!(entry.pooled().expect("pooled").jwt, jwts[0]);
    }

    #[test]
    fn concurrent_first_orders_sign_one_pool() {
        let s = signer();
        let entry = OrderCache::default().insert(Bytes::from_static(b"{}"), payload());
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    start.wait();
                    entry.fill_pool(&s, 4, 1_000).expect("sign");
                });
            }
        });
        assert!(entry.pooled().is_some());
        assert_eq!(
            *entry.filling.lock(),
            1,
            "one signing for eight first orders"
        );
    }

    #[test]
    fn cache_is_bounded() {
        let cache = OrderCache::default();
        for i in 0..CACHE_CAPACITY * 2 + 3 {
            cache.insert(Bytes::from(i.to_string()), String::new());
        }
        assert!(cache.len() <= CACHE_CAPACITY);
    }
}
