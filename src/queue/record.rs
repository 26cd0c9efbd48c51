//! What the queue keeps per order, in a form every backend stores the same
//! way (JSON, bytes as base64): the request as received (vendor apiKey
//! included: that is why the store is private), who may read it (a SHA-256
//! of its `Authorization`), where it stands, and once made the factory's
//! answer. The request is dropped from the record as soon as an answer is
//! stored, so a made order no longer carries the apiKey.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use std::fmt;
use subtle::ConstantTimeEq;

/// An order's id: 128 random bits from the system CSPRNG, shown as 32 hex
/// digits. Unguessable, so `/orders/<id>` cannot be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(pub u128);

impl OrderId {
    /// A fresh id; `None` only if the system's random source fails.
    pub fn random() -> Option<OrderId> {
        let mut b = [0u8; 16];
        SystemRandom::new().fill(&mut b).ok()?;
        Some(OrderId(u128::from_be_bytes(b)))
    }

    /// Exactly 32 lowercase or uppercase hex digits.
    pub fn parse(s: &str) -> Option<OrderId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(OrderId)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OrderId::parse(&s).ok_or_else(|| serde::de::Error::custom("bad order id"))
    }
}

/// SHA-256 of the `Authorization` value an order came with (of nothing
/// when it had none). Only a hash is kept for the check; compared in
/// constant time.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthHash(#[serde(with = "hex32")] pub [u8; 32]);

impl AuthHash {
    pub fn of(headers: &HeaderMap) -> AuthHash {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .map_or(&b""[..], HeaderValue::as_bytes);
        let d = digest::digest(&digest::SHA256, value);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        AuthHash(out)
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &AuthHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for AuthHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthHash(..)")
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Waiting to be replayed.
    Queued,
    /// The factory made it (2xx); its answer is stored.
    Made,
    /// The factory refused it for good (4xx); its answer is stored.
    Failed,
    /// Given up after `dead_letter_after` failed replays.
    DeadLetter,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Queued => "queued",
            OrderState::Made => "made",
            OrderState::Failed => "failed",
            OrderState::DeadLetter => "dead_letter",
        }
    }

    /// No more replays.
    pub fn is_final(self) -> bool {
        self != OrderState::Queued
    }
}

/// Why an order was queued instead of answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuedBecause {
    /// The circuit was open (or refused the try).
    CircuitOpen,
    /// The order's deadline ran out.
    Timeout,
    /// The factory could not be reached.
    Unreachable,
}

/// A header as stored: name and raw value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeader(pub String, #[serde(with = "b64")] pub Vec<u8>);

/// The request as received, to replay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<StoredHeader>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

impl fmt::Debug for StoredRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers carry the vendor apiKey: never shown.
        f.debug_struct("StoredRequest")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Headers never stored: the async preference itself (a replay is not
/// async) and the hop-by-hop ones (dropped before forwarding anyway).
fn kept(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "prefer"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

impl StoredRequest {
    pub fn of(parts: &http::request::Parts, body: &Bytes) -> StoredRequest {
        StoredRequest {
            method: parts.method.as_str().to_owned(),
            target: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: parts
                .headers
                .iter()
                .filter(|(n, _)| kept(n))
                .map(|(n, v)| StoredHeader(n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// The request again, as the stack below the queue takes it; `None`
    /// when a stored part no longer parses (a damaged record).
    pub fn to_request(&self) -> Option<Request<Bytes>> {
        let mut req = Request::new(Bytes::from(self.body.clone()));
        *req.method_mut() = Method::from_bytes(self.method.as_bytes()).ok()?;
        *req.uri_mut() = self.target.parse().ok()?;
        let h = req.headers_mut();
        for StoredHeader(name, value) in &self.headers {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(value).ok()?,
            );
        }
        Some(req)
    }
}

/// The factory's answer to a replay, as `GET /orders/<id>` gives it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<StoredHeader>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

/// Answer headers worth keeping: what the body is, and how many tries it took.
pub const ANSWER_HEADERS: [&str; 2] = ["content-type", "x-sidecar-attempts"];

impl StoredAnswer {
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }
}

/// One order, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRecord {
    pub id: OrderId,
    pub state: OrderState,
    pub because: QueuedBecause,
    pub auth: AuthHash,
    /// Unix milliseconds.
    pub enqueued_ms: u64,
    pub updated_ms: u64,
    /// Not replayed before this (Unix ms).
    pub next_ms: u64,
    /// Dropped at this moment (Unix ms).
    pub expires_ms: u64,
    /// Replays that reached the factory (or tried to).
    pub attempts: u32,
    /// Failed replays that count toward `dead_letter_after`.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Until an answer is stored.
    pub request: Option<StoredRequest>,
    pub answer: Option<StoredAnswer>,
}

impl OrderRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<OrderRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(64);
        for b in v {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(serde::de::Error::custom("hash must be 64 hex digits"));
        }
        for (i, o) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).unwrap_or("zz");
            *o = u8::from_str_radix(pair, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_round_trip() {
        let a = OrderId::random().expect("rng");
        let b = OrderId::random().expect("rng");
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(OrderId::parse(&s), Some(a));
        assert_eq!(OrderId::parse(&s.to_uppercase()), Some(a));
        for bad in [
            "",
            "xyz",
            &s[..31],
            &format!("{s}0"),
            "+0000000000000000000000000000000",
        ] {
            assert_eq!(OrderId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn auth_hash_tells_credentials_apart() {
        let mut h = HeaderMap::new();
        let none = AuthHash::of(&h);
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a"),
        );
        let a = AuthHash::of(&h);
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer b"),
        );
        let b = AuthHash::of(&h);
        assert!(a.matches(&a));
        assert!(!a.matches(&b));
        assert!(!a.matches(&none));
        assert_eq!(format!("{a:?}"), "AuthHash(..)");
    }

    #[test]
    fn a_record_round_trips_and_replays_the_same_request() {
        let req = Request::post("/api/order?x=1")
            .header("authorization", "Bearer key")
            .header("prefer", "respond-async")
            .header("content-type", "application/json")
            .header("x-forwarded-for", "10.0.0.1")
            .body(Bytes::from_static(b"{\"a\":1}"))
            .expect("request");
        let (parts, body) = req.into_parts();
        let stored = StoredRequest::of(&parts, &body);
        assert!(
            !format!("{stored:?}").contains("key"),
            "Debug hides headers"
        );
        let rec = OrderRecord {
            id: OrderId(7),
            state: OrderState::Queued,
            because: QueuedBecause::CircuitOpen,
            auth: AuthHash::of(&parts.headers),
            enqueued_ms: 1,
            updated_ms: 1,
            next_ms: 1,
            expires_ms: 2,
            attempts: 0,
            failures: 0,
            last_error: None,
            request: Some(stored),
            answer: None,
        };
        let back = OrderRecord::decode(&rec.encode()).expect("decode");
        assert_eq!(back, rec);
        let again = back.request.and_then(|r| r.to_request()).expect("request");
        assert_eq!(again.method(), Method::POST);
        assert_eq!(again.uri(), "/api/order?x=1");
        assert_eq!(again.headers()["authorization"], "Bearer key");
        assert!(again.headers().get("prefer").is_none());
        assert_eq!(again.body().as_ref(), b"{\"a\":1}");
    }
}
