//! `mock-provider`: an OpenAI-compatible upstream that answers from memory, with configurable
//! latency, jitter, chunk pacing, token counts and failure / 429 rates.
//!
//! Every streamed content delta carries the wall-clock time it left the mock (`t=<unix ns>`),
//! so a client can tell how long each chunk spent in whatever sat between them (a proxy, a
//! gateway) without trusting either side's buffering.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::Deserialize;

/// How the mock behaves; every field is a flag of `mock-provider`.
#[derive(Parser, Clone, Debug)]
#[command(about = "OpenAI-compatible mock upstream for load tests")]
pub struct MockConfig {
    /// Listen address; port 0 picks one (printed on stdout as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Delay before the answer (or the first chunk), in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub latency_ms: f64,
    /// Uniform random extra delay in [0, jitter_ms) added to the latency.
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 16)]
    pub chunks: u32,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub chunk_delay_ms: f64,
    /// Prompt tokens reported in usage.
    #[arg(long, default_value_t = 12)]
    pub prompt_tokens: u64,
    /// Completion tokens reported in usage.
    #[arg(long, default_value_t = 16)]
    pub completion_tokens: u64,
    /// Share of requests answered with 500, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of requests answered with 429 and `retry-after: 1`, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,
    /// Embedding dimensions.
    #[arg(long, default_value_t = 8)]
    pub dimensions: usize,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: String,
    input: serde_json::Value,
}

type Body = BoxBody<Bytes, Infallible>;

/// Serves until the process ends.
pub async fn serve(config: MockConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let config = Arc::new(config);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let config = config.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(config.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    config: Arc<MockConfig>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET {
        return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.into()));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    if path == "/v1/traces" {
        // An OTLP/HTTP collector that keeps nothing: where a traced edge sends its spans.
        let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        return Ok(response);
    }
    let (fail, throttle, delay) = {
        let mut rng = rand::rng();
        let jitter = if config.jitter_ms > 0.0 {
            rng.random_range(0.0..config.jitter_ms)
        } else {
            0.0
        };
        (
            config.fail_rate > 0.0 && rng.random_bool(config.fail_rate.min(1.0)),
            config.rate_429 > 0.0 && rng.random_bool(config.rate_429.min(1.0)),
            config.latency_ms + jitter,
        )
    };
    if delay > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay / 1000.0)).await;
    }
    if throttle {
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "mock rate limit");
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
        return Ok(response);
    }
    if fail {
        return Ok(error(StatusCode::INTERNAL_SERVER_ERROR, "mock failure"));
    }
    Ok(if path.ends_with("/chat/completions") {
        match serde_json::from_slice::<ChatRequest>(&body) {
            Ok(request) if request.stream => stream(&config, request),
            Ok(request) => json(StatusCode::OK, completion(&config, &request.model)),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else if path.ends_with("/embeddings") {
        match serde_json::from_slice::<EmbeddingRequest>(&body) {
            Ok(request) => json(StatusCode::OK, embeddings(&config, &request)),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else {
        error(StatusCode::NOT_FOUND, "no such route")
    })
}

fn completion(config: &MockConfig, model: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the mock provider."},
            "finish_reason": "stop"
        }],
        "usage": usage(config),
    })
    .to_string()
}

fn usage(config: &MockConfig) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": config.prompt_tokens,
        "completion_tokens": config.completion_tokens,
        "total_tokens": config.prompt_tokens + config.completion_tokens,
    })
}

fn embeddings(config: &MockConfig, request: &EmbeddingRequest) -> String {
    let inputs = match &request.input {
        serde_json::Value::Array(items) => items.len().max(1),
        _ => 1,
    };
    let data: Vec<_> = (0..inputs)
        .map(|i| {
            let vector: Vec<f64> = (0..config.dimensions)
                .map(|d| ((i + d) % 7) as f64 / 7.0)
                .collect();
            serde_json::json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    serde_json::json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": config.prompt_tokens, "total_tokens": config.prompt_tokens},
    })
    .to_string()
}

/// Nanoseconds since the Unix epoch: the clock that stream stamps use on both sides.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn chunk(model: &str, delta: serde_json::Value, finish: Option<&str>) -> Bytes {
    let value = serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {value}\n\n"))
}

fn stream(config: &MockConfig, request: ChatRequest) -> Response<Body> {
    struct State {
        next: u32,
        chunks: u32,
        delay: Duration,
        model: String,
        usage: Option<serde_json::Value>,
        done: bool,
    }
    // Model names pick a pacing: `hold` sends one chunk and then goes idle until the client
    // leaves (held-connection memory); `slow` paces chunks 100 ms apart (stall checks).
    let (chunks, delay_ms) = match request.model.as_str() {
        "hold" => (2, 3_600_000.0),
        "slow" => (config.chunks, 100.0),
        _ => (config.chunks, config.chunk_delay_ms),
    };
    let state = State {
        next: 0,
        chunks: chunks.max(1),
        delay: Duration::from_secs_f64(delay_ms.max(0.0) / 1000.0),
        model: request.model,
        usage: request
            .stream_options
            .filter(|o| o.include_usage)
            .map(|_| usage(config)),
        done: false,
    };
    let frames = futures::stream::unfold(state, |mut s| async move {
        let bytes = if s.next == 0 {
            chunk(
                &s.model,
                serde_json::json!({"role": "assistant", "content": format!("t={} ", unix_nanos())}),
                None,
            )
        } else if s.next < s.chunks {
            if !s.delay.is_zero() {
                tokio::time::sleep(s.delay).await;
            }
            chunk(
                &s.model,
                serde_json::json!({"content": format!("t={} ", unix_nanos())}),
                None,
            )
        } else if s.next == s.chunks {
            chunk(&s.model, serde_json::json!({}), Some("stop"))
        } else if s.next == s.chunks + 1 && s.usage.is_some() {
            let value = serde_json::json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                "model": s.model, "choices": [], "usage": s.usage.take(),
            });
            Bytes::from(format!("data: {value}\n\n"))
        } else if !s.done {
            s.done = true;
            Bytes::from_static(b"data: [DONE]\n\n")
        } else {
            return None;
        };
        s.next += 1;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), s))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", http::HeaderValue::from_static("no-cache"));
    response
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": {"message": message, "type": "mock_error", "param": null, "code": null}
    });
    json(status, body.to_string())
}
