//! Test and benchmark helpers: an RSA signing key, its JWKS entry, and
//! RS256 tokens signed with `jsonwebtoken::encode` (a dev-dependency: the
//! sidecar itself only verifies). Compiled into the unit tests only; the
//! criterion benches include this file by path (`benches/inspect.rs`).

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// An RSA-2048 key pair for signing test pizzas.
pub struct TestKey {
    kid: String,
    /// PKCS#1 `RSAPrivateKey`, what `EncodingKey::from_rsa_der` wants.
    pkcs1: Vec<u8>,
    n: String,
    e: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// Generates a key (tens of milliseconds); `None` if aws-lc-rs fails.
    pub fn generate(kid: &str) -> Option<TestKey> {
        let pair = KeyPair::generate(KeySize::Rsa2048).ok()?;
        let pkcs8 = pair.as_der().ok()?;
        let pkcs1 = pkcs8_inner(pkcs8.as_ref())?.to_vec();
        let public = pair.public_key();
        Some(TestKey {
            kid: kid.to_owned(),
            pkcs1,
            n: B64.encode(public.modulus().big_endian_without_leading_zero()),
            e: B64.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// The key's JWKS entry.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "RSA", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// An RS256 token over `claims`, with this key's `kid` in the header.
    pub fn sign(&self, claims: &serde_json::Value) -> Option<String> {
        self.sign_as(Some(&self.kid), claims)
    }

    /// Like [`TestKey::sign`], with another `kid` written in the header.
    pub fn sign_as(&self, kid: Option<&str>, claims: &serde_json::Value) -> Option<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&self.pkcs1)).ok()
    }
}

/// Two keys, `key-a` and `key-b`, generated once per test binary (a key
/// takes tens of milliseconds).
pub fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            TestKey::generate("key-a").expect("rsa key"),
            TestKey::generate("key-b").expect("rsa key"),
        )
    })
}

/// A JWKS document (`{"keys": [...]}`) publishing `keys`.
pub fn jwks(keys: &[&TestKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// A pizza payload like the factory's.
pub fn pizza_claims() -> serde_json::Value {
    serde_json::json!({
        "vendor": {"id": "v", "name": "Vendor"},
        "diner": {"id": 719, "name": "j", "email": "j@jwt.com"},
        "order": {"items": [{"menuId": 1, "description": "Veggie", "price": 0.0038}], "storeId": "5", "franchiseId": 4}
    })
}

/// The `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`:
/// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key, ... }`.
fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = tlv(body)?; // version
    let (_, _, rest) = tlv(rest)?; // algorithm
    let (tag, key, _) = tlv(rest)?;
    (tag == 0x04).then_some(key)
}

/// One DER element: (tag, contents, what follows).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}
