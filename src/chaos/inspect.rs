//! Reads a factory JSON answer for what the chaos layer needs: the report
//! link(s) and the pizza `jwt`, without copying the body.
//!
//! One pass of serde_json's borrowing deserializer with a visitor that keeps
//! nothing but what matters: every string (value or key) holding
//! `/api/support/`, and the top-level `jwt`. Strings without escapes (all of
//! the factory's) are borrowed from the body, with their byte span so
//! masking can rewrite them in place; escaped ones (`\/`, `\u002f`) are
//! decoded, so an escaped link is found exactly as serde_json sees it. A
//! quick scan first (no `/api/support/` and no backslash anywhere: no link
//! can be in there) spares the per-string search on healthy answers.
//!
//! The factory's healthy answer, `{"jwt":"<token>"}` as Express writes it,
//! is recognised byte for byte first (a token of printable ASCII without
//! quotes or backslashes means exactly what serde_json would decode), which
//! spares the parse on the hot path (callgrind: ~3 000 instructions an answer).
//!
//! Why a full parse rather than a byte search for the link: the parse is
//! also the validity check. Garbage or truncated bodies are not JSON and
//! are passed on untouched, never half-rewritten; serde_json's depth limit
//! (128) keeps hostile nesting from overflowing the stack.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use memchr::memchr;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::chaos::link::{ReportLink, find_marker};

/// A string of the answer holding `/api/support/`.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    /// The decoded string.
    pub text: Cow<'a, str>,
    /// Where its content sits in the body, when written verbatim (no escapes).
    pub span: Option<Range<usize>>,
    /// It is an object key, not a value: masked, never followed.
    pub in_key: bool,
}

/// What an answer holds.
#[derive(Debug, Default)]
pub struct Inspection<'a> {
    jwt: Option<Cow<'a, str>>,
    found: Vec<Found<'a>>,
}

impl<'a> Inspection<'a> {
    /// The top-level `jwt` string.
    pub fn jwt(&self) -> Option<&str> {
        self.jwt.as_deref()
    }

    /// Every string value holding a report link, in document order.
    pub fn links(&self) -> impl Iterator<Item = &str> {
        self.found
            .iter()
            .filter(|f| !f.in_key)
            .map(|f| f.text.as_ref())
    }

    /// Whether the answer carries a report link (of any shape).
    pub fn has_link(&self) -> bool {
        self.links().next().is_some()
    }

    /// The first link of the strict, followable shape.
    pub fn report_link(&self) -> Option<ReportLink> {
        self.links().find_map(ReportLink::parse)
    }

    /// Every string that must be masked (values and keys), in document order.
    pub fn secrets(&self) -> &[Found<'a>] {
        &self.found
    }
}

/// The body is not a JSON document.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON document: {0}")]
pub struct NotJson(#[source] serde_json::Error);

/// Inspects a factory answer. Never panics; `Err` for anything but one
/// complete JSON document.
pub fn inspect(body: &[u8]) -> Result<Inspection<'_>, NotJson> {
    if let Some(jwt) = healthy_answer(body) {
        return Ok(Inspection {
            jwt: Some(Cow::Borrowed(jwt)),
            found: Vec::new(),
        });
    }
    let scan = find_marker(body).is_some() || memchr(b'\\', body).is_some();
    full_parse(body, scan).map_err(NotJson)
}

/// The whole document walked (no shortcut); `scan`: whether strings can
/// hold a link at all.
fn full_parse(body: &[u8], scan: bool) -> Result<Inspection<'_>, serde_json::Error> {
    let mut ctx = Ctx {
        base: body,
        scan,
        out: Inspection::default(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    Walk {
        ctx: &mut ctx,
        role: Role::Value,
        top: true,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(ctx.out)
}

/// The token of an answer that is exactly `{"jwt":"<token>"}` (trailing
/// whitespace allowed), its token printable ASCII (DEL included, as JSON
/// allows) with no `"`, `\\` or `/` (a JWT is base64url and dots):
/// then the parse would find that jwt and no link.
fn healthy_answer(body: &[u8]) -> Option<&str> {
    let token = healthy_shape(body)?;
    if !plain_token(token) {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// The bytes between the quotes of an answer shaped exactly
/// `{"jwt":"<token>"}` (trailing whitespace allowed), unchecked: the
/// factory's usual answer. A caller that knows these bytes as a verified
/// token (base64url and dots) knows the answer holds no link and nothing
/// to mask, without looking at them again.
pub fn healthy_shape(body: &[u8]) -> Option<&[u8]> {
    const HEAD: &[u8] = br#"{"jwt":""#;
    let rest = body.strip_prefix(HEAD)?;
    let end = memchr(b'"', rest)?;
    let (token, tail) = rest.split_at(end);
    if tail.get(1) != Some(&b'}') || !tail[2..].iter().all(|b| b" \t\r\n".contains(b)) {
        return None;
    }
    Some(token)
}

/// No byte below 0x20 (JSON forbids raw control characters in strings),
/// none above 0x7f, no `\\` (nothing escaped) and no `/` (no link can hide
/// in it). A branch-free test per 64-byte block, which the compiler turns
/// into vector compares (a JWT is several hundred bytes).
fn plain_token(bytes: &[u8]) -> bool {
    bytes.chunks(64).all(|block| {
        !block.iter().fold(false, |bad, &b| {
            bad | !(0x20..0x80).contains(&b) | (b == b'/') | (b == b'\\')
        })
    })
}

struct Ctx<'a> {
    base: &'a [u8],
    /// Whether strings can hold a link at all (see the module docs).
    scan: bool,
    out: Inspection<'a>,
}

impl<'a> Ctx<'a> {
    /// The span of a string borrowed from the body.
    fn span_of(&self, s: &'a str) -> Option<Range<usize>> {
        let start = (s.as_ptr() as usize).checked_sub(self.base.as_ptr() as usize)?;
        let end = start.checked_add(s.len())?;
        (end <= self.base.len()).then_some(start..end)
    }

    fn holds_link(&self, s: &str) -> bool {
        self.scan && find_marker(s.as_bytes()).is_some()
    }

    fn saw(
        &mut self,
        text: Cow<'a, str>,
        span: Option<Range<usize>>,
        role: Role,
        top: bool,
    ) -> Seen<'a> {
        if self.holds_link(&text) {
            self.out.found.push(Found {
                text: text.clone(),
                span,
                in_key: role == Role::Key,
            });
        }
        match role {
            Role::Jwt => Some(text),
            Role::Key if top => Some(text),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Value,
    Key,
    /// The value of the top-level `jwt` key.
    Jwt,
}

/// The string a visit yields when its caller needs it (top-level keys, jwt).
type Seen<'a> = Option<Cow<'a, str>>;

/// Walks one value. `top`: a map visited here is the document's root (for
/// keys: the key belongs to the root map).
struct Walk<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    role: Role,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = Seen<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = Seen<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        let span = self.ctx.span_of(s);
        Ok(self.ctx.saw(Cow::Borrowed(s), span, self.role, self.top))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        // Escaped (decoded into serde_json's scratch): copy only if kept.
        let keep = self.role == Role::Jwt
            || (self.role == Role::Key && self.top)
            || self.ctx.holds_link(s);
        if !keep {
            return Ok(None);
        }
        Ok(self
            .ctx
            .saw(Cow::Owned(s.to_owned()), None, self.role, self.top))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq
            .next_element_seed(Walk {
                ctx: &mut *self.ctx,
                role: Role::Value,
                top: false,
            })?
            .is_some()
        {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let top = self.top && self.role == Role::Value;
        while let Some(key) = map.next_key_seed(Walk {
            ctx: &mut *self.ctx,
            role: Role::Key,
            top,
        })? {
            let is_jwt = top && key.as_deref() == Some("jwt");
            let value = map.next_value_seed(Walk {
                ctx: &mut *self.ctx,
                role: if is_jwt { Role::Jwt } else { Role::Value },
                top: false,
            })?;
            if is_jwt {
                // Last one wins, as in serde_json::Value.
                self.ctx.out.jwt = value;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::link::MARKER;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const KEY: &str = "feedfacecafebeef0123456789abc0de";

    fn link() -> String {
        format!("https://pizza-factory.cs329.click/api/support/{KEY}/report/ab12cd34")
    }

    #[test]
    fn finds_link_and_jwt_in_factory_answers() {
        let fail = format!(r#"{{"message":"chaos monkey","reportUrl":"{}"}}"#, link());
        let i = inspect(fail.as_bytes()).expect("json");
        assert_eq!(i.links().collect::<Vec<_>>(), [link().as_str()]);
        assert_eq!(i.jwt(), None);
        let span = i.secrets()[0].span.clone().expect("verbatim");
        assert_eq!(&fail[span], link());
        assert_eq!(
            i.report_link().expect("strict").path(),
            format!("/api/support/{KEY}/report/ab12cd34")
        );

        let ok = r#"{"jwt":"eyJh.eyJw.c2ln"}"#;
        let i = inspect(ok.as_bytes()).expect("json");
        assert_eq!(i.jwt(), Some("eyJh.eyJw.c2ln"));
        assert!(!i.has_link());

        let bad = format!(r#"{{ "jwt" : "deadx.y.z" , "reportUrl" : "{}" }}"#, link());
        let i = inspect(bad.as_bytes()).expect("json");
        assert_eq!(i.jwt(), Some("deadx.y.z"));
        assert!(i.has_link());
    }

    #[test]
    fn links_anywhere_and_escaped_are_found_as_serde_json_decodes_them() {
        let escaped = link().replace('/', "\\/");
        let body = format!(r#"{{"a":[{{"b":"{escaped}"}}],"jwt":"x\u002ey"}}"#);
        let i = inspect(body.as_bytes()).expect("json");
        assert_eq!(i.links().collect::<Vec<_>>(), [link().as_str()]);
        assert!(i.secrets()[0].span.is_none());
        assert_eq!(i.jwt(), Some("x.y"));
    }

    #[test]
    fn the_usual_answer_shape_is_recognised_exactly() {
        assert_eq!(healthy_shape(b"{\"jwt\":\"a.b.c\"}\n"), Some(&b"a.b.c"[..]));
        assert_eq!(healthy_shape(b"{\"jwt\":\"\"}"), Some(&b""[..]));
        for other in [
            &b"{\"jwt\":\"a.b.c\",\"reportUrl\":\"x\"}"[..],
            b"{\"jwt\":\"a.b.c\"} x",
            b" {\"jwt\":\"a.b.c\"}",
            b"{\"jwt\":\"a.b.c",
            b"{\"jwt\":17}",
        ] {
            assert_eq!(
                healthy_shape(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn only_the_top_level_jwt_string_counts() {
        let i = inspect(br#"{"order":{"jwt":"nested"}}"#).expect("json");
        assert_eq!(i.jwt(), None);
        let i = inspect(br#"{"jwt":17}"#).expect("json");
        assert_eq!(i.jwt(), None);
        let i = inspect(br#"["jwt", {"jwt": "x"}]"#).expect("json");
        assert_eq!(i.jwt(), None);
        let i = inspect(br#"{"jwt":"a","jwt":"b"}"#).expect("json");
        assert_eq!(i.jwt(), Some("b"));
    }

    #[test]
    fn keys_with_links_are_secrets_but_not_links() {
        let body = format!(r#"{{"{}": 1}}"#, link());
        let i = inspect(body.as_bytes()).expect("json");
        assert!(!i.has_link());
        assert_eq!(i.secrets().len(), 1);
        assert!(i.secrets()[0].in_key);
    }

    #[test]
    fn garbage_truncated_and_trailing_bytes_are_not_json() {
        let l = link();
        for b in [
            "".to_owned(),
            "<html>502 Bad Gateway</html>".to_owned(),
            format!(r#"{{"reportUrl":"{l}""#),
            format!(r#"{{"reportUrl":"{l}"}} x"#),
            format!(r#"{{"reportUrl":"{l}"}}{{}}"#),
            "[".repeat(10_000),
        ] {
            assert!(inspect(b.as_bytes()).is_err(), "{b:.40}");
        }
        assert!(inspect(b"\xff\xfe{}").is_err());
    }

    /// What serde_json sees: (links in string values, top-level jwt).
    fn expected(v: &Value) -> (Vec<String>, Option<String>) {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) if s.contains(MARKER) => out.push(s.clone()),
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                Value::Object(m) => m.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut links = Vec::new();
        walk(v, &mut links);
        let jwt = v.get("jwt").and_then(Value::as_str).map(str::to_owned);
        (links, jwt)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            "[ -~]{0,12}",
            "\\PC{0,6}",
            ("[a-z]{1,6}", "[0-9a-f]{32}", "[0-9a-z]{8}")
                .prop_map(|(h, k, c)| format!("https://{h}/api/support/{k}/report/{c}")),
            Just("eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln".to_owned()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            text.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        "[a-z]{1,6}",
                        Just("jwt".to_owned()),
                        Just("reportUrl".to_owned())
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The full parse, bypassing the healthy-answer shortcut.
    fn parsed(body: &[u8]) -> Option<(Option<String>, Vec<String>)> {
        let out = full_parse(body, true).ok()?;
        let links = out.links().map(str::to_owned).collect();
        Some((out.jwt().map(str::to_owned), links))
    }

    #[test]
    fn the_healthy_shortcut_takes_only_the_exact_shape() {
        assert_eq!(healthy_answer(br#"{"jwt":"a.b.c"}"#), Some("a.b.c"));
        assert_eq!(healthy_answer(b"{\"jwt\":\"a.b.c\"}\r\n"), Some("a.b.c"));
        for other in [
            &br#"{"jwt":"a.b.c","x":1}"#[..],
            br#"{"jwt":"a.b.c"} x"#,
            br#"{"jwt":"a\".b"}"#,
            br#"{ "jwt":"a.b.c"}"#,
            br#"{"jwt":"a.b.c""#,
            b"{\"jwt\":\"a\x01b\"}",
            "{\"jwt\":\"caf\u{e9}\"}".as_bytes(),
        ] {
            assert_eq!(
                healthy_answer(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
            // ... and the full parse decides those.
        }
    }

    #[test]
    fn plain_token_is_exact() {
        for b in 0u8..=255 {
            for at in [0, 16, 63, 64, 100] {
                let mut v = vec![b'a'; 101];
                v[at] = b;
                let plain = (0x20..0x80).contains(&b) && b != b'/' && b != b'\\';
                assert_eq!(plain_token(&v), plain, "byte {b:#x} at {at}");
            }
        }
        assert!(plain_token(b""));
    }

    proptest! {
        /// The shortcut agrees with the full parse whenever it answers.
        #[test]
        fn the_healthy_shortcut_matches_the_parse(token in "[ -~]{0,80}", tail in "[ \t\r\nx}]{0,3}") {
            let body = format!(r#"{{"jwt":"{token}"}}{tail}"#);
            let fast = inspect(body.as_bytes()).ok().map(|i| (i.jwt().map(str::to_owned), i.links().map(str::to_owned).collect::<Vec<_>>()));
            prop_assert_eq!(fast, parsed(body.as_bytes()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = inspect(&bytes);
        }

        #[test]
        fn json_like_bytes_never_panic(s in "[\\[\\]{}\",:0-9a-z\\\\/ ]{0,256}") {
            let _ = inspect(s.as_bytes());
        }

        #[test]
        fn links_and_jwt_match_serde_json(v in json_value(), pretty in any::<bool>(), escape in any::<bool>()) {
            let mut text = if pretty {
                serde_json::to_string_pretty(&v).expect("json")
            } else {
                serde_json::to_string(&v).expect("json")
            };
            if escape {
                text = text.replace('/', "\\/");
            }
            let i = inspect(text.as_bytes()).expect("valid JSON is inspected");
            let (links, jwt) = expected(&v);
            prop_assert_eq!(i.links().map(str::to_owned).collect::<Vec<_>>(), links);
            prop_assert_eq!(i.jwt().map(str::to_owned), jwt);
            // A truncated copy never panics and is never accepted as the same document.
            if text.len() > 1 {
                let _ = inspect(&text.as_bytes()[..text.len() / 2]);
            }
        }

        #[test]
        fn factory_like_answers_always_yield_their_link(
            key in "[0-9a-f]{32}", code in "[0-9a-z]{8}", status_msg in "[ -!#-\\[\\]-~]{0,20}"
        ) {
            let link = format!("https://h.example/api/support/{key}/report/{code}");
            let body = json!({"message": status_msg, "reportUrl": link}).to_string();
            let i = inspect(body.as_bytes()).expect("json");
            prop_assert_eq!(i.report_link().map(|l| l.path().to_owned()),
                Some(format!("/api/support/{key}/report/{code}")));
        }
    }
}
