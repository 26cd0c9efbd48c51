//! Retry (skeleton: policy, backoff and budget land with the resilience issue).
