//! What the fake AWS runtimes (Bedrock, SageMaker) share of AWS's wire: the call as recorded,
//! the SigV4 check, restJson1 errors and binary event-stream frames.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::fake_server::{find_header, recorded_headers};

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
