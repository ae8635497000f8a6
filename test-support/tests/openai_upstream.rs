//! The fake OpenAI upstream speaks OpenAI's wire format and fails on command.

use anyhow::Result;
use serde_json::{Value, json};
use tollgate_test_support::openai_upstream::{ANSWER, FakeOpenAi};

async fn post(fake: &FakeOpenAi, path: &str, body: Value) -> Result<reqwest::Response> {
    Ok(reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await?)
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"},
        {"role": "user", "content": "say hello please"}]})
}

/// The JSON chunks of an event stream, and whether it ended with `[DONE]`.
fn chunks(text: &str) -> Result<(Vec<Value>, bool)> {
    let mut chunks = Vec::new();
    let mut done = false;
    for event in text.split_terminator("\n\n") {
        let data = event.strip_prefix("data: ").unwrap_or(event);
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(data)?);
        }
    }
    Ok((chunks, done))
}

#[tokio::test]
async fn a_chat_completion_is_answered_and_recorded() -> Result<()> {
    let fake = FakeOpenAi::start().await?;
    let response = post(&fake, "/chat/completions", chat("gpt-x")).await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-x");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 5 words + 3, and the 5 words of the answer.
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 13);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(fake.requests(), 1);
    assert_eq!(
        fake.last_header("authorization").as_deref(),
        Some("Bearer sk-test")
    );
    assert_eq!(
        fake.last_request().map(|(_, body)| body),
        Some(chat("gpt-x"))
    );

    let mut two = chat("gpt-x");
    two["n"] = json!(2);
    two["response_format"] = json!({"type": "json_object"});
    let body: Value = post(&fake, "/chat/completions", two).await?.json().await?;
    assert_eq!(body["choices"].as_array().map(Vec::len), Some(2));
    let content = body["choices"][1]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(serde_json::from_str::<Value>(content)?.is_object());
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_with_usage_only_when_asked() -> Result<()> {
    let fake = FakeOpenAi::start().await?;
    let mut request = chat("gpt-x");
    request["stream"] = json!(true);
    let response = post(&fake, "/chat/completions", request.clone()).await?;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await?;
    assert!(!text.contains("usage"), "usage was not asked for: {text}");
    let (plain, done) = chunks(&text)?;
    assert!(done);
    assert_eq!(plain[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = plain
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, ANSWER);

    request["stream_options"] = json!({"include_usage": true});
    let text = post(&fake, "/chat/completions", request)
        .await?
        .text()
        .await?;
    let (chunks, done) = chunks(&text)?;
    assert!(done);
    let (last, before) = chunks.split_last().unwrap_or_else(|| panic!("empty"));
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(
        before.last().map(|c| &c["choices"][0]["finish_reason"]),
        Some(&json!("stop"))
    );
    assert!(
        before
            .iter()
            .all(|c| c["usage"].is_null() && c["object"] == "chat.completion.chunk")
    );
    Ok(())
}

#[tokio::test]
async fn tools_are_called_and_their_results_answered() -> Result<()> {
    let fake = FakeOpenAi::start().await?;
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let mut request = chat("gpt-x");
    request["tools"] = tools;
    let body: Value = post(&fake, "/chat/completions", request.clone())
        .await?
        .json()
        .await?;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );

    request["stream"] = json!(true);
    let (chunks, _) = chunks(
        &post(&fake, "/chat/completions", request.clone())
            .await?
            .text()
            .await?,
    )?;
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"location":"Paris"}"#);

    request["stream"] = json!(false);
    if let Some(messages) = request["messages"].as_array_mut() {
        messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": "22 and sunny"}));
    }
    let body: Value = post(&fake, "/chat/completions", request)
        .await?
        .json()
        .await?;
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(content.contains("22 and sunny"), "{content}");
    Ok(())
}

#[tokio::test]
async fn embeddings_come_as_floats_or_base64() -> Result<()> {
    let fake = FakeOpenAi::start().await?;
    let body: Value = post(
        &fake,
        "/embeddings",
        json!({"model": "e", "input": ["a b", "c"]}),
    )
    .await?
    .json()
    .await?;
    assert_eq!(
        body["data"][1]["embedding"],
        json!([1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875])
    );
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    let request = json!({"model": "e", "input": "one", "encoding_format": "base64"});
    let body: Value = post(&fake, "/embeddings", request).await?.json().await?;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    // Eight little-endian f32: 0.0 then 0.125 (0x3e000000).
    let encoded = body["data"][0]["embedding"].as_str().unwrap_or_default();
    assert!(encoded.starts_with("AAAAAAAAAD4"), "{encoded}");
    assert_eq!(encoded.len(), 44);
    Ok(())
}

#[tokio::test]
async fn failures_happen_on_command() -> Result<()> {
    let fake = FakeOpenAi::start().await?;
    let response = post(&fake, "/chat/completions", chat("fail-429")).await?;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    for (model, status) in [("fail-500", 500), ("fail-401", 401)] {
        let response = post(&fake, "/chat/completions", chat(model)).await?;
        assert_eq!(response.status(), status);
        let body: Value = response.json().await?;
        assert!(body["error"]["message"].is_string());
    }
    let response = post(
        &fake,
        "/embeddings",
        json!({"model": "fail-400", "input": "x"}),
    )
    .await?;
    assert_eq!(response.status(), 400);
    let expected = json!({"error": {"message": "bad things in request",
        "type": "invalid_request_error", "param": null, "code": null}});
    assert_eq!(response.json::<Value>().await?, expected);

    let mut request = chat("cut-stream");
    request["stream"] = json!(true);
    let cut = post(&fake, "/chat/completions", request.clone())
        .await?
        .text()
        .await;
    assert!(
        cut.is_err(),
        "the connection should drop mid-stream: {cut:?}"
    );

    request["model"] = json!("slow-stream");
    let started = std::time::Instant::now();
    let text = post(&fake, "/chat/completions", request)
        .await?
        .text()
        .await?;
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(started.elapsed() >= std::time::Duration::from_millis(200 * 7));
    assert_eq!(fake.requests(), 6);
    Ok(())
}
