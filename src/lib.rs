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
//!  ├ proxy::http1::server  HTTP/1.1 fast path: plain requests read and answered here
//!  └ hyper            everything else (h2c, chunked bodies, bad heads), handed over,
//!                     watched by proxy::http1::guard (CL+TE marked for a 400)
//!  └ telemetry        server span + http.server.request.duration + status counts
//!   └ error::answer   typed errors become JSON answers (the one place)
//!    └ proxy::collect body buffered up to max_body_bytes (413), CL+TE refused (400)
//!     └ queue         [queue] only: Prefer: respond-async orders that fail are stored,
//!                     answered 202, replayed later; GET /orders/<id>
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
//!                            proxy::http1::client, h2 by ALPN through hyper;
//!                            proxy::connect dials TCP and TLS ([`tls`])
//! ```
//!
//! Every HTTP/1.1 wire rule (limits, framing headers, keep-alive, bodiless
//! answers, chunked coding) is written once, in `proxy::http1::common` and
//! `proxy::http1::chunked`, for the fast path, the guard and the client.
//!
//! Beside the stack: [`orders`] (which requests are orders, their patience,
//! the waiting room), `admin` (health, readiness, metrics, status, overrides),
//! `queue::replay` (replays stored async orders through the stack below the
//! server layer, like `probe`), [`sim`] (a faithful factory simulator),
//! [`demo`], [`config`]; [`tls`] is shared with the telemetry exporters,
//! [`times`] (moments and durations as written down) with every part;
//! [`busy_poll`] keeps a one-worker runtime polling between an order's
//! request and its answer instead of sleeping.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod boxed;
pub mod busy_poll;
pub mod chaos;
pub mod config;
pub mod demo;
pub mod error;
pub mod live;
pub mod orders;
pub mod probe;
pub mod proxy;
pub mod queue;
pub mod reload;
pub mod resilience;
pub mod sim;
pub mod telemetry;
pub mod times;
pub mod tls;
pub mod version;
