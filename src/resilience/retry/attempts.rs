//! `x-sidecar-attempts`: every answer that leaves the retry layer says how
//! many tries reached the factory, in the header on an answer, or as
//! [`Attempted`] around an error (`error.rs` puts it on the sidecar's own
//! answer). Shared by the plain retry loop and an order's patient one.

use http::{HeaderValue, Response};

use super::X_SIDECAR_ATTEMPTS;
use super::error::Attempted;
use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;

/// The header value; static for the counts `max_attempts` allows (1 to 10),
/// so the common case allocates nothing.
fn attempts_value(n: u32) -> HeaderValue {
    match n {
        0 => HeaderValue::from_static("0"),
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        4 => HeaderValue::from_static("4"),
        5 => HeaderValue::from_static("5"),
        6 => HeaderValue::from_static("6"),
        7 => HeaderValue::from_static("7"),
        8 => HeaderValue::from_static("8"),
        9 => HeaderValue::from_static("9"),
        10 => HeaderValue::from_static("10"),
        n => HeaderValue::from(n),
    }
}

/// The answer with `x-sidecar-attempts: reached`, or the error wrapped in
/// [`Attempted`] with the same count.
pub(super) fn finish(
    result: Result<Response<ProxyBody>, BoxError>,
    reached: u32,
) -> Result<Response<ProxyBody>, BoxError> {
    match result {
        Ok(mut res) => {
            res.headers_mut()
                .insert(X_SIDECAR_ATTEMPTS, attempts_value(reached));
            Ok(res)
        }
        Err(source) => Err(Box::new(Attempted {
            attempts: reached,
            source,
        })),
    }
}
