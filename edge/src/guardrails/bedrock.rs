//! The `bedrock` guardrail: Amazon Bedrock Guardrails' `ApplyGuardrail`, whatever provider
//! serves the request. A BLOCKED finding blocks; an intervention that only ANONYMIZED takes
//! Bedrock's rewritten text in place of the original.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_bedrockruntime::types::{
    GuardrailAction, GuardrailAssessment, GuardrailContentBlock, GuardrailContentPolicyAction,
    GuardrailContentSource, GuardrailSensitiveInformationPolicyAction, GuardrailTextBlock,
    GuardrailTopicPolicyAction, GuardrailWordPolicyAction,
};
use tollgate_policy::guardrail::BedrockGuardrail;

use super::local::Conclusion;
use crate::providers::Egress;
use crate::providers::aws::ClientCache;

/// How long one `ApplyGuardrail` call may take.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whose text is checked: Bedrock applies a guardrail's input or output policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Input,
    Output,
}

/// `ApplyGuardrail` clients, one per (region, endpoint, credential).
pub struct BedrockGuardrails {
    clients: ClientCache<Client>,
}

impl BedrockGuardrails {
    pub fn new(connect_timeout: Duration, egress: Egress) -> Self {
        BedrockGuardrails {
            clients: ClientCache::new(connect_timeout, egress),
        }
    }

    /// Applies `guardrail` to `texts`; an error is a message for the client that names the
    /// guardrail, never the endpoint or the credential.
    pub async fn apply(
        &self,
        guardrail: &BedrockGuardrail,
        secrets: Option<&BTreeMap<String, String>>,
        texts: &[String],
        source: Source,
    ) -> Result<Conclusion, String> {
        let target = (guardrail.region.as_str(), guardrail.endpoint.as_str());
        let client = self.clients.client_at(target, secrets, Client::new).await;
        let mut call = client
            .apply_guardrail()
            .guardrail_identifier(&guardrail.guardrail_id)
            .guardrail_version(&guardrail.version)
            .source(match source {
                Source::Input => GuardrailContentSource::Input,
                Source::Output => GuardrailContentSource::Output,
            });
        for text in texts {
            let block = GuardrailTextBlock::builder()
                .text(text)
                .build()
                .map_err(|_| "the text could not be sent to the guardrail".to_owned())?;
            call = call.content(GuardrailContentBlock::Text(block));
        }
        let answer = call
            .customize()
            .config_override(
                aws_sdk_bedrockruntime::config::Builder::default()
                    .timeout_config(self.clients.call_timeouts(APPLY_TIMEOUT)),
            )
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(
                    guardrail = %guardrail.guardrail_id,
                    code = e.code().unwrap_or("none"),
                    error = %DisplayErrorContext(&e),
                    "ApplyGuardrail failed"
                );
                match e.code() {
                    Some(code) => format!("the Bedrock guardrail answered {code}"),
                    None => "the Bedrock guardrail could not be reached".to_owned(),
                }
            })?;
        if *answer.action() != GuardrailAction::GuardrailIntervened {
            return Ok(Conclusion::Clean);
        }
        let (blocked, findings) = summary(answer.assessments());
        let rewritten: Vec<String> = answer
            .outputs()
            .iter()
            .map(|o| o.text().unwrap_or_default().to_owned())
            .collect();
        if blocked || rewritten.len() != texts.len() {
            let why = if findings.is_empty() {
                "the Bedrock guardrail intervened".to_owned()
            } else {
                findings.join("; ")
            };
            return Ok(Conclusion::Blocked(why));
        }
        Ok(Conclusion::Masked(rewritten))
    }
}

/// Whether anything was BLOCKED, and what each policy found, by type and action: never the
/// matched text (Bedrock returns it; it is the content being refused).
fn summary(assessments: &[GuardrailAssessment]) -> (bool, Vec<String>) {
    let mut blocked = false;
    let mut found = Vec::new();
    for a in assessments {
        if let Some(topics) = a.topic_policy() {
            for t in topics.topics() {
                blocked |= *t.action() == GuardrailTopicPolicyAction::Blocked;
                found.push(format!(
                    "denied topic {} ({})",
                    t.name(),
                    t.action().as_str()
                ));
            }
        }
        if let Some(content) = a.content_policy() {
            for f in content.filters() {
                blocked |= *f.action() == GuardrailContentPolicyAction::Blocked;
                found.push(format!(
                    "content filter {} ({})",
                    f.r#type().as_str(),
                    f.action().as_str()
                ));
            }
        }
        if let Some(words) = a.word_policy() {
            let actions = words
                .custom_words()
                .iter()
                .map(|w| w.action())
                .chain(words.managed_word_lists().iter().map(|w| w.action()));
            for action in actions {
                blocked |= *action == GuardrailWordPolicyAction::Blocked;
                found.push(format!("word filter ({})", action.as_str()));
            }
        }
        if let Some(sensitive) = a.sensitive_information_policy() {
            for e in sensitive.pii_entities() {
                blocked |= *e.action() == GuardrailSensitiveInformationPolicyAction::Blocked;
                found.push(format!("{} ({})", e.r#type().as_str(), e.action().as_str()));
            }
            for r in sensitive.regexes() {
                blocked |= *r.action() == GuardrailSensitiveInformationPolicyAction::Blocked;
                let name = r.name().unwrap_or("regex");
                found.push(format!("{name} ({})", r.action().as_str()));
            }
        }
        if let Some(grounding) = a.contextual_grounding_policy() {
            for f in grounding.filters() {
                blocked |= f.action().as_str() == "BLOCKED";
                found.push(format!(
                    "grounding {} ({})",
                    f.r#type().as_str(),
                    f.action().as_str()
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    (blocked, found)
}
