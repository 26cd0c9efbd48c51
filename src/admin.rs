//! The admin listener (`admin.listen`), apart from the proxy port so it can
//! stay private.
//!
//! | endpoint               | auth   | answer                                          |
//! |------------------------|--------|-------------------------------------------------|
//! | `GET /healthz`         | none   | 200 `ok` while the process runs                 |
//! | `GET /readyz`          | none   | 200 when serving; 503 while starting or draining|
//! | `GET /metrics`         | none   | Prometheus text of every metric                 |
//! | `GET /status`          | bearer | JSON: version, uptime, upstream, request counts, circuit, retry budget, chaos episodes |
//! | `POST /circuit/open`   | bearer | operator override: hold the breaker open        |
//! | `POST /circuit/close`  | bearer | operator override: close and resume automatic   |
//! | `POST /chaos/resolve`  | bearer | follow the latest report link now               |
//! | `POST /config/reload`  | bearer | as SIGHUP: apply the file again, or say why not |
//! | `GET /queue/dead-letters`, `DELETE /queue/dead-letters/<id>` | bearer | async orders given up: list, drop one |
//!
//! Bearer endpoints compare the token in constant time and are refused (403)
//! when no token is configured: an empty token never means "open". A known
//! path asked with another method answers 405 with `Allow`; an unknown one 404.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use arc_swap::ArcSwap;

use crate::config::Config;

/// Whether the proxy is serving: false while starting and while draining.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A part of the sidecar that reports into `GET /status` and may take
/// operator actions. Each layer's handle implements it; admin stays unaware
/// of their internals.
pub trait AdminPart: Send + Sync {
    /// The key under which this part appears in `/status`.
    fn name(&self) -> &'static str;
    /// Its `/status` section (no secrets: links masked, tokens never).
    fn status(&self) -> serde_json::Value;
    /// The `POST` paths this part handles.
    fn actions(&self) -> &'static [&'static str] {
        &[]
    }
    /// Handles `POST path` (one of [`AdminPart::actions`]), once authorized.
    fn action<'a>(&'a self, path: &'a str) -> ActionFuture<'a> {
        let _ = path;
        Box::pin(async {
            ActionAnswer {
                status: StatusCode::NOT_FOUND,
                body: serde_json::json!({"message": "unknown admin action"}),
            }
        })
    }
    /// The methods another endpoint of this part answers at `path` (as an
    /// `Allow` value), `None` when `path` is not one of its own.
    fn methods(&self, path: &str) -> Option<&'static str> {
        let _ = path;
        None
    }
    /// Handles `method path` (`path` one of [`AdminPart::methods`], with a
    /// method it allows; token required), or `None` when it is not its own.
    fn route<'a>(&'a self, method: &'a Method, path: &'a str) -> Option<ActionFuture<'a>> {
        let _ = (method, path);
        None
    }
    /// A degradation `/readyz` mentions while staying ready (the proxy
    /// still serves).
    fn readiness_note(&self) -> Option<String> {
        None
    }
}

/// A running admin action.
pub type ActionFuture<'a> = std::pin::Pin<Box<dyn Future<Output = ActionAnswer> + Send + 'a>>;

/// The answer to an admin action.
#[derive(Debug)]
pub struct ActionAnswer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// Everything the admin endpoints read.
pub struct AdminState {
    /// The running config: the token (and upstream shown) follow reloads.
    pub config: Arc<ArcSwap<Config>>,
    pub readiness: Arc<Readiness>,
    pub started: SystemTime,
    pub parts: Vec<Arc<dyn AdminPart>>,
    /// Renders `/metrics`.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
}

impl AdminState {
    /// The answer refusing `req`, or `None` when its bearer token is right.
    fn refusal(&self, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let config = self.config.load();
        let token = &config.admin.token;
        if token.is_empty() {
            return Some(json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"message": "admin token not configured (admin.token or SIDECAR_ADMIN_TOKEN)"}),
            ));
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token_matches(given, token.expose()) {
            None
        } else {
            let mut res = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"message": "missing or wrong bearer token"}),
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(res)
        }
    }

    fn status(&self) -> serde_json::Value {
        let uptime = SystemTime::now()
            .duration_since(self.started)
            .unwrap_or(Duration::ZERO);
        let mut v = serde_json::json!({
            "version": crate::version::VERSION,
            "commit": crate::version::COMMIT,
            "uptimeSeconds": uptime.as_secs(),
            "ready": self.readiness.is_ready(),
            "upstream": self.config.load().upstream.url().to_string(),
        });
        if let Some(map) = v.as_object_mut() {
            for part in &self.parts {
                map.insert(part.name().to_owned(), part.status());
            }
        }
        v
    }

    /// The methods `path` answers (for 405 and `Allow`), `None` when unknown.
    fn allowed(&self, path: &str) -> Option<&'static str> {
        match path {
            "/healthz" | "/readyz" => Some("GET, HEAD"),
            "/metrics" | "/status" => Some("GET"),
            p if self.parts.iter().any(|part| part.actions().contains(&p)) => Some("POST"),
            p => self.parts.iter().find_map(|part| part.methods(p)),
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let Some(allow) = self.allowed(&path) else {
            return not_found();
        };
        if !allow.split(", ").any(|m| m == req.method().as_str()) {
            return method_not_allowed(req.method(), allow);
        }
        match (req.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                if self.readiness.is_ready() {
                    let mut body = String::from("ready\n");
                    for note in self.parts.iter().filter_map(|p| p.readiness_note()) {
                        body.push_str(&note);
                        body.push('\n');
                    }
                    text(StatusCode::OK, body)
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (&Method::GET, "/metrics") => {
                let mut res = text(StatusCode::OK, (self.metrics)());
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            (&Method::GET, "/status") => match self.refusal(&req) {
                None => json(StatusCode::OK, self.status()),
                Some(res) => res,
            },
            (&Method::POST, p) if self.parts.iter().any(|part| part.actions().contains(&p)) => {
                let Some(part) = self.parts.iter().find(|part| part.actions().contains(&p)) else {
                    return not_found();
                };
                if let Some(res) = self.refusal(&req) {
                    return res;
                }
                let answer = part.action(p).await;
                json(answer.status, answer.body)
            }
            (m, p) => {
                let Some(fut) = self.parts.iter().find_map(|part| part.route(m, p)) else {
                    return not_found();
                };
                if let Some(res) = self.refusal(&req) {
                    return res;
                }
                let answer = fut.await;
                json(answer.status, answer.body)
            }
        }
    }
}

/// Constant-time token comparison (the length is not secret enough to hide).
fn token_matches(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(bytes)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A known path asked with a method it does not answer (RFC 9110 15.5.6).
fn method_not_allowed(method: &Method, allow: &'static str) -> Response<Full<Bytes>> {
    let mut res = json(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::json!({"message": format!("{method} is not allowed here; use {allow}")}),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"message": "unknown admin endpoint"}),
    )
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(state.handle(req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
