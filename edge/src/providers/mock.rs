//! The `mock` provider: deterministic OpenAI-shaped answers with configurable latency, token
//! counts and failures, for trying Tollgate out and for load tests. Deployment settings:
//! `latency_ms` (before the answer or first chunk), `chunk_delay_ms`, `output_tokens`
//! (default 8), `fail_status` (answer with this HTTP error instead).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};

/// A provider that answers from memory.
pub struct MockProvider;

struct Behaviour {
    latency: Duration,
    chunk_delay: Duration,
    output_tokens: u64,
    fail_status: Option<u16>,
}

impl Behaviour {
    fn of(call: &UpstreamCall<'_>) -> Self {
        let setting = |name: &str| {
            call.deployment
                .settings
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
        };
        Behaviour {
            latency: Duration::from_millis(setting("latency_ms").unwrap_or(0)),
            chunk_delay: Duration::from_millis(setting("chunk_delay_ms").unwrap_or(0)),
            output_tokens: setting("output_tokens").unwrap_or(8),
            fail_status: setting("fail_status").and_then(|s| u16::try_from(s).ok()),
        }
    }

    /// The call's behaviour once its latency has passed, or the failure it is set to answer.
    async fn after_latency(call: &UpstreamCall<'_>) -> Result<Self, UpstreamError> {
        let behaviour = Behaviour::of(call);
        tokio::time::sleep(behaviour.latency).await;
        match behaviour.fail_status {
            Some(status) => Err(failure(status, call)),
            None => Ok(behaviour),
        }
    }
}

/// A stable stand-in for a tokenizer: about four bytes of prompt per token.
fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64).div_ceil(4)
}

#[async_trait]
impl Provider for MockProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let behaviour = Behaviour::after_latency(&call).await?;
        let request: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
        let model = request["model"].as_str().unwrap_or("mock").to_owned();
        let usage = json!({
            "prompt_tokens": prompt_tokens(&call.body),
            "completion_tokens": behaviour.output_tokens,
            "total_tokens": prompt_tokens(&call.body) + behaviour.output_tokens,
        });
        let id = format!("chatcmpl-mock-{}", uuid::Uuid::now_v7().simple());
        let words: Vec<String> = (0..behaviour.output_tokens)
            .map(|i| format!("w{i} "))
            .collect();
        if !call.stream {
            let body = json!({
                "id": id, "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": words.concat()}, "finish_reason": "stop"}],
                "usage": usage,
            });
            return Ok(UpstreamReply::Complete(Bytes::from(body.to_string())));
        }
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let chunk = |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        events.extend(
            words
                .iter()
                .map(|w| chunk(json!({"content": w}), Value::Null)),
        );
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            events.push(json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}));
        }
        let mut frames: Vec<Bytes> = events
            .into_iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let delay = behaviour.chunk_delay;
        let stream = futures::stream::iter(frames).then(move |frame| async move {
            tokio::time::sleep(delay).await;
            Ok(frame)
        });
        Ok(UpstreamReply::Stream(stream.boxed()))
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        Behaviour::after_latency(&call).await?;
        let request: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
        let inputs = match &request["input"] {
            Value::Array(items) => items.len().max(1),
            _ => 1,
        };
        let data: Vec<Value> = (0..inputs)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, i as f64]}))
            .collect();
        let tokens = prompt_tokens(&call.body);
        let body = json!({"object": "list", "data": data, "model": request["model"],
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
        Ok(UpstreamReply::Complete(Bytes::from(body.to_string())))
    }
}

fn failure(status: u16, call: &UpstreamCall<'_>) -> UpstreamError {
    let what = format!("deployment {}", call.deployment.id);
    match status {
        429 => UpstreamError::RateLimited {
            retry_after: Some("1".to_owned()),
        },
        400..=499 => UpstreamError::Rejected {
            status,
            message: format!("{what} rejected the request (mock)"),
        },
        _ => UpstreamError::Failed(format!("{what} failed with HTTP {status} (mock)")),
    }
}
