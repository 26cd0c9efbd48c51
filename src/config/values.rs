//! Config value types that validate themselves while the file is read, so a
//! bad value is reported at its own `line:col`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The factory's base URL: `http` or `https`, a host, no query or fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Base path without a trailing slash ("" for the root).
    base_path: String,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => http::uri::Scheme::HTTP,
            Some("https") => http::uri::Scheme::HTTPS,
            Some(other) => return Err(format!("URL scheme must be http or https, not {other:?}")),
            None => return Err(format!("URL {s:?} needs a scheme (http:// or https://)")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("URL {s:?} has no host"))?;
        if authority.host().is_empty() {
            return Err(format!("URL {s:?} has no host"));
        }
        if authority.as_str().contains('@') {
            return Err("URL must not carry credentials".to_owned());
        }
        if uri.query().is_some() || s.contains('#') {
            return Err("URL must not have a query or fragment".to_owned());
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }

    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }
    pub fn host(&self) -> &str {
        self.authority.host()
    }
    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
    /// The port, the scheme's default when none is written.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }
    /// Path prefix put before every forwarded path ("" for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a request path-and-query (which starts with `/`).
    #[cfg(test)]
    pub fn join(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        let mut pq = String::with_capacity(self.base_path.len() + path_and_query.len());
        pq.push_str(&self.base_path);
        pq.push_str(path_and_query);
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A whole percentage, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Percent(pub(super) u8);

impl Percent {
    pub fn new(value: u8) -> Option<Self> {
        (value <= 100).then_some(Self(value))
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u8::try_from(v)
            .ok()
            .and_then(Percent::new)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a percentage (0 to 100)")))
    }
}

/// A secret (token, apiKey). Debug and serialization never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"****\""
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "****" })
    }
}

/// Human durations: `"250ms"`, `"5s"`, `"1m"`.
pub mod duration {
    use super::*;

    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write e.g. \"250ms\", \"5s\", \"1m\"")
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }
}

/// An optional path where `""` means none.
pub(super) mod optional_path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
    }

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.collect_str(&p.display()),
            None => s.serialize_str(""),
        }
    }
}

pub(super) fn attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(n @ 1..=10) => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "max_attempts must be between 1 and 10, not {v}"
        ))),
    }
}

pub(super) fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if let Some(bad) = v.iter().find(|p| !p.starts_with('/')) {
        return Err(serde::de::Error::custom(format!(
            "path {bad:?} must start with '/'"
        )));
    }
    Ok(v)
}

/// The levels `[log] level` accepts, alone or as `target=level`.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `[log] level` value: a level, optionally followed by
/// comma-separated `target=level` directives (`info,hyper=warn`). Anything
/// else is refused: `tracing`'s own parser takes an unknown word such as
/// `verbose` as a *target* name and then logs nothing at all.
pub fn check_log_level(s: &str) -> Result<(), String> {
    let known = |level: &str| LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
    let valid_target = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
    };
    let bad = |what: String| {
        Err(format!(
            "invalid log level {s:?}: {what}; use one of {} (optionally followed by \
             target=level directives, e.g. \"info,factory_sidecar::access=off\")",
            LOG_LEVELS.join(", ")
        ))
    };
    if s.trim().is_empty() {
        return bad("it is empty".to_owned());
    }
    for directive in s.split(',').map(str::trim) {
        match directive.split_once('=') {
            None if known(directive) => {}
            None => return bad(format!("{directive:?} is not a level")),
            Some((target, level)) if valid_target(target.trim()) && known(level) => {}
            Some((target, _)) if !valid_target(target.trim()) => {
                return bad(format!("{target:?} is not a target (a module path)"));
            }
            Some((_, level)) => return bad(format!("{level:?} is not a level")),
        }
    }
    Ok(())
}

pub(super) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_log_level(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::check_log_level;

    #[test]
    fn only_known_levels_and_target_directives_pass() {
        for ok in [
            "info",
            "WARN",
            "off",
            "info,hyper=warn",
            "debug, factory_sidecar::access=off",
            "error,h2=off,tower-http=trace",
        ] {
            assert_eq!(check_log_level(ok), Ok(()), "{ok}");
        }
        for bad in [
            "verbose",
            "",
            "info,",
            "info,hyper",
            "info,=warn",
            "info,hyper=loud",
            "info,a[span]=debug",
        ] {
            let e = check_log_level(bad).expect_err(bad);
            assert!(e.contains("trace, debug, info, warn, error, off"), "{e}");
        }
    }
}
