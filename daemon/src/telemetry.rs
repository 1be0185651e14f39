//! Traces over OpenTelemetry, configured by the standard variables and off unless one of
//! them names where to send spans:
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` turns traces on;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` / `…_TRACES_PROTOCOL`: `http/protobuf` (the default; the
//!   one compiled in, so `grpc` and `http/json` are refused at start with that reason);
//! - `OTEL_SERVICE_NAME` (default `taskd`), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (the SDK reads them), and
//!   `OTEL_SDK_DISABLED=true`.
//!
//! Off, nothing is built: no layer joins the subscriber and the request and attempt code
//! checks one flag ([`on`]) before it makes a span for the exporter. On, spans go through a
//! batch exporter on a thread of its own (OTLP over HTTP through reqwest), flushed at exit.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once, at start).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The exporter while it runs; [`Traces::shutdown`] flushes what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("taskd: flushing the last spans failed: {error}");
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment asks for traces.
pub fn wanted() -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
}

/// The layer that hands spans to the exporter.
pub type SpanLayer<S> =
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// The exporter and the layer that feeds it, when the environment asks for traces; an error
/// names a setting taskd cannot honour.
pub fn start<S>() -> Result<Option<(Traces, SpanLayer<S>)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !wanted() {
        return Ok(None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".to_owned());
    if protocol != "http/protobuf" {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: taskd exports traces over http/protobuf only"
        ));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    // The SDK reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is; OTEL_EXPORTER_OTLP_ENDPOINT
    // is a base to which the signal's path is added.
    if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT")
    {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|error| format!("cannot start the OTLP trace exporter: {error}"))?;
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "taskd".to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("taskd");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ON.store(true, Ordering::Relaxed);
    Ok(Some((
        Traces { provider },
        tracing_opentelemetry::layer().with_tracer(tracer),
    )))
}

/// Reads `traceparent` / `tracestate` from HTTP headers.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// The trace context a request's `traceparent` header carries (an empty one without).
pub fn context_of(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}
