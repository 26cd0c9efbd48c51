//! The report link's shape: `https://<host>/api/support/<apiKey>/report/<fixCode>`.
//!
//! Two levels, on purpose. *Finding* a link for masking is lenient: any text
//! holding `/api/support/` is treated as one, so nothing that might carry the
//! vendor's apiKey slips through unmasked. *Following* a link is strict: only
//! a path of exactly `/api/support/<segment>/report/<segment>`, segments of
//! `[A-Za-z0-9_-]` and bounded length, becomes a [`ReportLink`]. That rules
//! out `..`, `?`, `%`-escapes, fragments and extra segments, so an answer
//! can never make the sidecar request anything but a support path. The host
//! written in the link is dropped: links are followed by path, to the
//! configured upstream only.

use std::fmt;

/// What marks a report link inside any text.
pub const MARKER: &str = "/api/support/";

/// A prebuilt searcher for [`MARKER`]: `memmem::find` builds one per call,
/// which costs more than the search on a body of a few hundred bytes.
pub fn find_marker(haystack: &[u8]) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARKER));
    FINDER.find(haystack)
}

const REPORT: &str = "/report/";

/// Longest apiKey or fix code accepted (real ones are 32 and 8 characters).
const MAX_SEGMENT: usize = 128;

/// A report link of the strict support-link shape: safe to follow by path.
///
/// Its `Debug` and `Display` are masked: the raw path only leaves through
/// [`ReportLink::path`], for the one request that follows it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReportLink {
    /// `/api/support/<key>/report/<code>`.
    path: Box<str>,
    /// Byte length of `<key>`.
    key_len: usize,
}

impl ReportLink {
    /// Parses a link as an answer writes it: an absolute `http(s)://` URL or
    /// a bare path. `None` unless the path has the strict shape.
    pub fn parse(link: &str) -> Option<ReportLink> {
        let path = if link.starts_with('/') {
            link
        } else {
            let rest = link
                .strip_prefix("https://")
                .or_else(|| link.strip_prefix("http://"))?;
            let slash = rest.find('/')?;
            let authority = &rest[..slash];
            if authority.is_empty() || authority.contains(['?', '#', '\\', '@']) {
                return None;
            }
            &rest[slash..]
        };
        Self::from_path(path)
    }

    /// Parses an origin-form path of the strict shape.
    pub fn from_path(path: &str) -> Option<ReportLink> {
        let rest = path.strip_prefix(MARKER)?;
        let key_len = rest.find('/')?;
        let (key, rest) = rest.split_at(key_len);
        let code = rest.strip_prefix(REPORT)?;
        (valid_segment(key) && valid_segment(code)).then(|| ReportLink {
            path: path.into(),
            key_len,
        })
    }

    /// The path to request from the upstream (contains the secrets).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn key(&self) -> &str {
        &self.path[MARKER.len()..MARKER.len() + self.key_len]
    }

    /// The masked form, e.g. `/api/support/****c0de/report/****`.
    pub fn masked(&self) -> String {
        self.to_string()
    }
}

/// `[A-Za-z0-9_-]{1,128}`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Keys at least this long keep their last four characters.
const SHOW_TAIL_FROM: usize = 16;

/// A secret segment shown as `****` plus, for long plain keys, its last four
/// characters.
pub(crate) struct MaskedKey<'a>(pub &'a str);

impl fmt::Display for MaskedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.0.as_bytes();
        let plain = k.iter().all(|b| b.is_ascii_alphanumeric());
        if plain && k.len() >= SHOW_TAIL_FROM {
            // ASCII only, so any byte index is a char boundary.
            write!(f, "****{}", &self.0[self.0.len() - 4..])
        } else {
            f.write_str("****")
        }
    }
}

impl fmt::Display for ReportLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MARKER}{}{REPORT}****", MaskedKey(self.key()))
    }
}

impl fmt::Debug for ReportLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReportLink")
            .field(&format_args!("{self}"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "feedfacecafebeef0123456789abc0de";

    #[test]
    fn parses_absolute_links_and_bare_paths() {
        let l = ReportLink::parse(&format!(
            "https://pizza.example/api/support/{KEY}/report/ab12cd34"
        ))
        .expect("link");
        assert_eq!(l.path(), format!("/api/support/{KEY}/report/ab12cd34"));
        let p = ReportLink::parse(&format!("/api/support/{KEY}/report/x")).expect("path");
        assert_eq!(p.path(), format!("/api/support/{KEY}/report/x"));
        let h = ReportLink::parse("http://127.0.0.1:3001/api/support/k/report/c").expect("http");
        assert_eq!(h.path(), "/api/support/k/report/c");
    }

    #[test]
    fn rejects_everything_but_the_strict_shape() {
        for bad in [
            "/api/support/../x",
            "/api/support/../report/x",
            "/api/support/k/report/../../admin",
            "/api/support/k/report/c?x=1",
            "/api/support/k/report/c#f",
            "/api/support/k/report/c/",
            "/api/support/k/report/c/extra",
            "/api/support/k/report/",
            "/api/support//report/c",
            "/api/support/k%2f/report/c",
            "/api/support/k/report/c%20",
            "/api/support/k/resolve/c",
            "/api/support/k",
            "/api/supportx/k/report/c",
            "/api/order",
            "https:///api/support/k/report/c",
            "https://user@evil/api/support/k/report/c",
            "ftp://h/api/support/k/report/c",
            "https://h/prefix/api/support/k/report/c",
            "api/support/k/report/c",
            "",
        ] {
            assert!(ReportLink::parse(bad).is_none(), "{bad} must be rejected");
        }
        let long = "a".repeat(MAX_SEGMENT + 1);
        assert!(ReportLink::from_path(&format!("/api/support/{long}/report/c")).is_none());
        assert!(ReportLink::from_path(&format!("/api/support/k/report/{long}")).is_none());
    }

    #[test]
    fn display_and_debug_are_masked() {
        let l = ReportLink::parse(&format!("https://h/api/support/{KEY}/report/ab12cd34"))
            .expect("link");
        let shown = format!("{l} {l:?} {}", l.masked());
        assert!(!shown.contains(KEY));
        assert!(!shown.contains("ab12cd34"));
        assert_eq!(l.to_string(), "/api/support/****c0de/report/****");
    }
}
