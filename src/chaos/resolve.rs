//! Following a report link: one `GET` of the link's *path* to the configured
//! upstream, and what the factory's answer means.
//!
//! Why the path only: the factory writes the link from the order's `Host`
//! header (behind a sidecar or in a test it points where nothing listens),
//! and an answer must never be able to steer the sidecar at another host.
//! Only links of the strict support-link shape exist as [`ReportLink`], so
//! nothing else can be requested. When and how often to follow (cooldown,
//! single flight, auto or manual) is the episode registry's decision; this
//! module only asks and classifies.

use std::sync::Arc;

use http::StatusCode;
use serde::Serialize;

use crate::chaos::ResolveResult;
use crate::chaos::link::ReportLink;
use crate::chaos::mask::mask_link;
use crate::chaos::side::SideChannel;

/// Largest support answer read (the real one is a one-line message).
const ANSWER_MAX_BYTES: usize = 4096;
/// Longest factory message kept for `/status`.
const MESSAGE_MAX_CHARS: usize = 200;

/// What the factory said to a report-link GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FactoryAnswer {
    pub result: ResolveResult,
    /// The factory's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its `message` (or why there was no answer), links masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Classifies a support answer: "Problem resolved" or "No chaos currently
/// executing" with 200 means the chaos is over; 400 means the fix code was
/// refused; anything else is an error.
pub fn classify(status: StatusCode, body: &[u8]) -> FactoryAnswer {
    #[derive(serde::Deserialize)]
    struct Message {
        message: Option<String>,
    }
    let message = serde_json::from_slice::<Message>(body)
        .ok()
        .and_then(|m| m.message)
        .map(|m| clip(&mask_link(&m)));
    let said = |text: &str| message.as_deref().is_some_and(|m| m.contains(text));
    let result = match status {
        StatusCode::OK if said("Problem resolved") || said("No chaos currently executing") => {
            ResolveResult::Resolved
        }
        StatusCode::BAD_REQUEST => ResolveResult::Unresolved,
        _ => ResolveResult::Error,
    };
    FactoryAnswer {
        result,
        status: Some(status.as_u16()),
        message,
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MESSAGE_MAX_CHARS).collect()
}

/// Sends report-link GETs through the side channel.
#[derive(Debug, Clone)]
pub struct Resolver {
    side: Arc<SideChannel>,
}

impl Resolver {
    pub fn new(side: Arc<SideChannel>) -> Resolver {
        Resolver { side }
    }

    /// `GET <link path>` to the upstream; never fails, the outcome says how it went.
    pub async fn follow(&self, link: &ReportLink) -> FactoryAnswer {
        match self.side.get(link.path(), ANSWER_MAX_BYTES).await {
            Ok(answer) => classify(answer.status, &answer.body),
            Err(e) => FactoryAnswer {
                result: ResolveResult::Error,
                status: None,
                message: Some(clip(&mask_link(&e.to_string()))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use http::Response;
    use parking_lot::Mutex;

    use crate::boxed::BoxError;
    use crate::chaos::side::SideService;
    use crate::proxy::body::ProxyBody;

    #[test]
    fn classifies_the_factory_answers() {
        let c = |s: u16, b: &str| {
            classify(StatusCode::from_u16(s).expect("status"), b.as_bytes()).result
        };
        assert_eq!(
            c(
                200,
                r#"{"message":"Problem resolved. Pizza is back on the menu!"}"#
            ),
            ResolveResult::Resolved
        );
        assert_eq!(
            c(200, r#"{"message":"No chaos currently executing"}"#),
            ResolveResult::Resolved
        );
        assert_eq!(
            c(400, r#"{"message":"Problem unresolved"}"#),
            ResolveResult::Unresolved
        );
        assert_eq!(c(400, "garbage"), ResolveResult::Unresolved);
        assert_eq!(
            c(200, r#"{"message":"something else"}"#),
            ResolveResult::Error
        );
        assert_eq!(c(200, "<html>"), ResolveResult::Error);
        assert_eq!(
            c(404, r#"{"message":"unknown endpoint"}"#),
            ResolveResult::Error
        );
        assert_eq!(c(502, ""), ResolveResult::Error);
        let a = classify(
            StatusCode::OK,
            br#"{"message":"see https://h/api/support/feedfacecafebeef0123456789abc0de/report/x"}"#,
        );
        assert_eq!(
            a.message.as_deref(),
            Some("see https://h/api/support/****c0de/report/****")
        );
    }

    #[tokio::test]
    async fn follows_the_path_to_the_upstream_never_the_links_host() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&seen);
        let side = Arc::new(SideChannel::new(Duration::from_secs(1)));
        side.attach(SideService::new(tower::service_fn(
            move |req: crate::proxy::Outgoing| {
                log.lock().push(req.uri().to_string());
                async {
                    Ok::<_, BoxError>(Response::new(ProxyBody::full(
                        r#"{"message":"Problem resolved. Pizza is back on the menu!"}"#,
                    )))
                }
            },
        )));
        let r = Resolver::new(side);
        let link =
            ReportLink::parse("https://evil.example:6666/api/support/k/report/c").expect("link");
        let a = r.follow(&link).await;
        assert_eq!(a.result, ResolveResult::Resolved);
        assert_eq!(a.status, Some(200));
        assert_eq!(*seen.lock(), ["/api/support/k/report/c"]);
    }

    #[tokio::test]
    async fn transport_errors_are_errors_with_a_masked_reason() {
        let side = Arc::new(SideChannel::new(Duration::from_secs(1)));
        side.attach(SideService::new(tower::service_fn(
            |req: crate::proxy::Outgoing| async move {
                Err::<Response<ProxyBody>, BoxError>(format!("refused for {}", req.uri()).into())
            },
        )));
        let link =
            ReportLink::parse("/api/support/feedfacecafebeef0123456789abc0de/report/c0dec0de")
                .expect("link");
        let a = Resolver::new(side).follow(&link).await;
        assert_eq!(a.result, ResolveResult::Error);
        assert_eq!(a.status, None);
        let m = a.message.expect("reason");
        assert!(
            !m.contains("feedfacecafebeef0123456789abc0de") && !m.contains("c0dec0de"),
            "{m}"
        );
    }
}
