//! Choosing the deployment that serves a request: the lowest priority number among the model's
//! deployments, weighted random within it. (Strategies, fallbacks and cooldowns build on this.)

use rand::Rng;
use tollgate_policy::PolicyState;
use tollgate_policy::model::Deployment;

/// A deployment of `model`, if the model has any.
pub fn pick<'s>(state: &'s PolicyState, model: &str) -> Option<&'s Deployment> {
    let serving = || {
        state
            .deployments
            .values()
            .filter(move |d| d.model_name == model)
    };
    let best = serving().map(|d| d.priority).min()?;
    let candidates: Vec<&Deployment> = serving().filter(|d| d.priority == best).collect();
    let total: u64 = candidates.iter().map(|d| u64::from(d.weight.max(1))).sum();
    let mut ticket = rand::rng().random_range(0..total.max(1));
    for deployment in &candidates {
        let weight = u64::from(deployment.weight.max(1));
        if ticket < weight {
            return Some(deployment);
        }
        ticket -= weight;
    }
    candidates.last().copied()
}
