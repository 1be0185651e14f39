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
    // OTEL_SERVICE_NAME, then a service.name in OTEL_RESOURCE_ATTRIBUTES (the builder reads
    // both), then `taskd`.
    let named_in_attributes = var("OTEL_RESOURCE_ATTRIBUTES")
        .is_some_and(|attributes| attributes.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() && !named_in_attributes {
        resource = resource.with_service_name("taskd");
    }
    let resource = resource
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
    // The claim spans are made after the fact, with their own times, through the API.
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ON.store(true, Ordering::Relaxed);
    Ok(Some((
        Traces { provider },
        tracing_opentelemetry::layer().with_tracer(tracer),
    )))
}

/// The `traceparent` of a context, if it holds a valid span.
fn traceparent_of(cx: &opentelemetry::Context) -> Option<String> {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The context a stored `traceparent` names.
pub fn context_from(traceparent: &str) -> opentelemetry::Context {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The current span's `traceparent` when traces are on (None off, or outside a span).
pub fn current() -> Option<String> {
    if !on() {
        return None;
    }
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    traceparent_of(&tracing::Span::current().context())
}

/// The `traceparent` a submit records with its tasks: with traces on, the request's span (a
/// child of the caller's `traceparent`); off, the caller's header as it came, when well
/// formed, so that a worker exporting traces still joins the caller's trace.
pub fn submitted_in(headers: &axum::http::HeaderMap) -> Option<String> {
    current().or_else(|| {
        headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(taskplane_api::valid_traceparent)
    })
}

/// The `traceparent` an attempt passes on (the `http` kind's header, `TRACEPARENT` for a
/// program, a remote worker's lease): the attempt's own span with traces on, else the one
/// its task was submitted in.
pub fn passed_on(stored: Option<&str>) -> Option<String> {
    current().or_else(|| stored.map(str::to_owned))
}

/// Makes the current span (an attempt's) a child of the `traceparent` its task was
/// submitted in; nothing with traces off.
pub fn join(span: &tracing::Span, stored: Option<&str>) {
    if let (true, Some(traceparent)) = (on(), stored) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span.set_parent(context_from(traceparent));
    }
}

/// Records the claim of `task` by `worker`, from `started` to now, as a `task.claim` span in
/// the trace the task was submitted in (a sibling of the attempt that follows); nothing with
/// traces off. Made after the fact so that a claim that finds nothing makes no span.
pub fn claimed(started: std::time::SystemTime, task: &crate::store::ClaimedTask, worker: &str) {
    if !on() {
        return;
    }
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, Tracer as _};
    let tracer = opentelemetry::global::tracer("taskd");
    let parent = task
        .trace_parent
        .as_deref()
        .map(context_from)
        .unwrap_or_default();
    let mut span = tracer
        .span_builder("task.claim")
        .with_start_time(started)
        .with_attributes(vec![
            KeyValue::new("task_id", task.id.to_string()),
            KeyValue::new("kind", task.kind.clone()),
            KeyValue::new("queue", task.queue.clone()),
            KeyValue::new("attempt", i64::from(task.attempt)),
            KeyValue::new("worker", worker.to_owned()),
        ])
        .start_with_context(&tracer, &parent);
    span.end();
}

/// Runs `work` in a span named `name` (a child of the current one) when traces are on; as it
/// is otherwise. Work on one `task` names it in the span, so the log lines written in it
/// keep naming the task.
pub async fn traced<F: std::future::Future>(
    name: &'static str,
    task: Option<uuid::Uuid>,
    work: F,
) -> F::Output {
    if !on() {
        return work.await;
    }
    use tracing::Instrument as _;
    let span = tracing::info_span!("step", otel.name = name, task_id = tracing::field::Empty);
    if let Some(task) = task {
        span.record("task_id", tracing::field::display(task));
    }
    work.instrument(span).await
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
