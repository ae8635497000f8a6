//! Sending a request upstream until it succeeds, within its deadline: retries on another
//! deployment (or the same one after a back-off with full jitter that honours `retry-after`),
//! then the model's fallbacks; an input too long for the model's context window or refused
//! under a content policy moves to the model's dedicated fallbacks instead.
//!
//! Everything happens before the first byte reaches the client: once a provider has answered
//! (a stream's headers included) the answer is the client's, and a stream that fails later is
//! not restarted.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Deployment, RoutingRule, RoutingStrategy, TrafficAction, VirtualKey};
use tracing::Instrument;

use super::AppState;
use super::openai::upstream_body;
use super::record::UsageRecord;
use crate::error::EdgeError;
use crate::health::InFlight;
use crate::metrics::{ReasonLabels, UpstreamLabels};
use crate::pricing::{self, Tokens};
use crate::providers::{Timeouts, UpstreamCall, UpstreamError, UpstreamReply, credentials};
use crate::route::{self, Attempt, Constraints};
use crate::telemetry;

/// The most attempts one request makes, whatever the rules say.
const MAX_ATTEMPTS: u32 = 20;

/// What every attempt of one request sends.
pub struct Outgoing<'a> {
    pub bytes: &'a Bytes,
    /// The model the client asked for (and named in the body).
    pub model: &'a str,
    /// Where `model` stands in `bytes`, when it can be replaced there.
    pub model_at: Option<Range<usize>>,
    /// The requested model's routing rule, looked up once per request.
    pub rule: Option<&'a RoutingRule>,
    /// The models the key may use: fallbacks outside them are never tried.
    pub key: &'a VirtualKey,
    pub embeddings: bool,
    pub stream: bool,
    /// Ask a stream's upstream for usage although the client did not.
    pub request_stream_usage: bool,
    /// For usage-aware routing.
    pub estimated_tokens: u64,
    /// What a budget reservation holds for: the most input and output the request may use.
    pub worst_case_tokens: Tokens,
    pub deadline: Instant,
}

/// A successful attempt.
pub struct Served {
    pub reply: UpstreamReply,
    pub deployment_id: String,
    /// Held by the response until it ends.
    pub in_flight: InFlight,
}

/// The outcome, with what the response headers report about how it was reached.
pub struct Dispatched {
    pub result: Result<Served, EdgeError>,
    pub attempts: u32,
    /// The fallback model that answered, when it was not the requested one.
    pub fallback: Option<String>,
}

/// How a failed attempt affects the rest of the request.
enum Failure {
    /// The deployment is in trouble (throttled, failing, slow, unreachable): try again.
    Retry {
        reason: &'static str,
        retry_after: Option<Duration>,
    },
    /// The input does not fit the model's context window.
    ContextWindow,
    /// The provider refused the content under its policy.
    ContentPolicy,
    /// The request itself is wrong: retrying cannot help.
    Final,
}

/// Whether a failure counts against the provider in `tollgate_upstream_errors_total`: a call
/// this edge could not make for itself (out of file descriptors) says nothing about it.
fn is_the_providers(error: &UpstreamError) -> bool {
    !matches!(error, UpstreamError::Local(_))
}

fn classify(error: &UpstreamError) -> Failure {
    match error {
        UpstreamError::RateLimited { retry_after } => Failure::Retry {
            reason: "rate_limited",
            retry_after: retry_after.as_deref().and_then(parse_retry_after),
        },
        UpstreamError::Failed(_) => Failure::Retry {
            reason: "upstream_error",
            retry_after: None,
        },
        UpstreamError::Timeout(_) => Failure::Retry {
            reason: "timeout",
            retry_after: None,
        },
        // A shortage on this edge (out of file descriptors) would open a healthy deployment's
        // circuit and spend the retries on calls that cannot be made either.
        UpstreamError::Unsupported(_)
        | UpstreamError::Intervened { .. }
        | UpstreamError::Local(_) => Failure::Final,
        UpstreamError::Rejected { message, .. } => {
            let message = message.to_ascii_lowercase();
            let said = |phrases: &[&str]| phrases.iter().any(|p| message.contains(p));
            if said(CONTEXT_WINDOW_PHRASES) {
                Failure::ContextWindow
            } else if said(CONTENT_POLICY_PHRASES) {
                Failure::ContentPolicy
            } else {
                Failure::Final
            }
        }
    }
}

/// How providers word "the input is too long" (OpenAI and compatible servers, Azure,
/// Anthropic, Bedrock, Gemini).
const CONTEXT_WINDOW_PHRASES: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many input tokens",
    "exceeds the maximum number of tokens",
];

/// How providers word a content-policy refusal.
const CONTENT_POLICY_PHRASES: &[&str] = &[
    "content_policy_violation",
    "content management policy",
    "content_filter",
    "content filter",
    "safety system",
    "blocked by our content",
];

/// `retry-after` in seconds (the HTTP-date form is not used by model providers).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// Sends `out` to the deployments the request's traffic rule (`traffic`) allows until one
/// answers, the attempts run out or the deadline passes.
pub async fn dispatch(
    app: &AppState,
    state: &PolicyState,
    out: &Outgoing<'_>,
    traffic: Option<&TrafficAction>,
    record: &mut UsageRecord,
) -> Dispatched {
    let mut run = Run {
        app,
        state,
        out,
        attempts: 0,
        last_error: None,
    };
    let result = run.models(traffic, record).await;
    let (result, fallback) = match result {
        Ok((served, model)) => {
            record.set_served_model(&model);
            let fallback = (model != out.model).then_some(model);
            (Ok(served), fallback)
        }
        Err(e) => (Err(e), None),
    };
    Dispatched {
        result,
        attempts: run.attempts,
        fallback,
    }
}

struct Run<'a> {
    app: &'a AppState,
    state: &'a PolicyState,
    out: &'a Outgoing<'a>,
    attempts: u32,
    last_error: Option<EdgeError>,
}

/// How one model is tried: retries, and when a deployment's circuit opens.
struct RetryPolicy {
    retries: u32,
    allowed_fails: u32,
    cooldown: Duration,
}

/// Whether circuits are respected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Nothing the request could use is available: one attempt, whatever the circuits say.
    Panic,
}

/// Why a model's attempts ended without an answer.
enum Exhausted {
    /// Retries ran out or no deployment could take the request: its fallbacks are next.
    Failed,
    ContextWindow,
    ContentPolicy,
}

impl Run<'_> {
    /// Tries the requested model, then fallback models, in order.
    async fn models(
        &mut self,
        traffic: Option<&TrafficAction>,
        record: &mut UsageRecord,
    ) -> Result<(Served, String), EdgeError> {
        let requested = self.out.model;
        let constraints = |strategy| Constraints {
            deployment_ids: traffic.map_or(&[][..], |t| &t.deployment_ids),
            regions: traffic.map_or(&[][..], |t| &t.regions),
            prefer_region: traffic.and_then(|t| t.prefer_region.as_deref()),
            strategy: traffic.and_then(|t| t.strategy).unwrap_or(strategy),
        };
        if !route::serves(
            self.state,
            requested,
            &constraints(RoutingStrategy::Weighted),
        ) {
            let exists = self
                .state
                .deployments
                .values()
                .any(|d| d.model_name == requested);
            return Err(if exists {
                EdgeError::RoutingDenied(format!(
                    "no deployment of model {requested:?} may serve this request under the gateway's routing rules"
                ))
            } else {
                EdgeError::ModelNotFound(requested.to_owned())
            });
        }
        let mut queue: VecDeque<String> = VecDeque::from([requested.to_owned()]);
        let mut done: Vec<String> = Vec::new();
        while let Some(model) = queue.pop_front() {
            if done.contains(&model) {
                continue;
            }
            done.push(model.clone());
            if model != requested && !self.hold_fallback_budgets(&model, record) {
                continue;
            }
            let rule = if model == requested {
                self.out.rule
            } else {
                self.state.routing_rule_for(&model)
            };
            let constraints = constraints(rule.map_or(RoutingStrategy::Weighted, |r| r.strategy));
            let exhausted = match self
                .model(&model, rule, &constraints, Mode::Normal, record)
                .await?
            {
                Ok(served) => return Ok((served, model)),
                Err(why) => why,
            };
            let (next, reason): (&[String], _) = match (exhausted, rule) {
                (_, None) => (&[], "failure"),
                (Exhausted::Failed, Some(r)) => (&r.fallbacks, "failure"),
                (Exhausted::ContextWindow, Some(r)) => {
                    (&r.context_window_fallbacks, "context_window")
                }
                (Exhausted::ContentPolicy, Some(r)) => {
                    (&r.content_policy_fallbacks, "content_policy")
                }
            };
            // A fallback is another model: the key must be allowed to use it like any other.
            let next: Vec<&String> = next
                .iter()
                .filter(|m| !done.contains(m) && self.state.may_use(self.out.key, m))
                .collect();
            if !next.is_empty() {
                self.app
                    .metrics
                    .fallbacks
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
            }
            // Dedicated fallbacks go first: they answer this very failure.
            for m in next.into_iter().rev() {
                queue.push_front(m.clone());
            }
        }
        if self.attempts == 0 {
            // Every deployment the request could use is cooling down. Like Envoy's panic mode,
            // try the requested model once anyway: a cooldown moves traffic away from a failing
            // deployment, it never switches a model off.
            let rule = self.out.rule;
            let constraints = constraints(rule.map_or(RoutingStrategy::Weighted, |r| r.strategy));
            if let Ok(served) = self
                .model(requested, rule, &constraints, Mode::Panic, record)
                .await?
            {
                return Ok((served, requested.to_owned()));
            }
        }
        Err(self.take_error())
    }

    /// Reserves the budgets scoped to the fallback `model`; false (and the fallback is
    /// skipped) when one of them is spent or the model has no price under one.
    fn hold_fallback_budgets(&self, model: &str, record: &mut UsageRecord) -> bool {
        let Some(reservation) = record.reservation_mut() else {
            return true;
        };
        let price = pricing::model_price(self.state, model);
        let held = self.app.budgets.reserve_fallback(
            self.state,
            reservation,
            model,
            price.is_some(),
            pricing::cost(price, self.out.worst_case_tokens),
        );
        match held {
            Ok(()) => true,
            Err(refused) => {
                tracing::debug!(model, reason = %refused, "fallback skipped: its budget refuses the request");
                false
            }
        }
    }

    /// Tries one model's deployments. The outer `Err` ends the whole request.
    async fn model(
        &mut self,
        model: &str,
        rule: Option<&RoutingRule>,
        constraints: &Constraints<'_>,
        mode: Mode,
        record: &mut UsageRecord,
    ) -> Result<Result<Served, Exhausted>, EdgeError> {
        let app = self.app;
        let panic = mode == Mode::Panic;
        let RetryPolicy {
            retries,
            allowed_fails,
            cooldown,
        } = self.retry_policy(rule, mode);
        let mut tried: Vec<String> = Vec::new();
        for retry in 0..=retries {
            if self.attempts >= MAX_ATTEMPTS {
                break;
            }
            let now = Instant::now();
            if now >= self.out.deadline {
                return Err(self.deadline_passed());
            }
            let edges = app.budgets.live_edges();
            let full = |d: &Deployment| app.limits.deployment_full(d, edges);
            let attempt = Attempt {
                tried: &tried,
                stream: self.out.stream,
                ignore_circuits: panic,
                full: &full,
            };
            let Some(choice) = route::choose(self.state, model, constraints, &app.health, &attempt)
            else {
                self.note_full_deployments(model, constraints, edges);
                break;
            };
            let admitted = app
                .health
                .admit(&choice.health, self.out.estimated_tokens, panic);
            let Some(attempt) = admitted else {
                // Another request took the probe between choosing and admitting.
                break;
            };
            let deployment = choice.deployment;
            self.attempts += 1;
            tried.push(deployment.id.clone());
            record.set_deployment(deployment, pricing::charged(self.state, deployment));
            if let Some(admission) = record.admission_mut() {
                app.limits.count_deployment(deployment, edges, admission);
            }
            let (sent, span) = self.send_in_span(deployment, now).await?;
            let error = match sent {
                Ok(reply) => {
                    record.set_provider_span(span);
                    let in_flight = app.health.succeeded(attempt, self.out.stream);
                    return Ok(Ok(Served {
                        reply,
                        deployment_id: deployment.id.clone(),
                        in_flight,
                    }));
                }
                Err(error) => error,
            };
            telemetry::fail(&span, error.code());
            if is_the_providers(&error) {
                self.count_upstream_error(deployment, error.code());
            }
            let failure = classify(&error);
            let code = error.code();
            self.last_error = Some(EdgeError::from(error));
            let (reason, retry_after) = match failure {
                Failure::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
                Failure::ContextWindow => return Ok(Err(Exhausted::ContextWindow)),
                Failure::ContentPolicy => return Ok(Err(Exhausted::ContentPolicy)),
                Failure::Final => return Err(self.take_error()),
            };
            // A timeout imposed by the client's deadline says nothing about the deployment.
            let cut_short = reason == "timeout" && Instant::now() >= self.out.deadline;
            if cut_short {
                drop(attempt);
                return Err(self.deadline_passed());
            }
            app.health.failed(attempt, code, allowed_fails, cooldown);
            if retry == retries {
                break;
            }
            let again = Attempt {
                tried: &tried,
                stream: self.out.stream,
                ignore_circuits: false,
                full: &full,
            };
            let elsewhere = route::choose(self.state, model, constraints, &app.health, &again)
                .is_some_and(|c| !tried.contains(&c.deployment.id));
            if !self.wait_to_retry(elsewhere, retry, retry_after).await {
                break;
            }
            app.metrics
                .retries
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        Ok(Err(Exhausted::Failed))
    }

    /// How often `model` is tried, and how its deployments' circuits open: its routing rule's
    /// settings, else the edge's; no retries in panic mode.
    fn retry_policy(&self, rule: Option<&RoutingRule>, mode: Mode) -> RetryPolicy {
        let defaults = self.app.health.defaults();
        RetryPolicy {
            retries: match mode {
                Mode::Normal => rule.map_or(self.app.config.max_retries, |r| r.max_retries),
                Mode::Panic => 0,
            },
            allowed_fails: rule
                .map(|r| r.allowed_fails)
                .filter(|&n| n > 0)
                .unwrap_or(defaults.allowed_fails),
            cooldown: rule
                .map(|r| r.cooldown_seconds)
                .filter(|&s| s > 0)
                .map_or(defaults.cooldown, |s| Duration::from_secs(u64::from(s))),
        }
    }

    /// Waits before retry number `retry`, unless the retry goes `elsewhere`: failing over to
    /// another deployment needs no wait; coming back to one that failed does, and never
    /// sooner than it asked. False when the wait would outlive the deadline or hold the client
    /// too long: the fallbacks may answer sooner, or else the client hears `retry-after`.
    async fn wait_to_retry(
        &self,
        elsewhere: bool,
        retry: u32,
        retry_after: Option<Duration>,
    ) -> bool {
        if elsewhere {
            return true;
        }
        let wait = self.backoff(retry).max(retry_after.unwrap_or_default());
        let left = self.out.deadline.saturating_duration_since(Instant::now());
        if wait >= left || wait > self.app.config.max_retry_wait {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    fn count_upstream_error(&self, deployment: &Deployment, code: &'static str) {
        self.app
            .metrics
            .upstream_errors
            .get_or_create(&UpstreamLabels {
                provider: deployment.provider.as_str(),
                code,
            })
            .inc();
    }

    /// [`send`](Self::send) with what is left of the deadline (from `now`), in the attempt's
    /// span, which is returned for the caller to mark.
    async fn send_in_span(
        &self,
        deployment: &Deployment,
        now: Instant,
    ) -> Result<(Result<UpstreamReply, UpstreamError>, tracing::Span), EdgeError> {
        let config = &self.app.config;
        let remaining = self.out.deadline.saturating_duration_since(now);
        let timeouts = Timeouts {
            total: config.upstream_timeout.min(remaining),
            first_byte: config.first_byte_timeout.min(remaining),
        };
        let operation = if self.out.embeddings {
            "embeddings"
        } else {
            "chat"
        };
        let span = telemetry::attempt_span(operation, deployment, self.attempts);
        let sent = self
            .send(deployment, timeouts)
            .instrument(span.clone())
            .await?;
        Ok((sent, span))
    }

    /// One provider call. The outer `Err` is a request the edge cannot even send.
    async fn send(
        &self,
        deployment: &Deployment,
        timeouts: Timeouts,
    ) -> Result<Result<UpstreamReply, UpstreamError>, EdgeError> {
        let app = self.app;
        let provider = app.providers.for_deployment(deployment).ok_or_else(|| {
            EdgeError::Upstream(format!(
                "deployment {} uses provider {}, which this edge does not support yet",
                deployment.id, deployment.provider
            ))
        })?;
        if !deployment.api_base.is_empty()
            && let Err(refused) = app.providers.check_api_base(&deployment.api_base)
        {
            tracing::error!(deployment = %deployment.id, %refused, "api_base refused by the egress policy");
            return Ok(Err(UpstreamError::Failed(format!(
                "deployment {}: its api_base is not reachable from this edge ({refused})",
                deployment.id
            ))));
        }
        let body = upstream_body(
            self.out.bytes,
            self.out.model_at.clone(),
            self.out.model,
            &deployment.upstream_model,
            self.out.request_stream_usage,
        )?;
        let call = UpstreamCall {
            deployment,
            secrets: credentials::open(&app.credentials, self.state, deployment)
                .map_err(EdgeError::from)?,
            body,
            stream: self.out.stream,
            timeouts,
        };
        Ok(if self.out.embeddings {
            provider.embeddings(call).await
        } else {
            provider.chat(call).await
        })
    }

    /// The wait before retry number `retry` (from 0): uniform in [0, base × 2^retry], capped.
    fn backoff(&self, retry: u32) -> Duration {
        let config = &self.app.config;
        let ceiling = config
            .retry_backoff
            .saturating_mul(1 << retry.min(16))
            .min(config.retry_backoff_max);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }

    /// When every deployment of `model` this request may use is at its own rpm / tpm, that is
    /// what the client hears (unless something else answers first).
    fn note_full_deployments(&mut self, model: &str, constraints: &Constraints<'_>, edges: usize) {
        let mut usable = self
            .state
            .deployments_for(model)
            .filter(|d| constraints.allow(d))
            .peekable();
        if usable.peek().is_some()
            && usable.all(|d| self.app.limits.deployment_full(d, edges))
            && self.last_error.is_none()
        {
            self.last_error = Some(EdgeError::RateLimited {
                message: format!(
                    "every deployment of model {model:?} is at its requests- or tokens-per-minute limit; retry later"
                ),
                retry_after: Duration::from_secs(1),
            });
        }
    }

    fn take_error(&mut self) -> EdgeError {
        self.last_error.take().unwrap_or_else(|| {
            EdgeError::Upstream(format!(
                "no deployment of model {:?} could take the request",
                self.out.model
            ))
        })
    }

    fn deadline_passed(&self) -> EdgeError {
        EdgeError::UpstreamTimeout(format!(
            "the request's deadline passed after {} attempt(s); raise x-tollgate-timeout or the model's timeout_ms",
            self.attempts
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(message: &str) -> UpstreamError {
        UpstreamError::Rejected {
            status: 400,
            message: message.to_owned(),
        }
    }

    /// The kind of a failure, for comparing.
    fn kind(failure: Failure) -> &'static str {
        match failure {
            Failure::Retry { .. } => "retry",
            Failure::ContextWindow => "context window",
            Failure::ContentPolicy => "content policy",
            Failure::Final => "final",
        }
    }

    #[test]
    fn provider_refusals_are_told_apart() {
        let refusals = [
            (
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                "context window",
            ),
            (
                "prompt is too long: 210000 tokens > 200000 maximum",
                "context window",
            ),
            ("Input is too long for requested model.", "context window"),
            (
                "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                "content policy",
            ),
            (
                "Your request was rejected as a result of our safety system.",
                "content policy",
            ),
            ("messages[0].content is required", "final"),
        ];
        for (message, want) in refusals {
            assert_eq!(kind(classify(&rejected(message))), want, "{message}");
        }
        let throttled = UpstreamError::RateLimited {
            retry_after: Some("1.5".to_owned()),
        };
        assert!(matches!(
            classify(&throttled),
            Failure::Retry { retry_after: Some(d), .. } if d == Duration::from_millis(1500)
        ));
        // Not the deployment's doing: no retry, and its circuit is left alone.
        let local = UpstreamError::Local("out of file descriptors".to_owned());
        assert!(matches!(classify(&local), Failure::Final));
        assert!(
            !is_the_providers(&local),
            "nor counted as the provider's error"
        );
        assert!(is_the_providers(&throttled));
    }
}
