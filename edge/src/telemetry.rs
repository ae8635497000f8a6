//! Request traces: one span per request (an OpenTelemetry SERVER span continuing the client's
//! W3C `traceparent`), a child span per phase and one CLIENT span per provider attempt, named
//! and attributed after the OpenTelemetry GenAI semantic conventions.
//!
//! Every span here has the target [`TARGET`]. The binary sends that target to the OpenTelemetry
//! layer only, and only when an OTLP exporter is configured: otherwise the spans are disabled
//! at their call sites and cost a relaxed atomic load each. No span carries prompt or answer
//! text, a key or a credential.

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tollgate_policy::model::{Deployment, Provider};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Phase;

/// The target of the request spans (the binary routes it to the OpenTelemetry layer).
pub const TARGET: &str = "tollgate::request";

/// The root span of one request on `route`.
pub fn request_span(route: &'static str, request_id: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = route,
        otel.kind = "server",
        otel.status_code = Empty,
        http.route = route,
        http.response.status_code = Empty,
        error.type = Empty,
        tollgate.request_id = request_id,
        tollgate.key_id = Empty,
        tollgate.team_id = Empty,
        tollgate.deployment_id = Empty,
        tollgate.cost_usd = Empty,
        tollgate.cache_hit = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.provider.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    if !span.is_disabled()
        && let Some(parent) = traceparent(headers)
    {
        // Fails only when the span has already started, which it cannot have here.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    span
}

/// The span of one provider attempt (`attempt` counts from 1 across the request).
pub fn attempt_span(operation: &'static str, deployment: &Deployment, attempt: u32) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "provider call",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        error.type = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = provider_name(deployment.provider),
        gen_ai.request.model = deployment.upstream_model.as_str(),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        tollgate.deployment_id = deployment.id.as_str(),
        tollgate.attempt = attempt,
    );
    if !span.is_disabled() {
        // GenAI span names are "{operation} {model}".
        span.record(
            "otel.name",
            format!("{operation} {}", deployment.upstream_model),
        );
    }
    span
}

/// The span of a phase of the request path.
pub fn phase_span(phase: Phase) -> Span {
    tracing::info_span!(
        target: TARGET,
        "phase",
        otel.name = phase.name(),
        error.type = Empty,
        tollgate.guardrails_intervened = Empty,
    )
}

/// Marks `span` as failed with the contract error `code`.
pub fn fail(span: &Span, code: &str) {
    span.record("error.type", code);
    span.record("otel.status_code", "ERROR");
}

/// The request's trace id as 32 hex digits: the span's when tracing is on, else the client's
/// `traceparent`'s; empty when neither.
pub fn trace_id(span: &Span, headers: &HeaderMap) -> String {
    if !span.is_disabled() {
        let id = span.context().span().span_context().trace_id();
        if id != TraceId::INVALID {
            return id.to_string();
        }
    }
    traceparent(headers).map_or_else(String::new, |parent| parent.trace_id().to_string())
}

/// The remote parent a W3C `traceparent` header names (version 00 and forward-compatible
/// versions; an invalid header starts a new trace, as the recommendation says).
fn traceparent(headers: &HeaderMap) -> Option<SpanContext> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let lowercase = |s: &str| !s.bytes().any(|b| b.is_ascii_uppercase());
    if !hex(version, 2) || version == "ff" || !lowercase(value) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(parent).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let state = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// `gen_ai.provider.name`: the convention's well-known values where one exists.
pub fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "openai",
        Provider::OpenaiCompatible => "openai_compatible",
        Provider::Anthropic => "anthropic",
        Provider::Bedrock => "aws.bedrock",
        Provider::Sagemaker => "aws.sagemaker",
        Provider::AzureOpenai => "azure.ai.openai",
        Provider::Gemini => "gcp.gemini",
        Provider::Mock => "mock",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", value.parse().expect("header"));
        headers
    }

    #[test]
    fn a_valid_traceparent_names_the_remote_parent() {
        let parent = traceparent(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .expect("parsed");
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_sampled());
        assert!(parent.is_remote());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for value in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(traceparent(&headers(value)).is_none(), "{value}");
        }
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert!(traceparent(&headers(future)).is_some());
    }

    #[test]
    fn without_tracing_the_trace_id_is_the_clients() {
        let span = Span::none();
        let id = trace_id(
            &span,
            &headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        assert_eq!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace_id(&span, &HeaderMap::new()), "");
    }
}
