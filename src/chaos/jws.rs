//! The RS256 check of one pizza JWT against the factory's keys, at the cost
//! of the RSA operation and little else: the real factory signs every pizza
//! anew, so every order pays this check once.
//!
//! - Keys are parsed once per JWKS fetch into aws-lc-rs
//!   [`ParsedPublicKey`]s, which keep the RSA key and its Montgomery
//!   constants ready; a generic JWT library rebuilds the key from `n` and
//!   `e` for every token, which costs about as much again as the RSA
//!   operation itself.
//! - The token is read in place: its header and signature are decoded into
//!   stack buffers, the header once, and only `alg` and `kid` are read from
//!   it. The payload is never decoded: the signature covers its bytes, and
//!   nothing here reads a claim (the factory writes `iat`/`exp` in the
//!   header; a pizza is judged by who signed it, not by its contents).
//! - Anything that is not a compact JWS with `alg` RS256 is invalid before
//!   any key is looked at (the factory's badjwt token has a mangled header).

use std::borrow::Cow;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

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

/// Largest decoded JOSE header read (the factory's is about 150 bytes).
const MAX_HEADER: usize = 1024;
/// Largest signature: RSA-8192, the top of the accepted key sizes.
const MAX_SIGNATURE: usize = 1024;

/// The factory's verification keys, parsed once per fetch.
pub struct KeySet {
    /// Few (the factory publishes one): a scan beats hashing the key id.
    keys: Vec<Key>,
}

struct Key {
    kid: Option<Box<str>>,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.len()).finish()
    }
}

/// What the keys say about a well-formed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Done(Result<(), &'static str>),
    /// The token names a key id this set does not hold: a fresh JWKS may.
    UnknownKid,
}

/// One JWKS entry, as far as it is read.
#[derive(serde::Deserialize)]
struct JwkEntry {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    alg: Option<String>,
}

impl JwkEntry {
    /// The RS256 verification key of this entry, if it is one.
    fn into_key(self) -> Option<Key> {
        let signs = self.usage.as_deref().is_none_or(|u| u == "sig");
        let rs256 = self.alg.as_deref().is_none_or(|a| a == "RS256");
        if self.kty != "RSA" || !signs || !rs256 {
            return None;
        }
        let n = B64.decode(self.n?).ok()?;
        let e = B64.decode(self.e?).ok()?;
        // Big-endian without leading zeros, as aws-lc-rs wants them (RFC
        // 7518 forbids the zeros; some publishers write them anyway).
        let strip = |b: &[u8]| b.iter().position(|&x| x != 0).map(|at| b[at..].to_vec());
        let components = RsaPublicKeyComponents {
            n: strip(&n)?,
            e: strip(&e)?,
        };
        let key = components
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .ok()?;
        Some(Key {
            kid: self.kid.map(String::into_boxed_str),
            key,
        })
    }
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
        let keys: Vec<Key> = doc
            .keys
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<JwkEntry>(entry).ok()?.into_key())
            .collect();
        if keys.is_empty() {
            return Err("JWKS holds no usable RSA key".to_owned());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token` with these keys only (no fetching): `None` when its
    /// key id is not among them.
    pub fn verify(&self, token: &[u8]) -> Option<Verdict> {
        match read(token, |jws| self.check(&jws)) {
            Err(why) | Ok(Check::Done(Err(why))) => Some(Verdict::Invalid(why)),
            Ok(Check::Done(Ok(()))) => Some(Verdict::Valid),
            Ok(Check::UnknownKid) => None,
        }
    }

    /// The signature check of a token that [`read`] found well-formed.
    fn check(&self, jws: &Jws<'_, '_>) -> Check {
        let mut sig = [0u8; MAX_SIGNATURE];
        let Some(sig) = decode_into(jws.signature, &mut sig) else {
            return Check::Done(Err("malformed"));
        };
        let verify = |key: &Key| {
            key.key
                .verify_sig(jws.signed, sig)
                .map_err(|_| "bad signature")
        };
        match jws.kid.as_deref() {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(key) => Check::Done(verify(key)),
                None => Check::UnknownKid,
            },
            // No key id: keys published without one first, then the rest.
            None => {
                let anonymous = self.keys.iter().filter(|k| k.kid.is_none());
                let named = self.keys.iter().filter(|k| k.kid.is_some());
                let mut last = Err("no key without a key id");
                for key in anonymous.chain(named) {
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

/// Whether `token` is a compact JWS with `alg` RS256: the checks that need
/// no key (a token failing them is invalid whatever the keys).
pub(crate) fn well_formed(token: &[u8]) -> Result<(), &'static str> {
    read(token, |_| ())
}

/// A well-formed token, borrowed: what the signature check needs.
struct Jws<'t, 'h> {
    /// `header.payload`, the bytes the signature covers.
    signed: &'t [u8],
    /// The signature, still base64url.
    signature: &'t [u8],
    kid: Option<Cow<'h, str>>,
}

/// Splits `token`, reads its header (on the stack) and hands the parts to
/// `f`; an error says why it is not an RS256 compact JWS.
fn read<R>(token: &[u8], f: impl FnOnce(Jws<'_, '_>) -> R) -> Result<R, &'static str> {
    #[derive(serde::Deserialize)]
    struct Header<'a> {
        #[serde(borrow)]
        alg: Cow<'a, str>,
        #[serde(borrow, default)]
        kid: Option<Cow<'a, str>>,
    }
    let mut dots = memchr::memchr_iter(b'.', token);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err("not a JWS");
    };
    let mut buf = [0u8; MAX_HEADER];
    let json = decode_into(&token[..first], &mut buf).ok_or("not a JWS")?;
    // A JOSE header is an object (serde would take an array for a struct too).
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JWS");
    }
    let header: Header<'_> = serde_json::from_slice(json).map_err(|_| "not a JWS")?;
    if header.alg != "RS256" {
        return Err("not RS256");
    }
    Ok(f(Jws {
        signed: &token[..second],
        signature: &token[second + 1..],
        kid: header.kid,
    }))
}

/// Strict base64url without padding into `buf`; `None` when it is not, or
/// does not fit.
fn decode_into<'b>(b64: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    // The decoder wants room for its estimate (up to 2 bytes over).
    if b64.len() / 4 * 3 + 3 > buf.len() {
        return None;
    }
    let n = B64.decode_slice(b64, buf).ok()?;
    buf.get(..n)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chaos::testkit::{TestKey, jwks, keys, pizza_claims};

    fn set_of(keys: &[&TestKey]) -> KeySet {
        KeySet::from_jwks(jwks(keys).as_bytes()).expect("jwks")
    }

    /// `header.payload.signature` with the header replaced by `header` (JSON).
    fn with_header(token: &str, header: &str) -> String {
        let rest = &token[token.find('.').expect("a dot")..];
        format!("{}{rest}", B64.encode(header))
    }

    #[test]
    fn a_fresh_token_signed_by_the_factory_verifies() {
        let (a, b) = keys();
        let set = set_of(&[a, b]);
        for key in [a, b] {
            let token = key.sign(&pizza_claims()).expect("sign");
            assert_eq!(set.verify(token.as_bytes()), Some(Verdict::Valid));
        }
        // The factory's header shape: iat/exp/iss beside alg and kid.
        let factory = a.sign(&pizza_claims()).expect("sign");
        let header = r#"{"iat":1,"exp":2,"iss":"cs329.click","alg":"RS256","kid":"key-a"}"#;
        assert_eq!(
            set.verify(with_header(&factory, header).as_bytes()),
            Some(Verdict::Invalid("bad signature")),
            "the header is signed too"
        );
    }

    #[test]
    fn a_token_signed_by_another_key_does_not_verify() {
        let (a, b) = keys();
        let set = set_of(&[a]);
        let forged = b.sign_as(Some("key-a"), &pizza_claims()).expect("sign");
        assert_eq!(
            set.verify(forged.as_bytes()),
            Some(Verdict::Invalid("bad signature"))
        );
        let anonymous = b.sign_as(None, &pizza_claims()).expect("sign");
        assert!(matches!(
            set.verify(anonymous.as_bytes()),
            Some(Verdict::Invalid(_))
        ));
        // Another key id: unknown here, a fresh JWKS may hold it.
        let other = b.sign(&pizza_claims()).expect("sign");
        assert_eq!(set.verify(other.as_bytes()), None);
    }

    #[test]
    fn mangled_headers_and_other_algorithms_do_not_verify() {
        let (a, _) = keys();
        let set = set_of(&[a]);
        let good = a.sign(&pizza_claims()).expect("sign");
        // The factory's badjwt: the first bytes of the header overwritten.
        let badjwt = format!("deadx{}", &good[5..]);
        for (header, why) in [
            (r#"{"alg":"HS256","kid":"key-a"}"#, "not RS256"),
            (r#"{"alg":"none"}"#, "not RS256"),
            (r#"{"alg":"rs256","kid":"key-a"}"#, "not RS256"),
            (r#"{"kid":"key-a"}"#, "not a JWS"),
            (r#"{"alg":"RS256","alg":"RS256"}"#, "not a JWS"),
            (r#"["RS256"]"#, "not a JWS"),
            ("not json", "not a JWS"),
        ] {
            let token = with_header(&good, header);
            assert_eq!(
                set.verify(token.as_bytes()),
                Some(Verdict::Invalid(why)),
                "{header}"
            );
            assert_eq!(well_formed(token.as_bytes()), Err(why), "{header}");
        }
        for token in [
            badjwt.as_str(),
            "",
            "not a jwt",
            "a.b",
            "a.b.c.d",
            "..",
            &good[..good.find('.').expect("a dot")],
        ] {
            assert!(
                matches!(set.verify(token.as_bytes()), Some(Verdict::Invalid(_))),
                "{token}"
            );
            assert!(well_formed(token.as_bytes()).is_err(), "{token}");
        }
        // HS256 "signed" with the public key as the secret: refused by alg.
        let hs = format!(
            "{}.{}.{}",
            B64.encode(r#"{"alg":"HS256","kid":"key-a"}"#),
            B64.encode("{}"),
            B64.encode([7u8; 32])
        );
        assert_eq!(
            set.verify(hs.as_bytes()),
            Some(Verdict::Invalid("not RS256"))
        );
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode("{}"));
        assert_eq!(
            set.verify(none.as_bytes()),
            Some(Verdict::Invalid("not RS256"))
        );
        assert_eq!(well_formed(good.as_bytes()), Ok(()));
    }

    #[test]
    fn truncated_or_altered_signatures_and_payloads_do_not_verify() {
        let (a, _) = keys();
        let set = set_of(&[a]);
        let good = a.sign(&pizza_claims()).expect("sign");
        let cut = good.rfind('.').expect("a dot");
        let truncated = [
            &good[..good.len() - 4],
            &good[..good.len() - 1],
            &good[..cut + 1],
        ];
        for token in truncated {
            assert!(
                matches!(set.verify(token.as_bytes()), Some(Verdict::Invalid(_))),
                "{} bytes",
                token.len()
            );
        }
        // A signature too long for any key fits no buffer: malformed, no panic.
        let long = format!("{}{}", &good[..=cut], "A".repeat(4 * MAX_SIGNATURE));
        assert_eq!(
            set.verify(long.as_bytes()),
            Some(Verdict::Invalid("malformed"))
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = "eyJ4IjoxfQ";
        assert_eq!(
            set.verify(parts.join(".").as_bytes()),
            Some(Verdict::Invalid("bad signature"))
        );
        // A huge header is refused before decoding, not overflowed.
        let big = format!("{}.e30.{}", "A".repeat(8 * MAX_HEADER), &good[cut + 1..]);
        assert_eq!(
            set.verify(big.as_bytes()),
            Some(Verdict::Invalid("not a JWS"))
        );
    }

    #[test]
    fn jwks_entries_that_cannot_verify_rs256_are_skipped() {
        let (a, b) = keys();
        let mut keys = vec![
            a.jwk(),
            serde_json::json!({"kty": "EC", "kid": "ec"}),
            serde_json::json!({"kty": "RSA", "kid": "bad", "n": "!", "e": "AQAB"}),
        ];
        let mut enc = b.jwk();
        enc["use"] = "enc".into();
        keys.push(enc);
        let mut ps = b.jwk();
        ps["alg"] = "PS256".into();
        ps["kid"] = "ps".into();
        keys.push(ps);
        let doc = serde_json::json!({ "keys": keys }).to_string();
        let set = KeySet::from_jwks(doc.as_bytes()).expect("one usable key");
        assert_eq!(set.len(), 1);
        for body in ["{}", "not json", r#"{"keys":[{"kty":"EC"}]}"#] {
            assert!(KeySet::from_jwks(body.as_bytes()).is_err(), "{body}");
        }
        // Leading zero bytes in n are tolerated.
        let mut padded = a.jwk();
        let n = B64
            .decode(padded["n"].as_str().expect("n"))
            .expect("base64");
        padded["n"] = B64.encode([&[0u8][..], &n].concat()).into();
        let doc = serde_json::json!({ "keys": [padded] }).to_string();
        let set = KeySet::from_jwks(doc.as_bytes()).expect("padded n");
        let token = a.sign(&pizza_claims()).expect("sign");
        assert_eq!(set.verify(token.as_bytes()), Some(Verdict::Valid));
    }
}
