//! Amazon Bedrock through the Converse and ConverseStream APIs of the official AWS SDK: the
//! OpenAI request is translated to Converse ([`request`]) and the answer back to OpenAI's format
//! ([`response`]), streamed event by event. Embeddings go through InvokeModel for Titan and
//! Cohere models ([`embeddings`]).
//!
//! Credentials: a deployment credential with `aws_access_key_id` and `aws_secret_access_key`
//! (and optionally `aws_session_token`) is used as static credentials; without one, the standard
//! AWS chain (environment, profile, SSO, ECS task role, EKS pod identity / IRSA, instance
//! profile). The deployment's `region` is the AWS region; its `api_base`, when set, replaces
//! Bedrock's endpoint (a VPC endpoint, or a test server). The client cache and the credential
//! handling are shared with SageMaker in [`super::aws`].

mod embeddings;
mod request;
mod response;

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::ConverseStreamOutput;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_smithy_types::event_stream::RawMessage;
use bytes::Bytes;
use serde_json::Value;

use super::aws::{self, AwsProvider, EventSource};
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};
use embeddings::{Family, TokenCount};
use request::{ConverseRequest, converse_request};
use response::{StreamTranslator, completion};

/// Calls Bedrock with one SDK client per (region, endpoint, credential), built on first use.
pub type BedrockProvider = AwsProvider<Client>;

impl BedrockProvider {
    /// Per-call timeouts: the whole call for a plain answer, until the stream's first event
    /// (its HTTP response) for a stream.
    fn timeouts(&self, limit: Duration) -> aws_sdk_bedrockruntime::config::Builder {
        aws_sdk_bedrockruntime::config::Builder::default()
            .timeout_config(self.clients.call_timeouts(limit))
    }
}

#[async_trait]
impl Provider for BedrockProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let what = format!("deployment {}", call.deployment.id);
        let request = converse_request(&call.body, &call.deployment.upstream_model)
            .map_err(UpstreamError::Unsupported)?;
        let client = self.clients.client(&call, Client::new).await;
        if call.stream {
            self.converse_stream(&client, request, &call, what).await
        } else {
            self.converse(&client, request, &call, &what).await
        }
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let what = format!("deployment {}", call.deployment.id);
        let model = call.deployment.upstream_model.clone();
        let rejected = UpstreamError::Unsupported;
        let family = Family::of(&model).ok_or_else(|| {
            rejected(format!(
                "{what}: embeddings are supported for Titan and Cohere models"
            ))
        })?;
        let request = embeddings::parse(&call.body).map_err(rejected)?;
        let client = self.clients.client(&call, Client::new).await;
        let (vectors, tokens) = match family {
            Family::Titan { v2 } => {
                let bodies = request
                    .inputs
                    .iter()
                    .map(|text| embeddings::titan_body(text, request.dimensions, v2))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(rejected)?;
                let calls = bodies
                    .iter()
                    .map(|body| self.invoke(&client, &model, body, &call, &what, None));
                let answers = futures::future::try_join_all(calls).await?;
                let mut vectors = Vec::with_capacity(answers.len());
                let mut tokens = 0;
                for answer in &answers {
                    let (vector, count) =
                        embeddings::titan_answer(answer).ok_or_else(|| unreadable(&what))?;
                    vectors.push(vector);
                    tokens += count;
                }
                (vectors, tokens)
            }
            Family::Cohere => {
                let input_type = call.deployment.settings.get("input_type");
                let body = embeddings::cohere_body(
                    &request.inputs,
                    request.dimensions,
                    input_type.map(String::as_str),
                )
                .map_err(rejected)?;
                // Cohere's answer holds no token count: Bedrock reports it in a header.
                let count = TokenCount::default();
                let answer = self
                    .invoke(&client, &model, &body, &call, &what, Some(count.clone()))
                    .await?;
                let vectors = embeddings::cohere_answer(&answer)
                    .filter(|v| v.len() == request.inputs.len())
                    .ok_or_else(|| unreadable(&what))?;
                (vectors, count.get().unwrap_or(0))
            }
        };
        let list = embeddings::list(&vectors, &model, request.base64, tokens);
        Ok(UpstreamReply::Complete(Bytes::from(list.to_string())))
    }
}

fn unreadable(what: &str) -> UpstreamError {
    UpstreamError::Failed(format!("{what} answered with unreadable embeddings"))
}

impl BedrockProvider {
    /// One InvokeModel call with a JSON body; its JSON answer.
    async fn invoke(
        &self,
        client: &Client,
        model: &str,
        body: &Value,
        call: &UpstreamCall<'_>,
        what: &str,
        count: Option<TokenCount>,
    ) -> Result<Value, UpstreamError> {
        let limit = call.timeouts.total;
        let mut operation = client
            .invoke_model()
            .model_id(model)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body.to_string()))
            .customize()
            .config_override(self.timeouts(limit));
        if let Some(count) = count {
            operation = operation.interceptor(count);
        }
        let output = operation
            .send()
            .await
            .map_err(|e| sdk_error(e, what, limit))?;
        serde_json::from_slice(output.body.as_ref()).map_err(|_| unreadable(what))
    }
}

impl BedrockProvider {
    async fn converse(
        &self,
        client: &Client,
        request: ConverseRequest,
        call: &UpstreamCall<'_>,
        what: &str,
    ) -> Result<UpstreamReply, UpstreamError> {
        let limit = call.timeouts.total;
        let output = client
            .converse()
            .model_id(&request.model_id)
            .set_messages(Some(request.messages))
            .set_system(Some(request.system).filter(|s| !s.is_empty()))
            .set_inference_config(request.inference)
            .set_tool_config(request.tools)
            .set_guardrail_config(request.guardrail.as_ref().map(|g| g.for_converse()))
            .set_additional_model_request_fields(request.additional_fields)
            .customize()
            .config_override(self.timeouts(limit))
            .send()
            .await
            .map_err(|e| sdk_error(e, what, limit))?;
        let body = completion(&output, &request.model_id);
        Ok(UpstreamReply::Complete(Bytes::from(body.to_string())))
    }

    async fn converse_stream(
        &self,
        client: &Client,
        request: ConverseRequest,
        call: &UpstreamCall<'_>,
        what: String,
    ) -> Result<UpstreamReply, UpstreamError> {
        let first_byte = call.timeouts.first_byte;
        let output = client
            .converse_stream()
            .model_id(&request.model_id)
            .set_messages(Some(request.messages))
            .set_system(Some(request.system).filter(|s| !s.is_empty()))
            .set_inference_config(request.inference)
            .set_tool_config(request.tools)
            .set_guardrail_config(request.guardrail.as_ref().map(|g| g.for_stream()))
            .set_additional_model_request_fields(request.additional_fields)
            .customize()
            .config_override(self.timeouts(first_byte))
            .send()
            .await
            .map_err(|e| sdk_error(e, &what, first_byte))?;
        let mut translator = StreamTranslator::new(&request.model_id, request.include_usage);
        let decode = move |event: Option<ConverseStreamOutput>| {
            let mut out = Vec::new();
            match event {
                Some(event) => translator.event(&event, &mut out),
                None => translator.end(&mut out),
            }
            Ok(out)
        };
        let stream = aws::relay_events(output.stream, decode, first_byte, what, sdk_error);
        Ok(UpstreamReply::Stream(stream))
    }
}

impl EventSource for EventReceiver<ConverseStreamOutput, ConverseStreamOutputError> {
    type Event = ConverseStreamOutput;
    type Error = ConverseStreamOutputError;

    async fn next_event(
        &mut self,
    ) -> Result<Option<ConverseStreamOutput>, SdkError<ConverseStreamOutputError, RawMessage>> {
        self.recv().await
    }
}

/// Maps an SDK failure; messages name the deployment, never the endpoint or the credential.
fn sdk_error<E, R>(error: SdkError<E, R>, what: &str, limit: Duration) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + 'static,
{
    aws::sdk_error(error, what, limit, "Bedrock", |err, retry_after| {
        service_error(err.code(), err.message(), retry_after, what)
    })
}

/// Maps a Bedrock error by its code (the same for Converse, ConverseStream and in-stream errors).
fn service_error(
    code: Option<&str>,
    message: Option<&str>,
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    let code = code.unwrap_or("");
    if code.eq_ignore_ascii_case("ModelTimeoutException") {
        UpstreamError::Timeout(format!("{what}: the Bedrock model timed out"))
    } else {
        aws::service_error("Bedrock", code, message, retry_after, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_upstream_errors() {
        let what = "deployment d";
        assert!(matches!(
            service_error(Some("ThrottlingException"), None, Some("3".into()), what),
            UpstreamError::RateLimited { retry_after: Some(r) } if r == "3"
        ));
        assert!(matches!(
            service_error(Some("throttlingException"), None, None, what),
            UpstreamError::RateLimited { .. }
        ));
        assert!(matches!(
            service_error(Some("ValidationException"), Some("bad"), None, what),
            UpstreamError::Rejected { status: 400, message } if message == "bad"
        ));
        assert!(matches!(
            service_error(Some("UnrecognizedClientException"), Some("key AKID"), None, what),
            UpstreamError::Failed(m) if m == "deployment d: Bedrock refused the credentials"
        ));
        assert!(matches!(
            service_error(Some("ModelTimeoutException"), None, None, what),
            UpstreamError::Timeout(_)
        ));
        assert!(matches!(
            service_error(Some("InternalServerException"), None, None, what),
            UpstreamError::Failed(_)
        ));
    }
}
