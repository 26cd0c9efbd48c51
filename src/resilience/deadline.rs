//! Deadlines (skeleton: the layers land with the resilience issue).

/// The whole request (all tries and backoff) ran past `request_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request deadline exceeded")]
pub struct DeadlineExceeded;

/// One try ran past `attempt_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("factory did not answer within the attempt timeout")]
pub struct AttemptTimedOut;
