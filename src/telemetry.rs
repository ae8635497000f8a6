//! Logs and traces of every role.
//!
//! Logs go to stderr (stdout belongs to the CLI's output), filtered by `RUST_LOG` (default
//! `info`), as text or, with `TOLLGATE_LOG_FORMAT=json`, one JSON object per line with the
//! event's fields at the top level (`timestamp`, `level`, `target`, `message`, …), as
//! CloudWatch Logs Insights and other collectors read them.
//!
//! Traces are exported over OTLP when the standard variables name an endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the exporter, the
//! sampler (`OTEL_TRACES_SAMPLER`), the batch processor (`OTEL_BSP_*`) and the resource
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) read the rest of the standard variables
//! themselves. Only the request spans (target [`tollgate_edge::telemetry::TARGET`]) are
//! exported, and they never reach the logs.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tollgate_edge::telemetry::TARGET as REQUEST_SPANS;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt};

/// The trace exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (within the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(error) = traces.shutdown()
        {
            tracing::warn!(%error, "the last traces could not be exported");
        }
    }
}

/// Installs the logger and, for a serving role named `service` (`None` for the CLI), the trace
/// exporter when one is configured.
pub fn init(service: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(format!("{REQUEST_SPANS}=off").parse()?);
    let logs: Box<dyn Layer<Registry> + Send + Sync> =
        match std::env::var("TOLLGATE_LOG_FORMAT").as_deref() {
            Err(_) | Ok("" | "text") => fmt::layer().with_writer(std::io::stderr).boxed(),
            Ok("json") => fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
            Ok(other) => anyhow::bail!("TOLLGATE_LOG_FORMAT must be json or text, got {other:?}"),
        };
    let traces = match service {
        Some(service) if exporter_configured() => Some(tracer_provider(service)?),
        _ => None,
    };
    let spans = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tollgate"))
            .with_filter(Targets::new().with_target(REQUEST_SPANS, Level::INFO))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init()
        .context("installing the logger")?;
    if let Some(service) = service.filter(|_| traces.is_some()) {
        tracing::info!(service, "exporting request traces over OTLP");
    }
    Ok(Telemetry { traces })
}

/// Whether the standard variables ask for traces.
fn exporter_configured() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracer provider: OTLP over gRPC or HTTP/protobuf (`OTEL_EXPORTER_OTLP_PROTOCOL`), in
/// batches, with `service` as the default service name.
fn tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .context("configuring the OTLP trace exporter from OTEL_EXPORTER_OTLP_*")?;
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
