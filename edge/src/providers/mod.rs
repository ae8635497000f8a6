//! Providers: each speaks one upstream wire protocol and answers in OpenAI's format. The edge
//! dispatches to them in exactly one place, [`for_deployment`].

mod anthropic;
pub mod aws;
mod azure;
mod bedrock;
mod client;
mod completion;
pub mod credentials;
pub mod egress;
mod embedding_request;
mod gemini;
mod http;
mod memo;
mod messages;
mod mock;
mod openai;
mod proxy;
mod sagemaker;
mod tools;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use client::UpstreamClient;
pub use egress::Egress;
use tollgate_policy::model::{Deployment, Provider as ProviderKind};

use memo::AddressMemo;

pub use anthropic::AnthropicProvider;
pub use azure::AzureOpenAiProvider;
pub use bedrock::BedrockProvider;
pub use gemini::GeminiProvider;
pub use mock::MockProvider;
pub use openai::OpenAiProvider;
pub use sagemaker::SagemakerProvider;

/// A call to one deployment, in OpenAI's request format.
pub struct UpstreamCall<'a> {
    pub deployment: &'a Deployment,
    /// The deployment's credential fields, as opened for the calls that use it.
    pub secrets: Option<credentials::Secrets>,
    /// The request body to send (its `model` already the upstream's).
    pub body: Bytes,
    pub stream: bool,
    pub timeouts: Timeouts,
}

impl UpstreamCall<'_> {
    /// When the upstream must have started its answer, counted from now: its headers for a
    /// stream (whose chunks are then watched one by one), the whole answer otherwise.
    pub fn answer_by(&self) -> tokio::time::Instant {
        let wait = if self.stream {
            self.timeouts.first_byte
        } else {
            self.timeouts.total
        };
        tokio::time::Instant::now() + wait
    }
}

/// How long an upstream may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For the whole response of a non-streaming call.
    pub total: Duration,
    /// Until the response starts (headers) of a streaming call, and between its chunks.
    pub first_byte: Duration,
}

/// An upstream's answer in OpenAI's format.
pub enum UpstreamReply {
    /// A complete JSON body.
    Complete(Bytes),
    /// Server-sent events, as the upstream sent them.
    Stream(BoxStream<'static, Result<Bytes, UpstreamError>>),
}

/// How an upstream call failed, already stripped of URLs and credentials.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream is rate limiting requests")]
    RateLimited { retry_after: Option<String> },
    #[error("{message}")]
    Rejected { status: u16, message: String },
    /// The request asks for what this provider cannot do or express (a declared capability
    /// gap, or a request its wire format has no translation for); nothing was sent.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Timeout(String),
    /// The edge itself lacked what the call needs (file descriptors): nothing was sent, and
    /// nothing is known about the deployment, so it is neither retried nor held against it.
    #[error("{0}")]
    Local(String),
    /// An output guardrail stopped the answer as it streamed, withholding this much text.
    #[error("guardrail {guardrail} intervened: {summary}")]
    Intervened {
        guardrail: String,
        summary: String,
        withheld_bytes: usize,
    },
}

impl UpstreamError {
    /// The contract error code this failure is reported with.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { .. } => "rate_limit_exceeded",
            UpstreamError::Rejected { .. } => "upstream_rejected",
            UpstreamError::Unsupported(_) => "invalid_request_error",
            UpstreamError::Failed(_) | UpstreamError::Local(_) => "upstream_error",
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Intervened { .. } => "guardrail_intervened",
        }
    }
}

/// An upstream's error message as it is passed on to the client: at most its first 1,000
/// characters.
fn upstream_message(message: &str) -> String {
    message.chars().take(1000).collect()
}

/// One upstream wire protocol.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `POST /chat/completions`.
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError>;
    /// `POST /embeddings`.
    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError>;
}

/// The providers an edge can call, built once and shared by all requests.
pub struct Providers {
    /// Where calls may connect (checked again here for IP literals, which skip DNS).
    pub egress: Egress,
    /// The egress verdict on each deployment address seen: the policy is fixed for the life
    /// of the edge, so an address's verdict is too, and a lookup costs far less than parsing
    /// the URL on every request.
    verdicts: AddressMemo<Result<(), String>>,
    pub openai: OpenAiProvider,
    pub anthropic: AnthropicProvider,
    pub azure: AzureOpenAiProvider,
    pub bedrock: BedrockProvider,
    pub gemini: GeminiProvider,
    pub sagemaker: SagemakerProvider,
    pub mock: MockProvider,
}

impl Providers {
    /// Providers sharing one pooled HTTP client with `connect_timeout` (and the AWS ones an
    /// SDK client per endpoint), all connecting only where `egress` allows; an error when the
    /// system has no root certificates for TLS.
    pub fn new(connect_timeout: Duration, egress: Egress) -> std::io::Result<Self> {
        let http = UpstreamClient::new(connect_timeout, egress.clone())?;
        Ok(Providers {
            openai: OpenAiProvider::new(http.clone()),
            anthropic: AnthropicProvider::new(http.clone()),
            azure: AzureOpenAiProvider::new(http.clone()),
            bedrock: BedrockProvider::new(connect_timeout, egress.clone()),
            gemini: GeminiProvider::new(http),
            sagemaker: SagemakerProvider::new(connect_timeout, egress.clone()),
            mock: MockProvider,
            egress,
            verdicts: AddressMemo::new(),
        })
    }

    /// Whether calls may go to `api_base` (a refusal says why).
    pub fn check_api_base(&self, api_base: &str) -> Result<(), String> {
        self.verdicts.get_or_insert_with(api_base, || {
            self.egress.check_url(api_base).map_err(|r| r.to_string())
        })
    }

    /// The provider that serves `deployment`, if this edge supports its kind.
    pub fn for_deployment(&self, deployment: &Deployment) -> Option<&dyn Provider> {
        match deployment.provider {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => Some(&self.openai),
            ProviderKind::Mock => Some(&self.mock),
            ProviderKind::Bedrock => Some(&self.bedrock),
            ProviderKind::Anthropic => Some(&self.anthropic),
            ProviderKind::Sagemaker => Some(&self.sagemaker),
            ProviderKind::AzureOpenai => Some(&self.azure),
            ProviderKind::Gemini => Some(&self.gemini),
        }
    }
}

/// A deployment `d1` of model `m` on an OpenAI-compatible server, for the providers' tests.
#[cfg(test)]
fn test_deployment() -> Deployment {
    Deployment::new(
        "d1".into(),
        "m".into(),
        ProviderKind::OpenaiCompatible,
        "m".into(),
    )
}
