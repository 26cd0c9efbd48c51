//! Side requests to the factory (the JWKS, report-link GETs) through a clone
//! of the innermost service.
//!
//! Why through the inner service rather than a client of our own: it is
//! the one place that knows the upstream (URL, TLS, pool), and it takes
//! origin-form requests only, so a side request names a *path* and can
//! never be steered at another host by what an answer says. The service is
//! attached when the chaos layer is put on the stack; until then side
//! requests fail with [`SideError::NotAttached`].

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::boxed::BoxError;
use crate::chaos::buffer::{Buffered, read_limited};
use crate::chaos::mask::mask_link;
use crate::proxy::Outgoing;
use crate::proxy::body::ProxyBody;

/// The innermost service, boxed: origin-form request in, factory answer out.
pub type SideService = BoxCloneSyncService<Outgoing, Response<ProxyBody>, BoxError>;

/// How long a side request (answer and body) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A side request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    #[error("the chaos layer is not on a stack yet")]
    NotAttached,
    #[error("not an origin-form path")]
    BadPath,
    /// Masked: the cause may name the requested path.
    #[error("no answer: {0}")]
    Transport(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// A factory answer to a side request.
#[derive(Debug, Clone)]
pub struct SideAnswer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// See the module docs.
pub struct SideChannel {
    svc: OnceLock<SideService>,
    timeout: Duration,
}

impl Default for SideChannel {
    fn default() -> Self {
        SideChannel::new(DEFAULT_TIMEOUT)
    }
}

impl std::fmt::Debug for SideChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideChannel")
            .field("attached", &self.svc.get().is_some())
            .finish()
    }
}

impl SideChannel {
    pub fn new(timeout: Duration) -> SideChannel {
        SideChannel {
            svc: OnceLock::new(),
            timeout,
        }
    }

    /// Sets the service side requests go through; the first one stays.
    pub fn attach(&self, svc: SideService) {
        let _ = self.svc.set(svc);
    }

    pub fn is_attached(&self) -> bool {
        self.svc.get().is_some()
    }

    /// `GET path` from the upstream, the body read up to `limit` bytes.
    pub async fn get(&self, path: &str, limit: usize) -> Result<SideAnswer, SideError> {
        let svc = self.svc.get().ok_or(SideError::NotAttached)?.clone();
        let uri: Uri = path.parse().map_err(|_| SideError::BadPath)?;
        if uri.scheme().is_some()
            || uri.authority().is_some()
            || !path.starts_with('/')
            || path.starts_with("//")
        {
            return Err(SideError::BadPath);
        }
        let mut req = Request::new(Bytes::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let timeout = self.timeout;
        let exchange = async move {
            let res = svc
                .oneshot(std::sync::Arc::new(req))
                .await
                .map_err(|e| SideError::Transport(mask_link(&e.to_string())))?;
            let (parts, body) = res.into_parts();
            match read_limited(body, limit).await {
                Ok(Buffered::Whole(body)) => Ok(SideAnswer {
                    status: parts.status,
                    body,
                }),
                Ok(Buffered::TooLarge(_)) => Err(SideError::TooLarge(limit)),
                Err(e) => Err(SideError::Transport(mask_link(&e.to_string()))),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(SideError::Timeout(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use parking_lot::Mutex;

    #[tokio::test]
    async fn sends_the_path_only_and_reads_the_answer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let side = SideChannel::new(Duration::from_secs(1));
        assert!(matches!(
            side.get("/x", 10).await,
            Err(SideError::NotAttached)
        ));
        side.attach(SideService::new(tower::service_fn(move |req: Outgoing| {
            log.lock()
                .push((req.method().clone(), req.uri().to_string()));
            async move { Ok::<_, BoxError>(Response::new(ProxyBody::full("{\"keys\":[]}"))) }
        })));
        let a = side
            .get("/.well-known/jwks.json", 100)
            .await
            .expect("answer");
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "{\"keys\":[]}");
        assert_eq!(
            *seen.lock(),
            [(Method::GET, "/.well-known/jwks.json".to_owned())]
        );
        assert!(matches!(
            side.get("/.well-known/jwks.json", 3).await,
            Err(SideError::TooLarge(3))
        ));
        for bad in ["http://evil/x", "//evil/x", "x", ""] {
            assert!(
                matches!(side.get(bad, 10).await, Err(SideError::BadPath)),
                "{bad}"
            );
        }
        assert_eq!(seen.lock().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_factory_is_a_timeout() {
        let side = SideChannel::new(Duration::from_secs(2));
        side.attach(SideService::new(tower::service_fn(
            |_req: Outgoing| async {
                std::future::pending::<Result<Response<ProxyBody>, BoxError>>().await
            },
        )));
        assert!(matches!(
            side.get("/x", 10).await,
            Err(SideError::Timeout(_))
        ));
    }
}
