//! HTTP/1.1 as the sidecar speaks it itself, both ways.
//!
//! - [`common`]: every wire rule once: limits, header positions, the
//!   framing and connection headers, keep-alive, bodiless answers, the one
//!   [`Framing`](common::Framing) of a body, read-buffer growth.
//! - [`chunked`]: the one chunked-coding stepper.
//! - [`server`]: the fast path for client connections: plain requests read
//!   and answered here, anything else handed to hyper.
//! - [`guard`]: follows the requests hyper reads on a handed-over
//!   connection, to refuse conflicting framing.
//! - [`client`]: HTTP/1.1 to the factory, spoken by the order's own future.

pub mod chunked;
pub mod client;
pub mod common;
pub mod guard;
pub mod server;
