//! The breaker's response future: records the try's outcome when it ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;

use super::{CircuitOpen, Permit};
use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;
use crate::resilience::classify::classify;

pin_project_lite::pin_project! {
    /// See [`super::BreakerService`]. Dropped before it ends (deadline, client
    /// gone), its permit frees a half-open probe slot without a verdict.
    #[project = Proj]
    #[derive(Debug)]
    pub enum ResponseFuture<F> {
        Called { #[pin] inner: F, permit: Option<Permit> },
        Rejected { open: Option<CircuitOpen> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(inner: F, permit: Permit) -> Self {
        ResponseFuture::Called {
            inner,
            permit: Some(permit),
        }
    }

    pub(super) fn rejected(open: CircuitOpen) -> Self {
        ResponseFuture::Rejected { open: Some(open) }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Called { inner, permit } => {
                let result = ready!(inner.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.finish(classify(&result));
                }
                Poll::Ready(result)
            }
            Proj::Rejected { open } => {
                let open = open.take().unwrap_or(CircuitOpen {
                    retry_after: std::time::Duration::from_secs(1),
                });
                Poll::Ready(Err(Box::new(open)))
            }
        }
    }
}
