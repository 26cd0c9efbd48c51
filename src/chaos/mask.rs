//! Masking report links: the apiKey keeps its last four characters, the fix
//! code none, e.g. `https://host/api/support/****c0de/report/****`.
//!
//! Why: the link carries the vendor's apiKey, and the pizza service hands
//! every link it gets to every diner; with the key anyone can order as the
//! vendor or schedule chaos for it. So no log line, metric, admin answer or
//! (by default) body passed back to the service holds a link in clear. The
//! last four characters of a 32-character key are enough for an operator to
//! tell vendors apart and give nothing usable away; shorter keys are masked
//! whole.
//!
//! Masking is deliberately lenient about what a link is (any text with
//! `/api/support/`): everything after the key is dropped, so a second link,
//! a query string or an odd shape cannot leak through.

use std::fmt;
use std::io::Write as _;

use bytes::Bytes;
use memchr::memmem;

use crate::chaos::inspect::{Inspection, inspect};
use crate::chaos::link::{MARKER, MaskedKey, find_marker};

/// Keys at least this long are also masked where the text repeats them
/// before the link.
const MIN_QUOTED_KEY: usize = 8;

/// Shows a text with any report link in it masked, without allocating:
/// `tracing::warn!(link = %Masked(url), ...)`.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let Some(at) = find_marker(s.as_bytes()) else {
            return f.write_str(s);
        };
        let head_end = at + MARKER.len();
        let rest = &s[head_end..];
        let key_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let key = &rest[..key_len];
        // The key written again before the link (a message quoting it) is
        // masked too; short segments are not keys and are left alone.
        let mut head = &s[..head_end];
        if key.len() >= MIN_QUOTED_KEY {
            while let Some(i) = memmem::find(head.as_bytes(), key.as_bytes()) {
                f.write_str(&head[..i])?;
                MaskedKey(key).fmt(f)?;
                head = &head[i + key.len()..];
            }
        }
        f.write_str(head)?;
        MaskedKey(key).fmt(f)?;
        let after = &rest[key_len..];
        if after.starts_with("/report/") {
            f.write_str("/report/****")
        } else if !after.is_empty() {
            f.write_str("/****")
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// The masked form of a text that may hold a report link.
pub fn mask_link(link: &str) -> String {
    Masked(link).to_string()
}

/// `body` with every report link in it masked; the body itself when it is
/// not JSON or holds no link. JSON stays valid; the caller fixes
/// Content-Length.
pub fn redact(body: &Bytes) -> Bytes {
    match inspect(body) {
        Ok(found) => redact_with(body, &found).unwrap_or_else(|| body.clone()),
        Err(_) => body.clone(),
    }
}

/// Like [`redact`] for a body already inspected: `None` when nothing needs
/// masking.
///
/// Strings written without escapes (the factory's case) are masked in
/// place, the rest of the bytes copied once; otherwise the document is
/// parsed into a `serde_json::Value`, masked and written again (valid JSON,
/// formatting not kept).
pub fn redact_with(body: &[u8], found: &Inspection<'_>) -> Option<Bytes> {
    let secrets = found.secrets();
    if secrets.is_empty() {
        return None;
    }
    if let Some(spans) = secrets
        .iter()
        .map(|s| s.span.clone())
        .collect::<Option<Vec<_>>>()
    {
        let mut out = Vec::with_capacity(body.len());
        let mut pos = 0;
        for (span, s) in spans.into_iter().zip(secrets) {
            // Spans come in document order and never overlap.
            out.extend_from_slice(body.get(pos..span.start)?);
            // The text is the verbatim string content: no quote, backslash or
            // control character, so its masked form is JSON-safe as is.
            let _ = write!(out, "{}", Masked(&s.text));
            pos = span.end;
        }
        out.extend_from_slice(body.get(pos..)?);
        return Some(Bytes::from(out));
    }
    let mut value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            // Unreachable in practice: `inspect` accepted the same bytes.
            tracing::error!(error = %e, "cannot re-read an inspected answer to mask it");
            return Some(Bytes::from_static(br#"{"message":"masked"}"#));
        }
    };
    mask_value(&mut value);
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

fn mask_value(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains(MARKER) => *s = mask_link(s),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains(MARKER)) {
                let old = std::mem::take(map);
                for (k, mut val) in old {
                    mask_value(&mut val);
                    let k = if k.contains(MARKER) { mask_link(&k) } else { k };
                    map.insert(k, val);
                }
            } else {
                map.values_mut().for_each(mask_value);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "feedfacecafebeef0123456789abc0de";

    #[test]
    fn masks_key_to_its_tail_and_code_whole() {
        assert_eq!(
            mask_link(&format!("https://host/api/support/{KEY}/report/ab12cd34")),
            "https://host/api/support/****c0de/report/****"
        );
        assert_eq!(
            mask_link("/api/support/short/report/x"),
            "/api/support/****/report/****"
        );
        assert_eq!(
            mask_link(&format!("https://h/api/support/{KEY}?k={KEY}")),
            "https://h/api/support/****c0de/****"
        );
        assert_eq!(
            mask_link(&format!("https://h/api/support/{KEY}")),
            "https://h/api/support/****c0de"
        );
        assert_eq!(mask_link("no link here"), "no link here");
        let two = format!("a /api/support/{KEY}/report/c1 b /api/support/{KEY}/report/c2");
        assert_eq!(mask_link(&two), "a /api/support/****c0de/report/****");
        // The key quoted before the link is masked as well.
        assert_eq!(
            mask_link(&format!(
                "vendor {KEY}: https://h/api/support/{KEY}/report/c"
            )),
            "vendor ****c0de: https://h/api/support/****c0de/report/****"
        );
        // A key with odd characters is masked whole.
        assert_eq!(
            mask_link("/api/support/ab\"cdefghijklmnopqrstuvw/report/c"),
            "/api/support/****/report/****"
        );
        assert_eq!(
            format!("{:?}", Masked("/api/support/k/report/c")),
            "\"/api/support/****/report/****\""
        );
    }

    #[test]
    fn redaction_keeps_json_valid_in_place_and_through_the_fallback() {
        let link = format!("https://pizza.example/api/support/{KEY}/report/ab12cd34");
        let body = Bytes::from(format!(
            r#"{{"message": "chaos monkey", "reportUrl": "{link}", "n": [1, {{"x": "{link}"}}]}}"#
        ));
        // Redacted: no key or code left, still JSON, the link masked.
        let redacted = |body: &Bytes| {
            let out = redact(body);
            let text = String::from_utf8(out.to_vec()).expect("utf8");
            assert!(!text.contains(KEY) && !text.contains("ab12cd34"));
            let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(
                v["reportUrl"],
                "https://pizza.example/api/support/****c0de/report/****"
            );
            (text, v)
        };
        let (text, v) = redacted(&body);
        assert_eq!(v["n"][1]["x"], v["reportUrl"]);
        assert_eq!(v["message"], "chaos monkey");
        // Formatting kept: only the links changed.
        assert!(text.starts_with(r#"{"message": "chaos monkey", "reportUrl": "https://"#));

        let escaped = Bytes::from(body.to_vec().iter().fold(Vec::new(), |mut acc, &b| {
            if b == b'/' {
                acc.extend_from_slice(b"\\/");
            } else {
                acc.push(b);
            }
            acc
        }));
        redacted(&escaped);
    }

    #[test]
    fn keys_holding_links_are_masked_too() {
        let body = Bytes::from(format!(r#"{{"/api/support/{KEY}/report/zz": 1}}"#));
        let out = redact(&body);
        assert!(!String::from_utf8_lossy(&out).contains(KEY));
        serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON");
    }

    #[test]
    fn non_json_and_linkless_bodies_are_returned_as_they_are() {
        for b in [
            &b"<html>/api/support/k/report/c</html>"[..],
            br#"{"jwt":"a.b.c"}"#,
            br#"{"reportUrl": "https://h/api/support/k/report/c""#,
            b"",
        ] {
            let body = Bytes::copy_from_slice(b);
            assert_eq!(redact(&body), body);
        }
    }

    fn key() -> impl Strategy<Value = String> {
        "[0-9a-f]{32}|[A-Za-z0-9_-]{6,40}"
    }

    proptest! {
        #[test]
        fn masked_links_never_hold_key_or_code(
            key in key(),
            code in "[0-9a-z]{6,12}",
            host in "[a-z]{1,8}(\\.[a-z]{2,5})?(:[0-9]{1,5})?",
            tail in "(\\?[a-z=&]{0,8})?",
            quote in any::<bool>(),
        ) {
            // Sometimes the text quotes the key before the link as well.
            let pre = if quote && key.len() >= MIN_QUOTED_KEY {
                format!("vendor {key} at ")
            } else {
                String::new()
            };
            let link = format!("{pre}https://{host}/api/support/{key}/report/{code}{tail}");
            let skeleton = format!(
                r#"{{"message":"chaos monkey","reportUrl":"https://{host}/api/support/****/report/****","list":["deep"]}}"#
            );
            prop_assume!(!skeleton.contains(&code) && !skeleton.contains(&key));
            prop_assume!(!"vendor at".contains(&code) && !"vendor at".contains(&key));
            let masked = mask_link(&link);
            prop_assert!(!masked.contains(&key), "{masked}");
            prop_assert!(!masked.contains(&code), "{masked}");

            let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
                "message": "chaos monkey", "reportUrl": link, "list": [link, {"deep": link}]
            })).expect("json"));
            let out = redact(&body);
            let text = String::from_utf8_lossy(&out);
            prop_assert!(!text.contains(&key));
            prop_assert!(!text.contains(&code));
            let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            prop_assert_eq!(v["reportUrl"].as_str(), Some(masked.as_str()));
        }
    }
}
