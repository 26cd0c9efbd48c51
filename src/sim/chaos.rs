//! The simulator's chaos: what kind is running, its fix code, and which
//! request it hits next.
//!
//! The real factory keeps one chaos record per vendor (type, fix code, start
//! date) and applies it to every order until the report link is followed with
//! the right fix code. [`ChaosState`] is that record for the simulator's one
//! vendor, plus what tests need on top: a *blip* (`count`: only the next N
//! orders are hit, then the episode ends by itself), a `Retry-After` on
//! `fail` answers, a per-episode throttle delay, `down` (no answer at all,
//! as when the factory or its load balancer is gone) and `hang` (requests
//! accepted and read, never answered while it lasts: a stuck process).
//!
//! It is a plain synchronous state machine, with no I/O and no clock, so it is
//! tested here directly; the server keeps it behind one short lock.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A chaos type as the `/sim/chaos` endpoint and `--chaos` name it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ChaosKind {
    /// No chaos: orders succeed.
    #[default]
    None,
    /// Orders get 500 `{"message": "chaos monkey", "reportUrl"}`.
    Fail,
    /// Orders wait (32 s by default), then succeed with a `reportUrl`.
    Throttle,
    /// Orders get 200 with a `jwt` that does not verify, and a `reportUrl`.
    #[value(name = "badjwt")]
    #[serde(rename = "badjwt")]
    BadJwt,
    /// Every other request's connection is closed without an answer; the
    /// others get a load balancer's 502 page. No report link anywhere.
    Down,
    /// Every request is accepted and read, and held without an answer while
    /// the episode lasts; when it ends, the held connections are closed
    /// (a stuck process restarted). No report link anywhere.
    Hang,
}

impl ChaosKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChaosKind::None => "none",
            ChaosKind::Fail => "fail",
            ChaosKind::Throttle => "throttle",
            ChaosKind::BadJwt => "badjwt",
            ChaosKind::Down => "down",
            ChaosKind::Hang => "hang",
        }
    }
}

impl fmt::Display for ChaosKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chaos name that is not one of `none|fail|throttle|badjwt|down|hang`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown chaos type {0:?} (expected none, fail, throttle, badjwt, down or hang)")]
pub struct UnknownChaosKind(String);

impl FromStr for ChaosKind {
    type Err = UnknownChaosKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(ChaosKind::None),
            "fail" => Ok(ChaosKind::Fail),
            "throttle" => Ok(ChaosKind::Throttle),
            "badjwt" => Ok(ChaosKind::BadJwt),
            "down" => Ok(ChaosKind::Down),
            "hang" => Ok(ChaosKind::Hang),
            other => Err(UnknownChaosKind(other.to_owned())),
        }
    }
}

/// What to start: the body of `PUT /sim/chaos`, and the argument of
/// `SimHandle::set_chaos`.
///
/// ```
/// use factory_sidecar::sim::ChaosSpec;
/// use std::time::Duration;
/// let blip = ChaosSpec::fail().count(2).retry_after(1);
/// let slow = ChaosSpec::throttle().delay(Duration::from_secs(2));
/// # let _ = (blip, slow);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChaosSpec {
    pub kind: ChaosKind,
    /// Only the next `count` orders are affected, then the episode ends by
    /// itself. `None`: until resolved or replaced.
    pub count: Option<u32>,
    /// `fail` answers carry `Retry-After: <seconds>`.
    pub retry_after: Option<u32>,
    /// Throttle delay for this episode (default: the simulator's
    /// `--throttle-delay`).
    pub delay: Option<Duration>,
}

impl ChaosSpec {
    pub fn new(kind: ChaosKind) -> Self {
        ChaosSpec {
            kind,
            ..ChaosSpec::default()
        }
    }
    pub fn none() -> Self {
        Self::new(ChaosKind::None)
    }
    pub fn fail() -> Self {
        Self::new(ChaosKind::Fail)
    }
    pub fn throttle() -> Self {
        Self::new(ChaosKind::Throttle)
    }
    pub fn badjwt() -> Self {
        Self::new(ChaosKind::BadJwt)
    }
    pub fn down() -> Self {
        Self::new(ChaosKind::Down)
    }
    pub fn hang() -> Self {
        Self::new(ChaosKind::Hang)
    }
    #[must_use]
    pub fn count(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }
    #[must_use]
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Parses the JSON body of `PUT /sim/chaos`:
    /// `{"type": "fail", "count": 2, "retryAfter": 1, "delay": "2s"}`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InvalidChaosSpec> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        struct Wire {
            #[serde(rename = "type")]
            kind: ChaosKind,
            count: Option<u32>,
            retry_after: Option<u32>,
            delay: Option<String>,
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| InvalidChaosSpec(e.to_string()))?;
        if wire.count == Some(0) {
            return Err(InvalidChaosSpec("count must be at least 1".into()));
        }
        let delay = match wire.delay {
            None => None,
            Some(text) => Some(
                humantime::parse_duration(&text)
                    .map_err(|e| InvalidChaosSpec(format!("delay {text:?}: {e}")))?,
            ),
        };
        Ok(ChaosSpec {
            kind: wire.kind,
            count: wire.count,
            retry_after: wire.retry_after,
            delay,
        })
    }
}

/// Why a `PUT /sim/chaos` body was refused (answered 400 with this message).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid chaos: {0}")]
pub struct InvalidChaosSpec(String);

/// The running chaos as `GET /sim/chaos` shows it: never the fix code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosStatus {
    #[serde(rename = "type")]
    pub kind: ChaosKind,
    /// Orders still to be hit by a blip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    /// Throttle delay of this episode, e.g. `"2s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Episodes started since the simulator started (so a test can tell a
    /// new episode from the old one); 0 before the first.
    pub episode: u64,
}

/// What the chaos does to one authenticated `POST /api/order`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OrderChaos {
    Fail {
        fix_code: Arc<str>,
        retry_after: Option<u32>,
    },
    Throttle {
        fix_code: Arc<str>,
        delay: Option<Duration>,
    },
    BadJwt {
        fix_code: Arc<str>,
    },
}

/// What `down` or `hang` does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DownAction {
    /// Close the connection without an answer.
    Drop,
    /// Answer like a load balancer with no healthy target.
    BadGateway,
    /// Hold it, unanswered, until the `hang` episode with this number ends;
    /// then close its connection.
    Hang(u64),
}

/// The answer to a report-link GET, as the real support route decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResolveOutcome {
    /// Right fix code: the chaos ended.
    Resolved,
    /// Chaos running, wrong fix code.
    WrongCode,
    /// Nothing to resolve (or an unknown vendor key, as the real one answers).
    NoChaos,
}

#[derive(Debug)]
struct Episode {
    kind: ChaosKind,
    fix_code: Arc<str>,
    remaining: Option<u32>,
    retry_after: Option<u32>,
    delay: Option<Duration>,
    /// Requests seen while `down`, so the first is dropped, the second gets
    /// 502, and so on, deterministically per episode.
    down_seen: u64,
}

/// How an episode ended, so the caller can log it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    No,
    /// A blip's count ran out.
    CountReached(ChaosKind),
}

/// The one vendor's chaos record.
#[derive(Debug, Default)]
pub(crate) struct ChaosState {
    episode: Option<Episode>,
    episodes_started: u64,
}

impl ChaosState {
    /// Is any chaos running (the lock-free fast path mirrors this).
    pub(crate) fn is_active(&self) -> bool {
        self.episode.is_some()
    }

    /// Starts `spec` now, replacing any running episode; `none` just ends it.
    pub(crate) fn start(&mut self, spec: &ChaosSpec, fix_code: &str) -> ChaosStatus {
        self.episode = match spec.kind {
            ChaosKind::None => None,
            kind => {
                self.episodes_started += 1;
                Some(Episode {
                    kind,
                    fix_code: Arc::from(fix_code),
                    remaining: spec.count,
                    retry_after: spec.retry_after,
                    delay: spec.delay,
                    down_seen: 0,
                })
            }
        };
        self.status()
    }

    pub(crate) fn status(&self) -> ChaosStatus {
        match &self.episode {
            None => ChaosStatus {
                kind: ChaosKind::None,
                remaining: None,
                retry_after: None,
                delay: None,
                episode: self.episodes_started,
            },
            Some(e) => ChaosStatus {
                kind: e.kind,
                remaining: e.remaining,
                retry_after: e.retry_after,
                delay: e.delay.map(|d| humantime::format_duration(d).to_string()),
                episode: self.episodes_started,
            },
        }
    }

    pub(crate) fn kind(&self) -> ChaosKind {
        self.episode.as_ref().map_or(ChaosKind::None, |e| e.kind)
    }

    /// The number of the `hang` episode running, 0 when none is: a held
    /// request waits for this to change.
    pub(crate) fn hanging(&self) -> u64 {
        if self.kind() == ChaosKind::Hang {
            self.episodes_started
        } else {
            0
        }
    }

    /// Decides what `down` or `hang` does to a request (any path but
    /// `/sim/*`), before routing: a load balancer in front of the factory
    /// knows nothing of vendors. Only orders use up a blip's count.
    pub(crate) fn on_request(&mut self, is_order: bool) -> (Option<DownAction>, Ended) {
        let hanging = self.hanging();
        let Some(episode) = self.episode.as_mut() else {
            return (None, Ended::No);
        };
        let action = match episode.kind {
            ChaosKind::Down => {
                episode.down_seen += 1;
                if episode.down_seen % 2 == 1 {
                    DownAction::Drop
                } else {
                    DownAction::BadGateway
                }
            }
            ChaosKind::Hang => DownAction::Hang(hanging),
            _ => return (None, Ended::No),
        };
        let ended = if is_order { self.use_one() } else { Ended::No };
        (Some(action), ended)
    }

    /// Decides what the chaos does to an authenticated order (after the
    /// apiKey check, before the body checks, as in the real order route).
    pub(crate) fn on_order(&mut self) -> (Option<OrderChaos>, Ended) {
        let Some(episode) = self.episode.as_ref() else {
            return (None, Ended::No);
        };
        let fix_code = Arc::clone(&episode.fix_code);
        let chaos = match episode.kind {
            ChaosKind::Fail => OrderChaos::Fail {
                fix_code,
                retry_after: episode.retry_after,
            },
            ChaosKind::Throttle => OrderChaos::Throttle {
                fix_code,
                delay: episode.delay,
            },
            ChaosKind::BadJwt => OrderChaos::BadJwt { fix_code },
            // `down` and `hang` act before routing; nothing reaches here under them.
            ChaosKind::Down | ChaosKind::Hang | ChaosKind::None => return (None, Ended::No),
        };
        (Some(chaos), self.use_one())
    }

    /// Counts one affected order against a blip; ends the episode at zero.
    fn use_one(&mut self) -> Ended {
        let Some(episode) = self.episode.as_mut() else {
            return Ended::No;
        };
        match episode.remaining {
            Some(n) if n <= 1 => {
                let kind = episode.kind;
                self.episode = None;
                Ended::CountReached(kind)
            }
            Some(n) => {
                episode.remaining = Some(n - 1);
                Ended::No
            }
            None => Ended::No,
        }
    }

    /// The support route: the right fix code ends the chaos.
    pub(crate) fn resolve(&mut self, fix_code: &str) -> ResolveOutcome {
        match &self.episode {
            None => ResolveOutcome::NoChaos,
            Some(e) if constant_time_eq(e.fix_code.as_bytes(), fix_code.as_bytes()) => {
                self.episode = None;
                ResolveOutcome::Resolved
            }
            Some(_) => ResolveOutcome::WrongCode,
        }
    }
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A fresh fix code like the real factory's: 8 characters of base 36
/// (`Math.random().toString(36).substring(2, 10)`). Not a cryptographic
/// secret there either; fastrand is enough for a simulator.
pub(crate) fn new_fix_code() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// Masks a secret for logs: `****` plus its last four characters when it is
/// long enough for those to give nothing away (apiKeys are 32 characters),
/// else `****` alone (fix codes are 8).
pub fn mask(secret: &str) -> String {
    let chars = secret.chars().count();
    if chars >= 16 {
        let tail: String = secret.chars().skip(chars - 4).collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(c: &OrderChaos) -> &str {
        match c {
            OrderChaos::Fail { fix_code, .. }
            | OrderChaos::Throttle { fix_code, .. }
            | OrderChaos::BadJwt { fix_code } => fix_code,
        }
    }

    #[test]
    fn no_chaos_touches_nothing() {
        let mut s = ChaosState::default();
        assert_eq!(s.on_order(), (None, Ended::No));
        assert_eq!(s.on_request(true), (None, Ended::No));
        assert_eq!(s.resolve("anything"), ResolveOutcome::NoChaos);
        assert_eq!(s.status().kind, ChaosKind::None);
        assert_eq!(s.status().episode, 0);
    }

    #[test]
    fn fail_hits_every_order_until_resolved_with_the_right_code() {
        let mut s = ChaosState::default();
        s.start(&ChaosSpec::fail().retry_after(3), "abc12345");
        for _ in 0..5 {
            let (c, ended) = s.on_order();
            let c = c.expect("chaos");
            assert_eq!(fix(&c), "abc12345");
            assert!(matches!(
                c,
                OrderChaos::Fail {
                    retry_after: Some(3),
                    ..
                }
            ));
            assert_eq!(ended, Ended::No);
        }
        assert_eq!(s.resolve("abc12346"), ResolveOutcome::WrongCode);
        assert_eq!(s.resolve("abc1234"), ResolveOutcome::WrongCode);
        assert!(s.is_active());
        assert_eq!(s.resolve("abc12345"), ResolveOutcome::Resolved);
        assert!(!s.is_active());
        assert_eq!(s.resolve("abc12345"), ResolveOutcome::NoChaos);
        assert_eq!(s.on_order(), (None, Ended::No));
    }

    #[test]
    fn a_blip_ends_by_itself_after_count_orders() {
        let mut s = ChaosState::default();
        let status = s.start(&ChaosSpec::badjwt().count(2), "zzzzzzzz");
        assert_eq!(status.remaining, Some(2));
        assert_eq!(s.on_order().1, Ended::No);
        assert_eq!(s.status().remaining, Some(1));
        let (c, ended) = s.on_order();
        assert!(matches!(c, Some(OrderChaos::BadJwt { .. })));
        assert_eq!(ended, Ended::CountReached(ChaosKind::BadJwt));
        assert_eq!(s.on_order(), (None, Ended::No));
        assert_eq!(s.status().kind, ChaosKind::None);
        assert_eq!(s.status().episode, 1);
    }

    #[test]
    fn down_drops_every_other_request_and_counts_only_orders() {
        let mut s = ChaosState::default();
        s.start(&ChaosSpec::down().count(2), "dddddddd");
        assert_eq!(
            s.on_order(),
            (None, Ended::No),
            "down is decided before routing"
        );
        assert_eq!(s.on_request(false), (Some(DownAction::Drop), Ended::No));
        assert_eq!(
            s.on_request(true),
            (Some(DownAction::BadGateway), Ended::No)
        );
        assert_eq!(
            s.on_request(true),
            (Some(DownAction::Drop), Ended::CountReached(ChaosKind::Down))
        );
        assert_eq!(s.on_request(true), (None, Ended::No));
    }

    #[test]
    fn hang_holds_every_request_of_its_episode() {
        let mut s = ChaosState::default();
        assert_eq!(s.hanging(), 0);
        s.start(&ChaosSpec::hang().count(2), "hhhhhhhh");
        let episode = s.hanging();
        assert_eq!(episode, 1);
        assert_eq!(
            s.on_request(false),
            (Some(DownAction::Hang(episode)), Ended::No)
        );
        assert_eq!(
            s.on_request(true),
            (Some(DownAction::Hang(episode)), Ended::No)
        );
        assert_eq!(
            s.on_request(true),
            (
                Some(DownAction::Hang(episode)),
                Ended::CountReached(ChaosKind::Hang)
            )
        );
        assert_eq!(s.hanging(), 0, "over: the held requests are let go");
        assert_eq!("hang".parse::<ChaosKind>().expect("known"), ChaosKind::Hang);
        assert_eq!(
            ChaosSpec::from_json(br#"{"type":"hang"}"#).expect("valid"),
            ChaosSpec::hang()
        );
    }

    #[test]
    fn a_new_episode_replaces_the_old_one_and_its_code() {
        let mut s = ChaosState::default();
        s.start(&ChaosSpec::fail(), "oldoldol");
        let st = s.start(
            &ChaosSpec::throttle().delay(Duration::from_secs(2)),
            "newnewne",
        );
        assert_eq!(st.kind, ChaosKind::Throttle);
        assert_eq!(st.delay.as_deref(), Some("2s"));
        assert_eq!(st.episode, 2);
        assert_eq!(s.resolve("oldoldol"), ResolveOutcome::WrongCode);
        assert_eq!(s.resolve("newnewne"), ResolveOutcome::Resolved);
        s.start(&ChaosSpec::fail(), "x");
        s.start(&ChaosSpec::none(), "y");
        assert!(!s.is_active());
        assert_eq!(s.status().episode, 3, "none starts no episode");
    }

    #[test]
    fn spec_json_round_trip_and_errors() {
        let spec = ChaosSpec::from_json(br#"{"type":"throttle","count":3,"delay":"250ms"}"#)
            .expect("valid");
        assert_eq!(
            spec,
            ChaosSpec::throttle()
                .count(3)
                .delay(Duration::from_millis(250))
        );
        let spec = ChaosSpec::from_json(br#"{"type":"fail","retryAfter":2}"#).expect("valid");
        assert_eq!(spec, ChaosSpec::fail().retry_after(2));
        assert_eq!(
            ChaosSpec::from_json(br#"{"type":"badjwt"}"#)
                .expect("valid")
                .kind,
            ChaosKind::BadJwt
        );
        for bad in [
            &br#"{"type":"explode"}"#[..],
            br#"{"type":"fail","count":0}"#,
            br#"{"type":"fail","delay":"soon"}"#,
            br#"{"type":"fail","colour":"red"}"#,
            br#"{"count":1}"#,
            b"not json",
        ] {
            assert!(
                ChaosSpec::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn fix_codes_look_like_the_real_ones() {
        let a = new_fix_code();
        assert_eq!(a.len(), 8);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_ne!(
            a,
            new_fix_code(),
            "36^8 codes: a repeat means no randomness"
        );
    }

    #[test]
    fn masking_keeps_at_most_the_tail_of_long_secrets() {
        assert_eq!(mask("feedfacecafebeef0123456789abcdef"), "****cdef");
        assert_eq!(mask("abc12345"), "****");
        assert_eq!(mask(""), "****");
        assert_eq!("fail".parse::<ChaosKind>().expect("known"), ChaosKind::Fail);
        assert!("FAIL".parse::<ChaosKind>().is_err());
    }
}
