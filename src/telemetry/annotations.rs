//! Chaos episodes as Grafana annotations, so the dashboard shows when the
//! factory misbehaved and when it was fixed.
//!
//! With `[grafana] url` and a token, [`Annotator::episode_started`] and
//! [`Annotator::episode_resolved`] queue an annotation (`POST
//! {url}/api/annotations`, `Authorization: Bearer <token>`, JSON `{time,
//! timeEnd?, tags: ["chaos", type], text}`). They never wait: the queue is
//! bounded, a full queue drops the annotation and counts it. One background
//! task posts them in order, retrying connection failures, timeouts, 429
//! and 5xx with capped exponential backoff and full jitter; other 4xx (a
//! wrong token, a bad request) are not retried. The token is held as a
//! sensitive header value and never appears in a log line or `Debug`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::AdminPart;
use crate::chaos::episodes::{EpisodeEvent, EventKind};
use crate::config::GrafanaConfig;
use crate::times::unix_ms;

/// The sidecar's one TLS stack (rustls, webpki roots), as the factory
/// client and the OTLP exporter use it.
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The annotator could not start.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("grafana.url {url:?} is not a usable URL: {reason}")]
    Url { url: String, reason: String },
    #[error("grafana.token (or SIDECAR_GRAFANA_TOKEN) is needed with grafana.url")]
    NoToken,
    #[error("the grafana token is not a valid header value")]
    BadToken,
    #[error("cannot build the TLS client for Grafana: {0}")]
    Tls(#[source] crate::tls::TlsError),
    #[error("annotations need a running tokio runtime")]
    NoRuntime,
}

/// Queue and retry settings.
#[derive(Debug, Clone)]
pub struct AnnotatorOptions {
    /// Annotations waiting beyond this are dropped.
    pub queue: usize,
    /// Tries per annotation (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One POST, answer included.
    pub request_timeout: Duration,
}

impl Default for AnnotatorOptions {
    fn default() -> Self {
        AnnotatorOptions {
            queue: 64,
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// One annotation, as Grafana's HTTP API takes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Annotation {
    /// Milliseconds since the epoch.
    pub time: u64,
    #[serde(rename = "timeEnd", skip_serializing_if = "Option::is_none")]
    pub time_end: Option<u64>,
    pub tags: Vec<String>,
    pub text: String,
}

#[derive(Debug, Default)]
struct Stats {
    queued: AtomicU64,
    sent: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Posts chaos annotations to Grafana in the background. Cheap to share
/// (`Arc`); every method returns at once.
pub struct Annotator {
    tx: Option<mpsc::Sender<Annotation>>,
    stats: Arc<Stats>,
    stop: Option<watch::Sender<bool>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Where posts go and with which token; a reload may change both.
    target: Arc<parking_lot::RwLock<Target>>,
}

/// The annotation endpoint and the `Authorization` value for it.
#[derive(Clone)]
struct Target {
    uri: Uri,
    auth: HeaderValue,
}

impl Target {
    /// `{base_url}/api/annotations` with `Bearer {token}`, checked.
    fn new(base_url: &str, token: &str) -> Result<Target, AnnotationError> {
        let bad = |reason: &str| AnnotationError::Url {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let target = format!("{}/api/annotations", base_url.trim().trim_end_matches('/'));
        let uri: Uri = target
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(bad("must be an http:// or https:// URL"));
        }
        if token.is_empty() {
            return Err(AnnotationError::NoToken);
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| AnnotationError::BadToken)?;
        auth.set_sensitive(true);
        Ok(Target { uri, auth })
    }
}

impl fmt::Debug for Annotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Annotator")
            .field("target", &self.target.read().uri)
            .field("enabled", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl Annotator {
    /// Does nothing: no `[grafana] url`.
    pub fn disabled() -> Annotator {
        Annotator {
            tx: None,
            stats: Arc::default(),
            stop: None,
            task: Mutex::new(None),
            target: Arc::new(parking_lot::RwLock::new(Target {
                uri: Uri::from_static("http://disabled.invalid/"),
                auth: HeaderValue::from_static(""),
            })),
        }
    }

    /// From `[grafana]`: disabled when `url` is empty. Spawns the posting
    /// task, so it must run inside a tokio runtime.
    pub fn start(config: &GrafanaConfig) -> Result<Annotator, AnnotationError> {
        if config.url.trim().is_empty() {
            return Ok(Annotator::disabled());
        }
        Annotator::with_options(
            &config.url,
            config.token.expose(),
            AnnotatorOptions::default(),
        )
    }

    /// To `base_url` (Grafana's root URL) with `token`.
    pub fn with_options(
        base_url: &str,
        token: &str,
        options: AnnotatorOptions,
    ) -> Result<Annotator, AnnotationError> {
        let target = Arc::new(parking_lot::RwLock::new(Target::new(base_url, token)?));
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| AnnotationError::NoRuntime)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build(
                crate::tls::https_connector(None, Duration::from_secs(5))
                    .map_err(AnnotationError::Tls)?,
            );
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let poster = Poster {
            client,
            target: Arc::clone(&target),
            options,
            stats: stats.clone(),
        };
        let task = runtime.spawn(poster.run(rx, stop_rx));
        Ok(Annotator {
            tx: Some(tx),
            stats,
            stop: Some(stop),
            task: Mutex::new(Some(task)),
            target,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Checks a reloaded `[grafana]` for an enabled annotator; the returned
    /// change is applied with [`Annotator::retarget`] once the whole reload
    /// is known to apply. (Turning annotations on or off needs a restart.)
    pub fn check(config: &GrafanaConfig) -> Result<(), AnnotationError> {
        if config.url.trim().is_empty() {
            return Ok(());
        }
        Target::new(&config.url, config.token.expose()).map(|_| ())
    }

    /// Posts from now on go to `url` with `token` (a reload); queued ones too.
    pub fn retarget(&self, config: &GrafanaConfig) -> Result<(), AnnotationError> {
        if self.is_enabled() {
            *self.target.write() = Target::new(&config.url, config.token.expose())?;
        }
        Ok(())
    }

    /// A chaos episode of `chaos_type` began at `at`.
    pub fn episode_started(&self, chaos_type: &str, at: SystemTime, text: impl Into<String>) {
        self.post(Annotation {
            time: unix_ms(at),
            time_end: None,
            tags: vec!["chaos".to_owned(), chaos_type.to_owned()],
            text: text.into(),
        });
    }

    /// The episode that began at `started` ended at `resolved`: a region
    /// annotation over the whole episode.
    pub fn episode_resolved(
        &self,
        chaos_type: &str,
        started: SystemTime,
        resolved: SystemTime,
        text: impl Into<String>,
    ) {
        self.post(Annotation {
            time: unix_ms(started),
            time_end: Some(unix_ms(resolved)),
            tags: vec![
                "chaos".to_owned(),
                chaos_type.to_owned(),
                "resolved".to_owned(),
            ],
            text: text.into(),
        });
    }

    /// Turns chaos episode events into annotations until the chaos side
    /// goes away; `None` when disabled (nothing to subscribe for).
    pub fn follow(
        self: &Arc<Self>,
        mut events: broadcast::Receiver<EpisodeEvent>,
    ) -> Option<JoinHandle<()>> {
        if !self.is_enabled() {
            return None;
        }
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => me.episode(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        me.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }))
    }

    /// One episode event as an annotation (the link is already masked).
    fn episode(&self, e: &EpisodeEvent) {
        let chaos = e.chaos.as_str();
        let link = e.link.as_deref().unwrap_or("no report link");
        match e.kind {
            EventKind::Started => self.episode_started(
                chaos,
                e.at,
                format!("chaos \"{chaos}\" detected (episode {}): {link}", e.episode),
            ),
            EventKind::Resolved => {
                let lasted = e.duration.unwrap_or_default();
                let how = e.how.map_or("unknown", |h| h.as_str());
                self.episode_resolved(
                    chaos,
                    e.at.checked_sub(lasted).unwrap_or(e.at),
                    e.at,
                    format!(
                        "chaos \"{chaos}\" resolved ({how}) after {:.1} s (episode {}): {link}",
                        lasted.as_secs_f64(),
                        e.episode
                    ),
                )
            }
        }
    }

    /// Queues `annotation`; drops it (counted) when the queue is full.
    pub fn post(&self, annotation: Annotation) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(annotation) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "Grafana annotation queue full; annotation dropped"
                    );
                }
            }
        }
    }

    /// Annotations posted successfully.
    pub fn sent(&self) -> u64 {
        self.stats.sent.load(Ordering::Relaxed)
    }
    /// Annotations given up on after their tries (or refused by Grafana).
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }
    /// Annotations dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
    /// Tries sent again after a failed one.
    pub fn retries(&self) -> u64 {
        self.stats.retries.load(Ordering::Relaxed)
    }

    /// Posts what is queued (one try each, no backoff) within `limit`,
    /// then stops the task. Idempotent.
    pub async fn shutdown(&self, limit: Duration) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
        let task = self.task.lock().take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!("Grafana annotations still queued at shutdown were dropped");
                abort.abort();
            }
        }
    }
}

impl AdminPart for Annotator {
    fn name(&self) -> &'static str {
        "annotations"
    }
    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "enabled": self.is_enabled(),
            "target": self.target.read().uri.to_string(),
            "queued": self.stats.queued.load(Ordering::Relaxed),
            "sent": self.sent(),
            "retries": self.retries(),
            "failed": self.failed(),
            "dropped": self.dropped(),
        })
    }
}

/// The background side.
struct Poster {
    client: Client<Connector, Full<Bytes>>,
    target: Arc<parking_lot::RwLock<Target>>,
    options: AnnotatorOptions,
    stats: Arc<Stats>,
}

/// Why one POST did not succeed.
enum TryError {
    /// Worth another try: no answer, timeout, 429, 5xx.
    Transient(String),
    /// Not worth it: Grafana refused the annotation or the token.
    Refused(StatusCode),
}

impl Poster {
    async fn run(self, mut rx: mpsc::Receiver<Annotation>, mut stop: watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                a = rx.recv() => a,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(annotation) = next else { break };
            let stopped = self.post_with_retries(&annotation, &mut stop).await;
            if stopped {
                break;
            }
        }
        // Shutting down: one try for each queued annotation, no backoff.
        while let Ok(a) = rx.try_recv() {
            match self.try_post(&a).await {
                Ok(()) => self.stats.sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// Returns true when shutdown interrupted the backoff.
    async fn post_with_retries(&self, a: &Annotation, stop: &mut watch::Receiver<bool>) -> bool {
        let mut backoff = self.options.initial_backoff;
        let attempts = self.options.max_attempts.max(1);
        for attempt in 1..=attempts {
            match self.try_post(a).await {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(tags = ?a.tags, attempt, "Grafana annotation posted");
                    return false;
                }
                Err(TryError::Refused(status)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        status = status.as_u16(),
                        target = %self.target.read().uri,
                        "Grafana refused the annotation (check grafana.token and its permissions); not retried"
                    );
                    return false;
                }
                Err(TryError::Transient(reason)) if attempt < attempts => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    // Full jitter: anywhere in [0, backoff].
                    let wait = backoff.mul_f64(fastrand::f64());
                    tracing::debug!(%reason, attempt, ?wait, "Grafana annotation failed; retrying");
                    let stopping = tokio::select! {
                        _ = tokio::time::sleep(wait) => false,
                        r = stop.wait_for(|s| *s) => {
                            drop(r);
                            true
                        }
                    };
                    if stopping {
                        // Shutting down: one last try, then leave.
                        match self.try_post(a).await {
                            Ok(()) => self.stats.sent.fetch_add(1, Ordering::Relaxed),
                            Err(_) => self.stats.failed.fetch_add(1, Ordering::Relaxed),
                        };
                        return true;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
                Err(TryError::Transient(reason)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%reason, attempts, target = %self.target.read().uri, "Grafana annotation given up");
                    return false;
                }
            }
        }
        false
    }

    async fn try_post(&self, a: &Annotation) -> Result<(), TryError> {
        let body = serde_json::to_vec(a).map_err(|e| TryError::Transient(e.to_string()))?;
        let target = self.target.read().clone();
        let req = Request::builder()
            .method(Method::POST)
            .uri(target.uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, target.auth)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TryError::Transient(e.to_string()))?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| TryError::Transient(format!("no answer: {e}")))?;
            let status = res.status();
            // Read (and discard) the answer so the connection can be reused.
            let _ = res.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Err(TryError::Transient(format!("status {status}")))
            } else {
                Err(TryError::Refused(status))
            }
        };
        match tokio::time::timeout(self.options.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TryError::Transient(format!(
                "no answer within {:?}",
                self.options.request_timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn annotations_serialize_as_grafana_wants() {
        let a = Annotation {
            time: 1_700_000_000_000,
            time_end: None,
            tags: vec!["chaos".into(), "fail".into()],
            text: "chaos \"fail\" detected".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&a).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"time": 1_700_000_000_000u64, "tags": ["chaos", "fail"], "text": "chaos \"fail\" detected"})
        );
        let b = Annotation {
            time_end: Some(1_700_000_060_000),
            ..a
        };
        assert_eq!(
            serde_json::to_value(&b).expect("json")["timeEnd"],
            1_700_000_060_000u64
        );
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(matches!(
            Annotator::with_options("ftp://g", "t", AnnotatorOptions::default()),
            Err(AnnotationError::Url { .. })
        ));
        assert!(matches!(
            Annotator::with_options("http://g:3000", "", AnnotatorOptions::default()),
            Err(AnnotationError::NoToken)
        ));
        assert!(matches!(
            Annotator::with_options("http://g:3000", "t", AnnotatorOptions::default()),
            Err(AnnotationError::NoRuntime)
        ));
        let off = Annotator::start(&GrafanaConfig::default()).expect("disabled");
        assert!(!off.is_enabled());
        off.episode_started("fail", SystemTime::now(), "ignored");
        assert_eq!(off.dropped(), 0);
    }

    /// A loopback "Grafana" that records every request and answers the
    /// first `fail_first` with `fail_status`, the rest 200 (or never, with
    /// `hang`).
    /// Method, path, headers, body.
    type Seen = (Method, String, http::HeaderMap, Bytes);

    struct Recorder {
        url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    async fn recorder(fail_first: usize, fail_status: StatusCode, hang: bool) -> Recorder {
        use hyper::server::conn::http1;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen2.clone();
                let count = count.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    let count = count.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        seen.lock().push((
                            parts.method,
                            parts.uri.path().to_owned(),
                            parts.headers,
                            body,
                        ));
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        let n = count.fetch_add(1, Ordering::SeqCst) as usize;
                        let mut res =
                            http::Response::new(Full::new(Bytes::from_static(b"{\"id\":1}")));
                        if n < fail_first {
                            *res.status_mut() = fail_status;
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        Recorder {
            url: format!("http://{addr}/grafana/"),
            seen,
        }
    }

    fn fast() -> AnnotatorOptions {
        AnnotatorOptions {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
            ..AnnotatorOptions::default()
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_failed_post_is_retried_then_delivered() {
        let grafana = recorder(1, StatusCode::SERVICE_UNAVAILABLE, false).await;
        let a = Annotator::with_options(&grafana.url, "tok-123", fast()).expect("starts");
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        a.episode_started("fail", at, "chaos fail detected");
        until("the annotation is sent", || a.sent() == 1).await;
        assert_eq!(a.retries(), 1);
        assert_eq!(a.failed(), 0);
        {
            let seen = grafana.seen.lock();
            assert_eq!(seen.len(), 2, "one failure, one success");
            for (method, path, headers, body) in seen.iter() {
                assert_eq!(method, Method::POST);
                assert_eq!(path, "/grafana/api/annotations");
                assert_eq!(headers[header::AUTHORIZATION], "Bearer tok-123");
                assert_eq!(headers[header::CONTENT_TYPE], "application/json");
                let v: serde_json::Value = serde_json::from_slice(body).expect("json body");
                assert_eq!(
                    v,
                    serde_json::json!({"time": 1_700_000_000_123u64, "tags": ["chaos", "fail"], "text": "chaos fail detected"})
                );
            }
        }
        a.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_resolution_is_a_region_over_the_episode() {
        let grafana = recorder(0, StatusCode::OK, false).await;
        let a = Annotator::with_options(&grafana.url, "tok", fast()).expect("starts");
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        a.episode_resolved(
            "badjwt",
            start,
            start + Duration::from_secs(90),
            "resolved by following the report link",
        );
        until("the annotation is sent", || a.sent() == 1).await;
        let seen = grafana.seen.lock();
        let v: serde_json::Value = serde_json::from_slice(&seen[0].3).expect("json");
        assert_eq!(v["time"], 1_700_000_000_000u64);
        assert_eq!(v["timeEnd"], 1_700_000_090_000u64);
        assert_eq!(
            v["tags"],
            serde_json::json!(["chaos", "badjwt", "resolved"])
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_not_retried() {
        let grafana = recorder(usize::MAX, StatusCode::UNAUTHORIZED, false).await;
        let a = Annotator::with_options(&grafana.url, "wrong", fast()).expect("starts");
        a.episode_started("fail", SystemTime::now(), "x");
        until("the annotation is given up", || a.failed() == 1).await;
        assert_eq!(a.retries(), 0);
        assert_eq!(grafana.seen.lock().len(), 1);
    }

    #[tokio::test]
    async fn transient_failures_give_up_after_max_attempts() {
        let grafana = recorder(usize::MAX, StatusCode::BAD_GATEWAY, false).await;
        let options = AnnotatorOptions {
            max_attempts: 3,
            ..fast()
        };
        let a = Annotator::with_options(&grafana.url, "tok", options).expect("starts");
        a.episode_started("throttle", SystemTime::now(), "x");
        until("the annotation is given up", || a.failed() == 1).await;
        assert_eq!(a.retries(), 2);
        assert_eq!(grafana.seen.lock().len(), 3);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let grafana = recorder(0, StatusCode::OK, true).await;
        let options = AnnotatorOptions { queue: 1, ..fast() };
        let a = Annotator::with_options(&grafana.url, "tok", options).expect("starts");
        // No await in between: the posting task cannot take any yet.
        for _ in 0..5 {
            a.episode_started("fail", SystemTime::now(), "x");
        }
        assert_eq!(a.dropped(), 4);
        a.shutdown(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn the_token_never_shows_in_debug() {
        let a = Annotator::with_options(
            "http://127.0.0.1:9",
            "s3cr3t-token",
            AnnotatorOptions::default(),
        )
        .expect("starts");
        let shown = format!("{a:?} {}", a.status());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        a.shutdown(Duration::from_millis(1)).await;
    }
}
