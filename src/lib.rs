//! # factory-sidecar
//!
//! A reverse proxy that runs beside the JWT Pizza service and stands between
//! it and the pizza factory, so the factory's chaos (500s, 32-second answers,
//! invalid pizza JWTs, outages) stops costing orders.
//!
//! # Layout: a request's path, top to bottom
//!
//! ```text
//! proxy::server      accept, connection limits, graceful drain; x-forwarded-for
//!  ├ proxy::conn      HTTP/1.1 fast path: plain requests read and answered here
//!  └ hyper            everything else (h2c, chunked bodies, bad heads), handed over
//!  └ telemetry        server span + http.server.request.duration + status counts
//!   └ error::answer   typed errors become JSON answers (the one place)
//!    └ proxy::collect body buffered up to max_body_bytes (413), CL+TE refused (400)
//!     └ proxy::headers hop-by-hop out, x-forwarded-proto
//!     └ deadline      request_timeout over all tries (a task-local below);
//!                     orders: orders.patience, and marked patient
//!      └ retry        backoff with full jitter, retry budget, x-sidecar-attempts;
//!                     below it the request is shared (proxy::Outgoing), not copied;
//!                     patient orders: hedges past attempt_timeout, park in
//!                     orders::Lot when refused or failed, released on recovery
//!       └ breaker     fail fast while open (503), half-open probes
//!        └ telemetry  client span + http.client.request.duration per try
//!         └ deadline  attempt_timeout per try (not for patient orders)
//!          └ chaos    inspect order answers: report link, JWT, episodes, resolve, mask
//!           └ proxy::client  Forward over proxy::pool (keep-alive): HTTP/1.1 by
//!                            proxy::h1, h2 by ALPN through hyper; rustls
//! ```
//!
//! Beside the stack: [`orders`] (which requests are orders, their patience,
//! the waiting room), `admin` (health, readiness, metrics, status, overrides),
//! [`sim`] (a faithful factory simulator), [`demo`], [`config`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod boxed;
pub mod chaos;
pub mod config;
pub mod demo;
pub mod error;
pub mod orders;
pub mod probe;
pub mod proxy;
pub mod resilience;
pub mod sim;
pub mod telemetry;
