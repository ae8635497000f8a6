//! What the fake AWS runtimes (Bedrock, SageMaker) share of AWS's wire: the one handler of
//! their calls, the call as recorded, the SigV4 check, restJson1 errors and binary
//! event-stream frames and streams.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::fake_server::{Logged, WithBody, find_header, recorded_headers};

/// A model or endpoint that fails on command: (its name, status, error type, message).
pub type Failure = (&'static str, u16, &'static str, &'static str);

/// What a fake AWS runtime does its own way: which operations it serves, how it refuses a call
/// (its checks, in its service's order) and how it answers one it let through. [`handle`] does
/// the rest.
pub trait AwsRuntime: Default + Send + Sync + 'static {
    /// The operations served: the last segment of their paths.
    const OPERATIONS: &'static [&'static str];

    /// Refuses `call` as the service would, or lets it through (after a pause, for `hang`).
    fn admit(
        call: &AwsCall,
        headers: &HeaderMap,
    ) -> impl Future<Output = Result<(), Response>> + Send;

    /// The answer to a call that was let through.
    fn respond(&self, call: &AwsCall) -> Response;
}

/// `POST …/{resource}/{operation}` on the fake runtime `R`: recorded whatever it holds, then
/// refused or answered as `R` says.
pub async fn handle<R: AwsRuntime>(
    State(shared): State<Arc<Logged<AwsCall, R>>>,
    Path((resource, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !R::OPERATIONS.contains(&operation.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let value = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let call = AwsCall::new(&operation, &resource, &headers, value);
    shared.log.record(call.clone());
    match R::admit(&call, &headers).await {
        Ok(()) => shared.respond(&call),
        Err(refusal) => refusal,
    }
}

/// What every fake AWS runtime refuses, in this order: a call that is not signed, and one to
/// a resource of `failures`; answered as the service `namespace` does.
pub fn common_refusal(
    call: &AwsCall,
    headers: &HeaderMap,
    failures: &[Failure],
    namespace: &str,
) -> Option<Response> {
    let refusal =
        |status, kind, message| error(status, kind, namespace, json!({"message": message}));
    if !is_signed(headers) {
        let message = "Missing Authentication Token";
        return Some(refusal(403, "MissingAuthenticationTokenException", message));
    }
    let &(_, status, kind, message) = failures.iter().find(|f| f.0 == call.resource)?;
    Some(refusal(status, kind, message))
}

/// One call of an AWS runtime API as a fake received it.
#[derive(Clone, Debug)]
pub struct AwsCall {
    /// The operation, named by its path: `converse`, `invocations-response-stream`, …
    pub operation: String,
    /// What the path names, percent-decoded: a Bedrock model id, a SageMaker endpoint.
    pub resource: String,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`null` when it was not JSON).
    pub body: Value,
}

impl AwsCall {
    /// Records a call.
    pub fn new(operation: &str, resource: &str, headers: &HeaderMap, body: Value) -> AwsCall {
        AwsCall {
            operation: operation.to_owned(),
            resource: resource.to_owned(),
            headers: recorded_headers(headers),
            body,
        }
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Checks that the call is SigV4-signed with `access_key_id` for `region` and `service`,
    /// and that its signature does not give away `secret`.
    pub fn check_signed_by(
        &self,
        access_key_id: &str,
        (region, service): (&str, &str),
        secret: &str,
    ) -> anyhow::Result<()> {
        let authorization = self.header("authorization").unwrap_or_default();
        let credential = format!("AWS4-HMAC-SHA256 Credential={access_key_id}/");
        let scope = format!("/{region}/{service}/aws4_request");
        anyhow::ensure!(
            authorization.starts_with(&credential) && authorization.contains(&scope),
            "not signed by {access_key_id} for {region} {service}: {authorization}"
        );
        anyhow::ensure!(authorization.contains("Signature="), "{authorization}");
        anyhow::ensure!(!authorization.contains(secret), "the secret was sent");
        anyhow::ensure!(self.header("x-amz-date").is_some(), "no x-amz-date");
        Ok(())
    }
}

impl WithBody for AwsCall {
    fn body(&self) -> &Value {
        &self.body
    }
}

/// Whether a request carries a SigV4 signature (the fakes check its presence, not its value).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential="))
}

/// A restJson1 error: the type in `x-amzn-errortype` qualified by the service's `namespace`
/// (`com.amazon.bedrock`), the fields in the body, and a request id.
pub fn error(status: u16, kind: &str, namespace: &str, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = format!("{kind}:http://internal.amazon.com/coral/{namespace}/");
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = kind.parse() {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    if let Ok(value) = uuid::Uuid::new_v4().to_string().parse() {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// An AWS event stream of `events`, each after `pause`, that stops for 30 s after the second
/// when `stall` says so; `headers` go beside its content type.
pub fn event_stream(
    events: Vec<Bytes>,
    pause: Duration,
    stall: bool,
    headers: &[(&'static str, &'static str)],
) -> Response {
    let events =
        futures::stream::iter(events.into_iter().enumerate()).then(move |(i, event)| async move {
            tokio::time::sleep(pause).await;
            if stall && i == 2 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok::<_, std::io::Error>(event)
        });
    let mut response = Body::from_stream(events).into_response();
    let map = response.headers_mut();
    map.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    for (name, value) in headers {
        map.insert(
            HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    response
}

/// One event-stream event of type `kind` carrying `payload` of `content_type`.
pub fn event(kind: &str, content_type: &str, payload: Vec<u8>) -> Bytes {
    frame(
        Message::new(payload),
        "event",
        ":event-type",
        kind,
        content_type,
    )
}

/// One in-stream exception of type `kind` with a JSON `payload`.
pub fn exception(kind: &str, payload: &Value) -> Bytes {
    let message = Message::new(payload.to_string());
    frame(
        message,
        "exception",
        ":exception-type",
        kind,
        "application/json",
    )
}

fn frame(
    message: Message,
    message_type: &str,
    type_header: &'static str,
    kind: &str,
    content_type: &str,
) -> Bytes {
    let message = message
        .add_header(Header::new(
            type_header,
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String(content_type.to_owned().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_owned().into()),
        ));
    let mut buffer = Vec::new();
    // Writing to a Vec fails only for oversized headers, which these are not.
    let _ = write_message_to(&message, &mut buffer);
    Bytes::from(buffer)
}
