//! `Prefer: respond-async` (RFC 7240), parsed properly: a request may carry
//! several `Prefer` headers, each a comma-separated list of preferences
//! (`token [= value] *(; parameter)`), values may be quoted strings holding
//! commas, and the token is case-insensitive. Only the presence of
//! `respond-async` matters here.

use http::{HeaderMap, HeaderName};

/// The header (not among `http`'s constants); a `HeaderName` made once, so
/// the lookup on every order does not parse the name again.
pub const PREFER: HeaderName = HeaderName::from_static("prefer");
/// The answer header saying which preference was honoured.
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Whether any `Prefer` header of `headers` asks for `respond-async`.
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all(&PREFER)
        .iter()
        .any(|v| preferences(v.as_bytes()).any(|p| p.eq_ignore_ascii_case(b"respond-async")))
}

/// The preference tokens of one header value, in order.
fn preferences(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_outside_quotes(value, b',').filter_map(|item| {
        let end = item
            .iter()
            .position(|&b| b == b'=' || b == b';')
            .unwrap_or(item.len());
        let token = item.get(..end)?.trim_ascii();
        (!token.is_empty()).then_some(token)
    })
}

/// Splits on `sep` where it is not inside a quoted string (`\` escapes).
fn split_outside_quotes(value: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut pos = 0;
    let mut quoted = false;
    let mut escaped = false;
    std::iter::from_fn(move || {
        if start > value.len() {
            return None;
        }
        while pos < value.len() {
            let b = value[pos];
            pos += 1;
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == sep && !quoted {
                let item = &value[start..pos - 1];
                start = pos;
                return Some(item);
            }
        }
        let item = &value[start..];
        start = value.len() + 1;
        Some(item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(PREFER, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn respond_async_alone_or_among_others() {
        for yes in [
            &["respond-async"][..],
            &["Respond-Async"],
            &["  respond-async  "],
            &["return=minimal, respond-async"],
            &["respond-async, wait=10"],
            &["wait=10; foo=bar, RESPOND-ASYNC;x=1"],
            &["return=minimal", "respond-async"],
            &["handling=lenient,respond-async"],
            &["respond-async=\"\""],
        ] {
            assert!(wants_async(&with(yes)), "{yes:?}");
        }
    }

    #[test]
    fn lookalikes_and_quoted_commas_are_not_respond_async() {
        for no in [
            &[][..],
            &[""],
            &["respond-asynchronously"],
            &["return=minimal"],
            &["wait=\"1, respond-async\""],
            &["foo; respond-async"],
            &["x=\"a\\\", respond-async\""],
            &["not-respond-async"],
        ] {
            assert!(!wants_async(&with(no)), "{no:?}");
        }
    }

    #[test]
    fn splitting_keeps_quoted_separators() {
        let parts: Vec<&[u8]> = split_outside_quotes(b"a,\"b,c\",d", b',').collect();
        assert_eq!(parts, vec![&b"a"[..], &b"\"b,c\""[..], &b"d"[..]]);
        let parts: Vec<&[u8]> = split_outside_quotes(b"", b',').collect();
        assert_eq!(parts, vec![&b""[..]]);
    }
}
