//! The pooled client to the factory (skeleton).

/// A try got no answer from the factory: refused, reset, closed, TLS failure.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct UpstreamError {
    context: &'static str,
    #[source]
    source: crate::error::BoxError,
}

impl UpstreamError {
    pub fn new(context: &'static str, source: impl Into<crate::error::BoxError>) -> Self {
        Self {
            context,
            source: source.into(),
        }
    }
}
