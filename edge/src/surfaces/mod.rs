//! Client surfaces: the wire formats requests arrive in besides OpenAI's chat — Bedrock's runtime
//! API (what boto3 sends), Anthropic's Messages API and OpenAI's Responses API. Each is translated to an OpenAI chat (or
//! embeddings) request on the way in, so that one pipeline applies the same policy whatever the
//! surface, and the pipeline's answer is rendered back in the surface's format on the way out:
//! complete answers, streams (an OpenAI stream re-framed as the surface's events as it flows)
//! and errors. Surfaces know nothing of providers: a boto3 `converse` call may be served by
//! OpenAI, and an Anthropic SDK call by Bedrock.

pub mod anthropic;
pub mod bedrock;
pub mod chat;
pub mod reply;
pub mod responses;

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use tollgate_policy::PolicyState;

use crate::codec::sse::DataFramer;
use crate::error::EdgeError;
use reply::{Reply, StreamReader};

/// The API a request came in through: it decides how errors are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    OpenAi,
    /// `/model/{modelId}/…`: Bedrock's runtime API.
    Bedrock,
    /// `/v1/messages`.
    Anthropic,
}

/// How the pipeline's answer is rendered for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Present {
    /// As is (the OpenAI surface).
    OpenAi,
    /// Bedrock `Converse` output, or `ConverseStream` events.
    Converse,
    /// An Anthropic `message`, or its events as SSE.
    Messages,
    /// An OpenAI `response` object, or its events as SSE.
    Responses,
    /// An Anthropic `message` from Bedrock's `InvokeModel`, or its events as Bedrock `chunk`s.
    InvokeMessages,
    /// Titan's embedding answer (`InvokeModel` with an `inputText` body).
    TitanEmbedding,
    /// Cohere's embeddings answer, which repeats the request's `texts`.
    CohereEmbeddings { texts: Vec<Value> },
}

/// A translated route, and what its path says.
#[derive(Clone, Debug)]
pub enum Route {
    /// `/model/{modelId}/converse` and `/converse-stream`.
    Converse { model_id: String, stream: bool },
    /// `/model/{modelId}/invoke` and `/invoke-with-response-stream`.
    Invoke { model_id: String, stream: bool },
    /// `/v1/messages`.
    Messages,
    /// `/v1/responses`.
    Responses,
}

impl Route {
    /// The surface whose errors the route answers with.
    pub fn surface(&self) -> Surface {
        match self {
            Route::Converse { .. } | Route::Invoke { .. } => Surface::Bedrock,
            Route::Messages => Surface::Anthropic,
            Route::Responses => Surface::OpenAi,
        }
    }

    /// The route's name in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Converse { .. } => "converse",
            Route::Invoke { .. } => "invoke",
            Route::Messages => "messages",
            Route::Responses => "responses",
        }
    }
}

/// Translates a request body that came in on `route` into the pipeline's terms.
pub fn translate(route: &Route, state: &PolicyState, body: &[u8]) -> Result<Translated, EdgeError> {
    let translated = match route {
        Route::Converse { model_id, stream } => {
            let model = bedrock::resolve_model(state, model_id);
            bedrock::converse::chat_request(body, &model, *stream)
                .map(|chat| Translated::chat(chat, Present::Converse))
        }
        Route::Invoke { model_id, stream } => {
            let model = bedrock::resolve_model(state, model_id);
            bedrock::invoke::translate(body, &model, *stream)
        }
        Route::Messages => anthropic::chat_request(body, None, false)
            .map(|chat| Translated::chat(chat, Present::Messages)),
        Route::Responses => {
            responses::chat_request(body).map(|chat| Translated::chat(chat, Present::Responses))
        }
    };
    translated.map_err(EdgeError::InvalidRequest)
}

/// A request translated for the pipeline.
pub struct Translated {
    /// An OpenAI chat or embeddings request body.
    pub body: Bytes,
    pub embeddings: bool,
    pub present: Present,
}

impl Translated {
    fn chat(chat: Value, present: Present) -> Translated {
        Translated {
            body: Bytes::from(chat.to_string()),
            embeddings: false,
            present,
        }
    }
}

/// Renders a complete answer (an OpenAI chat completion or embeddings list) for the client.
pub fn render_answer(present: &Present, answer: Bytes, model: &str, started: Instant) -> Response {
    let json = |value: Value| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    let unreadable = || EdgeError::Upstream("the provider's answer could not be read".into());
    match present {
        Present::OpenAi => ([(header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Present::Converse | Present::Messages | Present::InvokeMessages | Present::Responses => {
            let Some(reply) = Reply::from_openai(&answer) else {
                let surface = match present {
                    Present::Messages => Surface::Anthropic,
                    Present::Responses => Surface::OpenAi,
                    _ => Surface::Bedrock,
                };
                return render_error(surface, &unreadable());
            };
            match present {
                Present::Converse => {
                    let latency = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
                    json(bedrock::converse::answer(&reply, latency))
                }
                Present::Responses => json(responses::answer(&reply, model)),
                _ => json(anthropic::answer(&reply, model)),
            }
        }
        Present::TitanEmbedding | Present::CohereEmbeddings { .. } => {
            match bedrock::invoke::embeddings_answer(present, &answer) {
                Some(value) => json(value),
                None => render_error(Surface::Bedrock, &unreadable()),
            }
        }
    }
}

/// Renders an OpenAI chat stream (as the relay sends it) in the client's format, as it flows.
pub fn render_stream<S>(present: &Present, stream: S, model: &str, started: Instant) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let sse = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let writer = match present {
        Present::Converse => Writer::Converse(bedrock::converse::StreamWriter::new(started)),
        Present::Messages => Writer::Messages(anthropic::StreamWriter::new(model)),
        Present::Responses => Writer::Responses(responses::StreamWriter::new(model)),
        Present::InvokeMessages => {
            Writer::InvokeMessages(anthropic::StreamWriter::new(model), started)
        }
        // Embeddings never stream.
        _ => return (sse, Body::from_stream(stream)).into_response(),
    };
    let content_type = match writer {
        Writer::Messages(_) | Writer::Responses(_) => "text/event-stream",
        _ => bedrock::eventstream::CONTENT_TYPE,
    };
    let translating = Translating {
        framer: DataFramer::default(),
        reader: StreamReader::default(),
        writer,
    };
    let body = futures::stream::unfold(
        (Box::pin(stream), Some(translating)),
        |(mut stream, translating)| async move {
            let mut translating = translating?;
            match stream.next().await {
                Some(Ok(bytes)) => {
                    let out = translating.push(&bytes);
                    Some((Ok(out), (stream, Some(translating))))
                }
                Some(Err(error)) => Some((Err(error), (stream, None))),
                None => Some((Ok(translating.finish()), (stream, None))),
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// A surface's stream: the deltas of the pipeline's chat stream in, the surface's events out.
pub trait EventWriter {
    /// One event, before it is framed for the wire.
    type Event;

    /// The events for one delta.
    fn write(&mut self, delta: reply::Delta, out: &mut Vec<Self::Event>);

    /// The events that end the stream (an error when it was cut before it finished).
    fn finish(&mut self, out: &mut Vec<Self::Event>);
}

/// The events `writer` answers `delta` with, or those ending the stream when `None`.
fn events<W: EventWriter>(writer: &mut W, delta: Option<reply::Delta>) -> Vec<W::Event> {
    let mut out = Vec::new();
    match delta {
        Some(delta) => writer.write(delta, &mut out),
        None => writer.finish(&mut out),
    }
    out
}

enum Writer {
    Converse(bedrock::converse::StreamWriter),
    Messages(anthropic::StreamWriter),
    Responses(responses::StreamWriter),
    InvokeMessages(anthropic::StreamWriter, Instant),
}

impl Writer {
    /// Frames for the wire the events answering `delta`, or those ending the stream (`None`).
    fn frame(&mut self, delta: Option<reply::Delta>, out: &mut Vec<u8>) {
        match self {
            Writer::Converse(writer) => {
                events(writer, delta)
                    .iter()
                    .for_each(|frame| out.extend_from_slice(frame));
            }
            Writer::Messages(writer) => sse(&events(writer, delta), out),
            Writer::Responses(writer) => sse(&events(writer, delta), out),
            Writer::InvokeMessages(writer, started) => {
                let events = events(writer, delta);
                bedrock::invoke::chunks(&events, writer.usage(), *started, out);
            }
        }
    }
}

/// The state of one translated stream.
struct Translating {
    framer: DataFramer,
    reader: StreamReader,
    writer: Writer,
}

impl Translating {
    fn push(&mut self, bytes: &[u8]) -> Bytes {
        // The relay sends whole events of bounded size; an oversized one has already failed it.
        let events = self.framer.push(bytes).unwrap_or_default();
        let mut out = Vec::new();
        for data in events {
            for delta in self.reader.read(&data) {
                self.writer.frame(Some(delta), &mut out);
            }
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if let Some(data) = self.framer.rest() {
            for delta in self.reader.read(&data) {
                self.writer.frame(Some(delta), &mut out);
            }
        }
        self.writer.frame(None, &mut out);
        Bytes::from(out)
    }
}

/// Typed SSE framing (Anthropic's and the Responses API's): `event: <type>` and `data: <json>`.
fn sse(events: &[(&'static str, Value)], out: &mut Vec<u8>) {
    for (kind, data) in events {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
}

/// Renders an error in the surface's own shape, with the contract's status.
pub fn render_error(surface: Surface, error: &EdgeError) -> Response {
    let mut response = match surface {
        Surface::OpenAi => return error.to_response(),
        Surface::Bedrock => bedrock::error_response(error),
        Surface::Anthropic => {
            let body = json!({"type": "error", "error": {
                "type": anthropic::error_type(error.code()), "message": error.to_string(),
            }});
            (error.status(), axum::Json(body)).into_response()
        }
    };
    error.add_retry_headers(response.headers_mut());
    response
}
