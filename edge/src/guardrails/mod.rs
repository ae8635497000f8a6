//! Guardrails: content checks on the request before the provider call (`pre_call`) and on the
//! answer after it (`post_call`, or `during_call` in windows as a stream flows).
//!
//! A guardrail applies to a request when its model, team and key lists all admit it (an empty
//! list admits all). Guardrails run in the order of their ids; each sees the text as the ones
//! before it left it (masked), and the first to block ends the request. A guardrail that cannot
//! run (Bedrock unreachable, a stored guardrail this edge cannot read) fails closed: the request
//! is refused, never let through unchecked.

mod bedrock;
pub mod local;
pub mod stream;
pub mod text;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tollgate_policy::PolicyState;
use tollgate_policy::guardrail::GuardrailSpec;
use tollgate_policy::model::{Guardrail, GuardrailMode, VirtualKey};

pub use bedrock::Source;
use bedrock::{APPLY_TIMEOUT, BedrockGuardrails};
use local::{Conclusion, Detector};

use crate::error::EdgeError;
use crate::metrics::{GuardrailLabels, Metrics};
use crate::providers::Egress;
use crate::providers::credentials::{CredentialKeys, open_credential};

/// One guardrail, ready to run.
pub struct Check {
    pub id: String,
    name: String,
    definition: Guardrail,
    /// The definition serialised once, for cache keys (an answer is reused only under the
    /// guardrails it was checked by).
    fingerprint: Vec<u8>,
    engine: Engine,
}

enum Engine {
    Local(Detector),
    Bedrock(tollgate_policy::guardrail::BedrockGuardrail),
    /// Stored, but not something this edge can run (written by another version): it refuses
    /// the requests it applies to, with this reason.
    Unusable(String),
}

impl Check {
    fn compile(definition: &Guardrail) -> Check {
        let engine = match GuardrailSpec::of(definition) {
            Ok(GuardrailSpec::Bedrock(b)) => Engine::Bedrock(b),
            Ok(spec) => match Detector::compile(&spec) {
                Ok(Some(detector)) => Engine::Local(detector),
                Ok(None) => Engine::Unusable("no local detector".to_owned()),
                Err(why) => Engine::Unusable(why),
            },
            Err(why) => Engine::Unusable(why),
        };
        Check {
            id: definition.id.clone(),
            name: definition.name.clone(),
            definition: definition.clone(),
            fingerprint: serde_json::to_vec(definition).unwrap_or_default(),
            engine,
        }
    }

    /// The guardrail's definition as bytes: equal bytes, equal guardrail.
    pub fn fingerprint(&self) -> &[u8] {
        &self.fingerprint
    }

    fn applies(&self, key: &VirtualKey, model: &str) -> bool {
        let g = &self.definition;
        (g.models.is_empty() || g.models.iter().any(|m| m == model)) && self.covers(key)
    }

    /// Whether the guardrail is scoped to `key` (or to everyone).
    pub fn covers(&self, key: &VirtualKey) -> bool {
        let g = &self.definition;
        (g.key_ids.is_empty() || g.key_ids.contains(&key.id))
            && (g.team_ids.is_empty()
                || key.team_id.as_ref().is_some_and(|t| g.team_ids.contains(t)))
    }
}

/// The guardrails of one request, by when they run.
#[derive(Clone, Default)]
pub struct Applicable {
    /// On the request, before the provider call.
    pub input: Vec<Arc<Check>>,
    /// On the whole answer before any of it is released.
    pub output: Vec<Arc<Check>>,
    /// On a stream's answer in windows as it flows (on a complete answer, like `output`).
    pub windowed: Vec<Arc<Check>>,
}

impl Applicable {
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.output.is_empty() && self.windowed.is_empty()
    }
}

/// What guardrails did to a request: recorded in its usage event.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub elapsed: Duration,
    /// Ids of the guardrails that masked or blocked something.
    pub intervened: Vec<String>,
}

/// The policy's guardrails compiled at one policy sequence.
struct Compiled {
    sequence: u64,
    checks: BTreeMap<String, Arc<Check>>,
}

/// Every guardrail of the current policy, compiled once per change, and what runs them.
pub struct Guardrails {
    compiled: RwLock<Arc<Compiled>>,
    bedrock: BedrockGuardrails,
    credentials: Arc<CredentialKeys>,
    metrics: Arc<Metrics>,
}

impl Guardrails {
    pub fn new(
        connect_timeout: Duration,
        egress: Egress,
        credentials: Arc<CredentialKeys>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Guardrails {
            compiled: RwLock::new(Arc::new(Compiled {
                sequence: 0,
                checks: BTreeMap::new(),
            })),
            bedrock: BedrockGuardrails::new(connect_timeout, egress),
            credentials,
            metrics,
        }
    }

    /// The guardrails that apply to `key` calling `model` under `state`.
    pub fn applicable(&self, state: &PolicyState, key: &VirtualKey, model: &str) -> Applicable {
        let mut applicable = Applicable::default();
        if state.guardrails.is_empty() {
            return applicable;
        }
        for check in self.compiled_for(state).checks.values() {
            if !check.applies(key, model) {
                continue;
            }
            let list = match check.definition.mode {
                GuardrailMode::PreCall => &mut applicable.input,
                GuardrailMode::PostCall => &mut applicable.output,
                GuardrailMode::DuringCall => &mut applicable.windowed,
            };
            list.push(check.clone());
        }
        applicable
    }

    /// The guardrail with id (or else name) `id`, compiled.
    pub fn named(&self, state: &PolicyState, id: &str) -> Option<Arc<Check>> {
        let compiled = self.compiled_for(state);
        compiled
            .checks
            .get(id)
            .or_else(|| compiled.checks.values().find(|c| c.name == id))
            .cloned()
    }

    /// The compiled guardrails of `state`; recompiles (reusing unchanged ones) when the policy
    /// moved on. The lock is only held to swap the pointer.
    fn compiled_for(&self, state: &PolicyState) -> Arc<Compiled> {
        let current = self
            .compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if current.sequence == state.sequence {
            return current;
        }
        let checks = state
            .guardrails
            .iter()
            .map(|(id, g)| {
                let reused = current.checks.get(id).filter(|c| c.definition == *g);
                let check = reused
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Check::compile(g)));
                (id.clone(), check)
            })
            .collect();
        let fresh = Arc::new(Compiled {
            sequence: state.sequence,
            checks,
        });
        let mut slot = self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.sequence <= fresh.sequence {
            *slot = fresh.clone();
        }
        fresh
    }

    /// Runs `checks` over `texts` in order. Returns the texts as the last guardrail left them
    /// when one masked something (`None` when they pass unchanged); a block or a guardrail
    /// that cannot run is the request's error.
    pub async fn run(
        &self,
        state: &PolicyState,
        checks: &[Arc<Check>],
        texts: &[String],
        source: Source,
        tally: &mut Tally,
    ) -> Result<Option<Vec<String>>, EdgeError> {
        let mut masked: Option<Vec<String>> = None;
        for check in checks {
            let started = Instant::now();
            let current = masked.as_deref().unwrap_or(texts);
            let conclusion = self.conclude(state, check, current, source).await;
            let elapsed = started.elapsed();
            tally.elapsed += elapsed;
            let labels = GuardrailLabels {
                guardrail: check.id.clone(),
                outcome: match &conclusion {
                    Ok(Conclusion::Clean) => "passed",
                    Ok(Conclusion::Masked(_)) => "masked",
                    Ok(Conclusion::Blocked(_)) => "blocked",
                    Err(_) => "failed",
                },
            };
            self.metrics
                .guardrail_seconds
                .observe(elapsed.as_secs_f64());
            self.metrics.guardrail_checks.get_or_create(&labels).inc();
            match conclusion? {
                Conclusion::Clean => {}
                Conclusion::Masked(texts) => {
                    tally.intervened.push(check.id.clone());
                    masked = Some(texts);
                }
                Conclusion::Blocked(summary) => {
                    tally.intervened.push(check.id.clone());
                    return Err(EdgeError::GuardrailIntervened {
                        guardrail: check.name.clone(),
                        summary,
                    });
                }
            }
        }
        Ok(masked)
    }

    async fn conclude(
        &self,
        state: &PolicyState,
        check: &Check,
        texts: &[String],
        source: Source,
    ) -> Result<Conclusion, EdgeError> {
        let failed = |why: String| EdgeError::GuardrailFailed {
            guardrail: check.name.clone(),
            reason: why,
        };
        match &check.engine {
            Engine::Local(detector) => Ok(detector.check(texts)),
            Engine::Unusable(why) => Err(failed(format!(
                "it cannot be applied ({why}); an admin should fix or delete it"
            ))),
            Engine::Bedrock(bedrock) => {
                let secrets = match &bedrock.credential_id {
                    Some(id) => {
                        let owner = ("guardrail", check.id.as_str());
                        let opened = open_credential(&self.credentials, state, id, owner)
                            .map_err(|e| failed(e.to_string()))?;
                        Some(opened)
                    }
                    None => None,
                };
                // Boxed where it is made: the SDK call's future is about 10 KB, and inline it
                // would make every request's future that large (copied and touched on every
                // request), guardrails or not. (A local moved into a box before the await can
                // still be given room in the future, so the box wraps the call itself.)
                let applied =
                    Box::pin(
                        self.bedrock
                            .apply(bedrock, secrets.as_deref(), texts, source),
                    );
                // The SDK's own timeout bounds the call; this bounds credential loading too.
                match tokio::time::timeout(APPLY_TIMEOUT * 2, applied).await {
                    Ok(result) => result.map_err(failed),
                    Err(_) => Err(failed(format!("no answer within {APPLY_TIMEOUT:?}"))),
                }
            }
        }
    }
}
