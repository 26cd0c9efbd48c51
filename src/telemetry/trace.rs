//! Traces: the tracer handle the layers share, and W3C trace-context
//! propagation over `http::HeaderMap`.
//!
//! [`Tracing`] is `None` inside when traces are off (no endpoint, or
//! `telemetry.traces = false`): the layers then check one `Option` and do
//! nothing else, and an incoming `traceparent` passes through untouched.
//! When on, the server layer continues the caller's trace (extracting
//! `traceparent`/`tracestate`), and the client layer makes a child span per
//! try and injects *its* context, so the factory's view of the trace hangs
//! under the try that reached it.
//!
//! Span attributes never include `url.path` or `url.full`: report links
//! carry the vendor's apiKey in their path. Only the normalised route is
//! recorded.

use std::borrow::Cow;
use std::fmt;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

use super::metrics::{Route, method_str};

/// The tracer, or nothing when traces are off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracing {
    tracer: Option<SdkTracer>,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("enabled", &self.tracer.is_some())
            .finish()
    }
}

impl Tracing {
    pub fn disabled() -> Tracing {
        Tracing { tracer: None }
    }

    /// Traces through `tracer` (tests pass one from their own provider).
    pub fn enabled(tracer: SdkTracer) -> Tracing {
        Tracing {
            tracer: Some(tracer),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Starts the server span of a request from the service, child of the
    /// caller's `traceparent` when it sent one.
    pub(crate) fn server_span(
        &self,
        headers: &HeaderMap,
        method: &http::Method,
        version: http::Version,
        route: Route,
        forwarded_for: Option<&http::HeaderValue>,
    ) -> Option<Context> {
        let tracer = self.tracer.as_ref()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let method = method_str(method);
        let name: Cow<'static, str> = match route {
            Route::Other => Cow::Borrowed(method),
            known => Cow::Owned(format!("{method} {}", known.as_str())),
        };
        let mut attrs = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("network.protocol.version", protocol_version(version)),
        ];
        if route != Route::Other {
            attrs.push(KeyValue::new("http.route", route.as_str()));
        }
        // The server appended the peer to `x-forwarded-for`: the first hop
        // is the client (OTel: the address behind any intermediaries), the
        // last one the peer of this connection.
        let hops = forwarded_for.and_then(|v| v.to_str().ok());
        if let Some(hops) = hops {
            let mut all = hops.split(',').map(str::trim).filter(|h| !h.is_empty());
            if let Some(first) = all.next() {
                let last = all.next_back().unwrap_or(first);
                attrs.push(KeyValue::new("client.address", first.to_owned()));
                attrs.push(KeyValue::new("network.peer.address", last.to_owned()));
            }
        }
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
        Some(parent.with_span(span))
    }

    /// Starts the client span of one try, child of the current context
    /// (the server span, carried by the server layer's future), and writes
    /// its `traceparent` into `headers`.
    pub(crate) fn client_span(
        &self,
        headers: &mut HeaderMap,
        method: &http::Method,
        server_address: &KeyValue,
        route: Route,
    ) -> Option<Context> {
        let tracer = self.tracer.as_ref()?;
        let parent = Context::current();
        let method = method_str(method);
        let mut attrs = vec![
            KeyValue::new("http.request.method", method),
            server_address.clone(),
        ];
        if route != Route::Other {
            attrs.push(KeyValue::new("url.template", route.as_str()));
        }
        let span = tracer
            .span_builder(method)
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        Some(cx)
    }
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A tracer whose ended spans land in a vector, for layer tests.

    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::Context;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
    use parking_lot::Mutex;

    use super::Tracing;

    #[derive(Debug, Default, Clone)]
    pub(crate) struct Collected(pub Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Collected {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    pub(crate) fn tracing() -> (Tracing, Collected, SdkTracerProvider) {
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(collected.clone())
            .build();
        (
            Tracing::enabled(provider.tracer("test")),
            collected,
            provider,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn disabled_tracing_touches_nothing() {
        let t = Tracing::disabled();
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let before = headers.clone();
        assert!(
            t.client_span(
                &mut headers,
                &http::Method::GET,
                &KeyValue::new("server.address", "f"),
                Route::Other
            )
            .is_none()
        );
        assert_eq!(headers, before);
    }

    #[test]
    fn server_span_continues_the_callers_trace_and_client_span_injects_its_own() {
        let (t, collected, _provider) = testing::tracing();
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let server = t
            .server_span(
                &headers,
                &http::Method::POST,
                http::Version::HTTP_11,
                Route::Order,
                Some(&HeaderValue::from_static("203.0.113.7, 10.0.0.1")),
            )
            .expect("span");
        let server_sc = server.span().span_context().clone();
        assert_eq!(
            server_sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let mut out = headers.clone();
        let client = {
            let _g = server.clone().attach();
            t.client_span(
                &mut out,
                &http::Method::POST,
                &KeyValue::new("server.address", "f"),
                Route::Order,
            )
            .expect("span")
        };
        let client_sc = client.span().span_context().clone();
        let tp = out["traceparent"].to_str().expect("ascii");
        assert_eq!(
            tp,
            format!("00-{}-{}-01", client_sc.trace_id(), client_sc.span_id())
        );
        assert_ne!(client_sc.span_id(), server_sc.span_id());
        client.span().end();
        server.span().end();
        let spans = collected.0.lock();
        let c = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .expect("client span");
        assert_eq!(c.parent_span_id, server_sc.span_id());
        let s = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Server)
            .expect("server span");
        assert_eq!(s.name, "POST /api/order");
        assert_eq!(s.parent_span_id.to_string(), "b7ad6b7169203331");
        let attr = |key: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("client.address").as_deref(), Some("203.0.113.7"));
        assert_eq!(attr("network.peer.address").as_deref(), Some("10.0.0.1"));
    }
}
