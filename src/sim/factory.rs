//! The factory API, answer for answer as the real JWT Pizza Factory gives it
//! (`devops329/jwt-pizza-factory`, an Express app; docs/factory.md lists the rows).
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/order` | 200 `{"jwt"}` (+ `"reportUrl"` under throttle); 401, 400, 503 oven full, chaos |
//! | `POST /api/order/verify` | 200 `{"message": "valid", "payload"}` or 403 `{"message": "invalid"}` |
//! | `GET /.well-known/jwks.json` | `{"keys": [{"kty", "kid", "n", "e"}]}` |
//! | `GET /api/support/<apiKey>/report/<fixCode>` | the report link |
//! | `PUT /api/vendor/chaos/<type>` | what a leaked apiKey allows: start chaos |
//! | `/api/docs` | the API description |
//! | anything else | 404 `{"message": "unknown endpoint"}` |
//!
//! The order route keeps the real middleware order, which decides what a
//! request gets when several things are wrong at once: body parsing (JSON
//! errors become 500, as the real error handler turns every error into one),
//! then the apiKey (401), then chaos, then the body checks (400, oven full),
//! then signing. Only under throttle does a successful order carry a
//! `reportUrl`; without chaos the real factory sends `{"jwt"}` alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::chaos::{ChaosKind, ChaosSpec, OrderChaos, ResolveOutcome, constant_time_eq};
use super::jwt::{CachedOrder, KeyError, Signed, payload_b64};
use super::state::{Shared, VENDOR, bump};

/// The answer type of every simulator route.
pub(crate) type Answer = Response<Full<Bytes>>;

/// Express's `express.json()` default limit (100kb).
pub(crate) const JSON_LIMIT: usize = 100 * 1024;

/// Orders with more items than this never leave the oven.
const MAX_ITEMS: usize = 20;

/// The request closed or broke while its body was read: nothing to answer.
#[derive(Debug, thiserror::Error)]
#[error("request body could not be read")]
pub(crate) struct BodyLost;

/// Which factory route a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Order,
    Verify,
    Jwks,
    Docs,
    /// Any `GET /api/support/...`, well-formed or not.
    Support,
    VendorChaos,
    Unknown,
}

impl Route {
    /// Express routing: a trailing `/` is ignored.
    pub(crate) fn of(method: &Method, path: &str) -> Route {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        match (method, path) {
            (&Method::POST, "/api/order") => Route::Order,
            (&Method::POST, "/api/order/verify") => Route::Verify,
            (&Method::GET | &Method::HEAD, "/.well-known/jwks.json") => Route::Jwks,
            (_, "/api/docs") => Route::Docs,
            (_, p) if p.starts_with("/api/docs/") => Route::Docs,
            (&Method::GET | &Method::HEAD, p) if p.starts_with("/api/support/") => Route::Support,
            (&Method::PUT, p) if p.starts_with("/api/vendor/chaos/") => Route::VendorChaos,
            _ => Route::Unknown,
        }
    }
}

/// Answers one factory request (after `down` had its say).
pub(crate) async fn handle(
    shared: &Shared,
    route: Route,
    parts: Parts,
    body: Incoming,
) -> Result<Answer, BodyLost> {
    Ok(match route {
        Route::Order => order(shared, &parts, body).await?,
        Route::Verify => verify(shared, &parts, body).await?,
        Route::Jwks => json(StatusCode::OK, shared.signer.jwks_json().clone()),
        Route::Docs => json(StatusCode::OK, shared.docs.clone()),
        Route::Support => support(shared, parts.uri.path()),
        Route::VendorChaos => vendor_chaos(shared, &parts, body).await?,
        Route::Unknown => unknown_endpoint(),
    })
}

/// `POST /api/order`.
async fn order(shared: &Shared, parts: &Parts, body: Incoming) -> Result<Answer, BodyLost> {
    let body = read_body(body).await?;
    let is_json = is_json(&parts.headers);
    // The hot path: a body seen before is known valid, no parse needed.
    let cached = match &body {
        Body::Read(bytes) if is_json && !bytes.is_empty() => shared.cache.get(bytes),
        _ => None,
    };
    let parsed = match cached {
        Some(_) => None,
        None => match express_json(is_json, &body) {
            Ok(v) => v,
            Err(rejected) => return Ok(rejected.answer()),
        },
    };

    if !authorized(&parts.headers, &shared.settings.api_key) {
        return Ok(message(StatusCode::UNAUTHORIZED, "invalid authentication"));
    }

    let mut report_url = None;
    match shared.on_order() {
        None => {}
        Some(OrderChaos::Fail {
            fix_code,
            retry_after,
        }) => {
            let url = report_url_for(shared, parts, &fix_code);
            let body = serde_json::json!({ "message": "chaos monkey", "reportUrl": url });
            let mut answer = json(StatusCode::INTERNAL_SERVER_ERROR, body.to_string());
            if let Some(secs) = retry_after {
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(answer);
        }
        Some(OrderChaos::BadJwt { fix_code }) => {
            let url = report_url_for(shared, parts, &fix_code);
            let body = serde_json::json!({ "jwt": shared.signer.bad_jwt(), "reportUrl": url });
            return Ok(json(StatusCode::OK, body.to_string()));
        }
        Some(OrderChaos::Throttle { fix_code, delay }) => {
            report_url = Some(report_url_for(shared, parts, &fix_code));
            tokio::time::sleep(delay.unwrap_or(shared.settings.throttle_delay)).await;
        }
    }

    let entry = match (cached, body) {
        (Some(entry), _) => entry,
        (None, body) => match check_order(parsed.as_ref()) {
            OrderCheck::Valid { diner, order } => {
                let payload = payload_b64(&VENDOR, diner, order);
                match body {
                    Body::Read(bytes) => shared.cache.insert(bytes, payload),
                    // A valid order implies a JSON body that was read.
                    Body::TooLarge => {
                        return Ok(message(StatusCode::INTERNAL_SERVER_ERROR, TOO_LARGE));
                    }
                }
            }
            OrderCheck::Missing => {
                return Ok(message(
                    StatusCode::BAD_REQUEST,
                    "Missing required parameters",
                ));
            }
            OrderCheck::TypeError(msg) => {
                return Ok(message(StatusCode::INTERNAL_SERVER_ERROR, &msg));
            }
            OrderCheck::OvenFull => {
                tokio::time::sleep(shared.settings.oven_delay).await;
                return Ok(message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unable to satisfy pizza order. The oven is full.",
                ));
            }
        },
    };

    match pizza(shared, &entry).await {
        Ok(signed) => {
            bump(&shared.counters.orders_ok);
            Ok(match report_url {
                None => json(StatusCode::OK, signed.answer),
                Some(url) => {
                    let body = serde_json::json!({ "jwt": &*signed.jwt, "reportUrl": url });
                    json(StatusCode::OK, body.to_string())
                }
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a pizza");
            Ok(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unable to process order",
            ))
        }
    }
}

/// The pizza for a valid order: the next pooled one with `--token-pool`
/// (the pool signed on a blocking thread the first time), else the one
/// signed for this second.
async fn pizza(shared: &Shared, entry: &Arc<CachedOrder>) -> Result<Signed, KeyError> {
    let size = shared.settings.token_pool;
    if size == 0 {
        return entry.signed(&shared.signer, unix_now());
    }
    if let Some(signed) = entry.pooled() {
        return Ok(signed);
    }
    let (entry_, signer) = (Arc::clone(entry), Arc::clone(&shared.signer));
    tokio::task::spawn_blocking(move || entry_.fill_pool(&signer, size, unix_now()))
        .await
        .map_err(|_| KeyError::SIGNING)??;
    entry.pooled().ok_or(KeyError::SIGNING)
}

enum OrderCheck<'a> {
    Valid {
        diner: &'a Value,
        order: &'a Value,
    },
    Missing,
    /// What Node throws when `order.items.length` cannot be read.
    TypeError(String),
    OvenFull,
}

/// `if (!diner || !order) 400; else if (order.items.length === 0 ||
/// order.items.length > 20) oven full`, with JavaScript's truthiness.
fn check_order(body: Option<&Value>) -> OrderCheck<'_> {
    let field = |name| body.and_then(|b| b.get(name)).filter(|v| truthy(v));
    let (Some(diner), Some(order)) = (field("diner"), field("order")) else {
        return OrderCheck::Missing;
    };
    let length = match order.get("items") {
        None => {
            return OrderCheck::TypeError(
                "Cannot read properties of undefined (reading 'length')".into(),
            );
        }
        Some(Value::Null) => {
            return OrderCheck::TypeError(
                "Cannot read properties of null (reading 'length')".into(),
            );
        }
        Some(Value::Array(items)) => Some(items.len()),
        Some(Value::String(s)) => Some(s.encode_utf16().count()),
        // `.length` of a number, boolean or object is undefined: no check.
        Some(_) => None,
    };
    match length {
        Some(n) if n == 0 || n > MAX_ITEMS => OrderCheck::OvenFull,
        _ => OrderCheck::Valid { diner, order },
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `POST /api/order/verify` (no apiKey needed, as in the real route).
async fn verify(shared: &Shared, parts: &Parts, body: Incoming) -> Result<Answer, BodyLost> {
    let body = read_body(body).await?;
    let parsed = match express_json(is_json(&parts.headers), &body) {
        Ok(v) => v,
        Err(rejected) => return Ok(rejected.answer()),
    };
    let payload = parsed
        .as_ref()
        .and_then(|b| b.get("jwt"))
        .and_then(Value::as_str)
        .and_then(|jwt| shared.signer.verify(jwt));
    Ok(match payload {
        Some(payload) => {
            let body = serde_json::json!({ "message": "valid", "payload": payload });
            json(StatusCode::OK, body.to_string())
        }
        None => message(StatusCode::FORBIDDEN, "invalid"),
    })
}

/// `GET /api/support/<apiKey>/report/<fixCode>`: an unknown apiKey finds no
/// vendor and so "no chaos", exactly as the real route answers.
fn support(shared: &Shared, path: &str) -> Answer {
    let Some((key, code)) = parse_support_path(path) else {
        return unknown_endpoint();
    };
    let outcome = if constant_time_eq(key.as_bytes(), shared.settings.api_key.as_bytes()) {
        shared.resolve(code)
    } else {
        ResolveOutcome::NoChaos
    };
    match outcome {
        ResolveOutcome::Resolved => message(
            StatusCode::OK,
            "Problem resolved. Pizza is back on the menu!",
        ),
        ResolveOutcome::WrongCode => message(StatusCode::BAD_REQUEST, "Problem unresolved"),
        ResolveOutcome::NoChaos => message(StatusCode::OK, "No chaos currently executing"),
    }
}

/// `/api/support/:vendorToken/report/:fixCode` (one trailing `/` allowed).
pub(crate) fn parse_support_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/support/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut it = rest.split('/');
    let (key, report, code) = (it.next()?, it.next()?, it.next()?);
    (it.next().is_none() && report == "report" && !key.is_empty() && !code.is_empty())
        .then_some((key, code))
}

/// `PUT /api/vendor/chaos/<type>`: how anyone holding the leaked apiKey can
/// schedule chaos for the vendor.
async fn vendor_chaos(shared: &Shared, parts: &Parts, body: Incoming) -> Result<Answer, BodyLost> {
    let body = read_body(body).await?;
    if let Err(rejected) = express_json(is_json(&parts.headers), &body) {
        return Ok(rejected.answer());
    }
    if !authorized(&parts.headers, &shared.settings.api_key) {
        return Ok(message(StatusCode::UNAUTHORIZED, "invalid authentication"));
    }
    let path = parts.uri.path();
    let kind = path
        .strip_prefix("/api/vendor/chaos/")
        .map(|t| t.strip_suffix('/').unwrap_or(t));
    let kind = match kind {
        Some("fail") => ChaosKind::Fail,
        Some("throttle") => ChaosKind::Throttle,
        Some("badjwt") => ChaosKind::BadJwt,
        _ => return Ok(message(StatusCode::BAD_REQUEST, "Invalid chaos type")),
    };
    shared.set_chaos(&ChaosSpec::new(kind));
    Ok(message(StatusCode::OK, "Chaos initiated"))
}

/// `reportUrl` of an answer: `--public-url` + path when set, else the real
/// factory's `https://${req.hostname}/...` (Host header, port dropped).
fn report_url_for(shared: &Shared, parts: &Parts, fix_code: &str) -> String {
    let key = &shared.settings.api_key;
    match &shared.settings.public_url {
        Some(base) => format!("{base}/api/support/{key}/report/{fix_code}"),
        None => {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| parts.uri.authority().map(|a| a.as_str()));
            // Express gives `undefined` without a Host; so does the link.
            let host = host.map_or("undefined", hostname);
            format!("https://{host}/api/support/{key}/report/{fix_code}")
        }
    }
}

/// Express's `req.hostname`: the Host without its port (IPv6 kept bracketed).
pub(crate) fn hostname(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split(':').next().unwrap_or(host)
}

/// `(authorization || '').replace(/bearer /i, '') === apiKey`, in constant
/// time.
pub(crate) fn authorized(headers: &HeaderMap, api_key: &str) -> bool {
    let value = headers
        .get(header::AUTHORIZATION)
        .map_or(&[][..], HeaderValue::as_bytes);
    const BEARER: &[u8] = b"bearer ";
    let found = value
        .windows(BEARER.len())
        .position(|w| w.eq_ignore_ascii_case(BEARER));
    match found {
        Some(0) => constant_time_eq(&value[BEARER.len()..], api_key.as_bytes()),
        Some(at) => {
            let mut key = Vec::with_capacity(value.len() - BEARER.len());
            key.extend_from_slice(&value[..at]);
            key.extend_from_slice(&value[at + BEARER.len()..]);
            constant_time_eq(&key, api_key.as_bytes())
        }
        None => constant_time_eq(value, api_key.as_bytes()),
    }
}

/// A request body, read up to [`JSON_LIMIT`].
pub(crate) enum Body {
    Read(Bytes),
    TooLarge,
}

pub(crate) async fn read_body(body: Incoming) -> Result<Body, BodyLost> {
    match Limited::new(body, JSON_LIMIT).collect().await {
        Ok(collected) => Ok(Body::Read(collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Ok(Body::TooLarge),
        Err(_) => Err(BodyLost),
    }
}

const TOO_LARGE: &str = "request entity too large";

/// Why `express.json()` refused a body: the message of the 500 answer the
/// real error handler sends.
#[derive(Debug)]
pub(crate) struct JsonRejected(String);

impl JsonRejected {
    pub(crate) fn answer(&self) -> Answer {
        message(StatusCode::INTERNAL_SERVER_ERROR, &self.0)
    }
}

/// `express.json()`: only `application/json` bodies are parsed (others and
/// empty ones leave `req.body = {}`, here `None`); only objects and arrays
/// are accepted; every parse error reaches the real error handler, which
/// answers 500 `{"message": err.message}`.
pub(crate) fn express_json(is_json: bool, body: &Body) -> Result<Option<Value>, JsonRejected> {
    if !is_json {
        return Ok(None);
    }
    let bytes = match body {
        Body::TooLarge => return Err(JsonRejected(TOO_LARGE.to_owned())),
        Body::Read(b) => b,
    };
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    if *first != b'{' && *first != b'[' {
        return Err(JsonRejected(format!(
            "Unexpected token {:?} in JSON at position 0",
            char::from(*first)
        )));
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| JsonRejected(e.to_string()))
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

pub(crate) fn unknown_endpoint() -> Answer {
    message(StatusCode::NOT_FOUND, "unknown endpoint")
}

/// A `{"message": ...}` answer, the shape of every factory error.
pub(crate) fn message(status: StatusCode, text: &str) -> Answer {
    json(status, serde_json::json!({ "message": text }).to_string())
}

pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    static JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, JSON.clone());
    answer
}

/// What the factory's load balancer answers when no instance is up.
pub(crate) fn bad_gateway() -> Answer {
    const PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
    let mut answer = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    *answer.status_mut() = StatusCode::BAD_GATEWAY;
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    answer
}

/// The real factory lets any origin call it; so does the simulator.
pub(crate) fn add_cors(answer: &mut Answer, origin: Option<HeaderValue>) {
    let h = answer.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin.unwrap_or(HeaderValue::from_static("*")),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The body of `GET /api/docs`, built once.
pub(crate) fn docs_json() -> Bytes {
    let order_example = format!(
        "curl -X POST $host/api/order -H 'authorization: Bearer xyz' -d '{}' -H 'Content-Type: application/json'",
        super::SAMPLE_ORDER
    );
    let docs = serde_json::json!({
        "message": "welcome to JWT Pizza Factory",
        "version": concat!("sim-", env!("CARGO_PKG_VERSION")),
        "endpoints": [
            {
                "method": "POST", "path": "/api/order", "requiresAuth": true,
                "description": "Create a JWT pizza",
                "example": order_example,
                "response": { "jwt": "JWT here" }
            },
            {
                "method": "POST", "path": "/api/order/verify", "requiresAuth": true,
                "description": "Verifies a pizza order",
                "example": "curl -X POST $host/api/order/verify -d '{\"jwt\":\"JWT here\"}' -H 'Content-Type: application/json'",
                "response": { "message": "valid", "payload": { "vendor": { "id": VENDOR.id, "name": VENDOR.name }, "diner": {}, "order": {} } }
            },
            {
                "method": "GET", "path": "/.well-known/jwks.json", "requiresAuth": false,
                "description": "Get the JSON Web Key Set (JWKS) for independent JWT verification",
                "example": "curl $host/.well-known/jwks.json",
                "response": { "keys": [{ "kty": "RSA", "kid": "KID here", "n": "Key value here", "e": "AQAB" }] }
            },
            {
                "method": "GET", "path": "/api/support/:vendorToken/report/:fixCode", "requiresAuth": false,
                "description": "Report a problem",
                "example": "curl -X GET $host/api/support/abcxyz/report/123",
                "response": { "message": "ticket status" }
            }
        ],
        "simulator": {
            "description": "factory-sidecar sim: a simulator of this factory. Control endpoints, always answered:",
            "endpoints": [
                { "method": "PUT", "path": "/sim/chaos", "body": { "type": "none|fail|throttle|badjwt|down|hang", "count": "N (optional)", "retryAfter": "seconds (optional)", "delay": "e.g. 2s (optional)" } },
                { "method": "GET", "path": "/sim/chaos" },
                { "method": "GET", "path": "/sim/stats" }
            ]
        }
    });
    Bytes::from(docs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_like_express() {
        assert_eq!(Route::of(&Method::POST, "/api/order"), Route::Order);
        assert_eq!(Route::of(&Method::POST, "/api/order/"), Route::Order);
        assert_eq!(Route::of(&Method::GET, "/api/order"), Route::Unknown);
        assert_eq!(Route::of(&Method::POST, "/api/order/verify"), Route::Verify);
        assert_eq!(
            Route::of(&Method::GET, "/.well-known/jwks.json"),
            Route::Jwks
        );
        assert_eq!(Route::of(&Method::DELETE, "/api/docs"), Route::Docs);
        assert_eq!(Route::of(&Method::GET, "/api/support/x"), Route::Support);
        assert_eq!(
            Route::of(&Method::POST, "/api/support/k/report/c"),
            Route::Unknown
        );
        assert_eq!(
            Route::of(&Method::PUT, "/api/vendor/chaos/fail"),
            Route::VendorChaos
        );
        assert_eq!(Route::of(&Method::GET, "/"), Route::Unknown);
    }

    #[test]
    fn support_paths() {
        assert_eq!(
            parse_support_path("/api/support/k/report/c"),
            Some(("k", "c"))
        );
        assert_eq!(
            parse_support_path("/api/support/k/report/c/"),
            Some(("k", "c"))
        );
        assert_eq!(parse_support_path("/api/support/k/report/"), None);
        assert_eq!(parse_support_path("/api/support//report/c"), None);
        assert_eq!(parse_support_path("/api/support/k/resolve/c"), None);
        assert_eq!(parse_support_path("/api/support/k/report/c/x"), None);
    }

    #[test]
    fn hostname_drops_the_port() {
        assert_eq!(
            hostname("pizza-factory.cs329.click"),
            "pizza-factory.cs329.click"
        );
        assert_eq!(hostname("127.0.0.1:3001"), "127.0.0.1");
        assert_eq!(hostname("[::1]:3001"), "[::1]");
        assert_eq!(hostname("[::1"), "[::1");
    }

    #[test]
    fn bearer_is_stripped_like_the_real_regex() {
        let key = "0123456789abcdef0123456789abcdef";
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            authorized(&h, key)
        };
        assert!(with("Bearer 0123456789abcdef0123456789abcdef"));
        assert!(with("bearer 0123456789abcdef0123456789abcdef"));
        assert!(with("BEARER 0123456789abcdef0123456789abcdef"));
        assert!(
            with("0123456789abcdef0123456789abcdef"),
            "the real regex needs no prefix"
        );
        assert!(with("0123456789abcdefbearer 0123456789abcdef"));
        assert!(!with("Bearer 0123456789abcdef0123456789abcde"));
        assert!(!with("Bearer  0123456789abcdef0123456789abcdef"));
        assert!(!authorized(&HeaderMap::new(), key));
    }

    #[test]
    fn order_checks_follow_javascript() {
        let check = |v: Value| match check_order(Some(&v)) {
            OrderCheck::Valid { .. } => "valid".to_owned(),
            OrderCheck::Missing => "missing".to_owned(),
            OrderCheck::OvenFull => "oven".to_owned(),
            OrderCheck::TypeError(m) => m,
        };
        let items = |n: usize| serde_json::json!({"diner": {"id": 1}, "order": {"items": vec![serde_json::json!({"menuId": 1}); n]}});
        assert_eq!(check(items(1)), "valid");
        assert_eq!(check(items(20)), "valid");
        assert_eq!(check(items(0)), "oven");
        assert_eq!(check(items(21)), "oven");
        assert_eq!(
            check(serde_json::json!({"order": {"items": [1]}})),
            "missing"
        );
        assert_eq!(
            check(serde_json::json!({"diner": 0, "order": {"items": [1]}})),
            "missing"
        );
        assert_eq!(
            check(serde_json::json!({"diner": "", "order": {"items": [1]}})),
            "missing"
        );
        assert!(check(serde_json::json!({"diner": 1, "order": {}})).contains("undefined"));
        assert!(check(serde_json::json!({"diner": 1, "order": {"items": null}})).contains("null"));
        assert_eq!(
            check(serde_json::json!({"diner": 1, "order": {"items": 3}})),
            "valid"
        );
        assert!(matches!(check_order(None), OrderCheck::Missing));
    }

    #[test]
    fn express_json_rules() {
        let read = |s: &'static str| Body::Read(Bytes::from_static(s.as_bytes()));
        assert!(matches!(express_json(false, &read("garbage")), Ok(None)));
        assert!(matches!(express_json(true, &read("  ")), Ok(None)));
        assert!(matches!(
            express_json(true, &read("{\"a\":1}")),
            Ok(Some(_))
        ));
        assert!(matches!(express_json(true, &read("[]")), Ok(Some(_))));
        for bad in ["\"str\"", "{", "nope"] {
            let answer = express_json(true, &read(bad))
                .expect_err("invalid")
                .answer();
            assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        let rejected = express_json(true, &Body::TooLarge).expect_err("too large");
        assert_eq!(rejected.0, TOO_LARGE);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
