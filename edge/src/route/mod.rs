//! Choosing the deployment that serves an attempt. Among the model's deployments that the
//! request's traffic rule allows and whose circuit lets a request through, deployments not yet
//! tried by this request come first, then those in the preferred region, then the lowest
//! priority number; the strategy picks among what is left.

pub mod rules;

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Deployment, RoutingStrategy};

use crate::health::{DeploymentHealth, Health};
use crate::pricing;

/// Where a request may go, from its model's routing rule and its traffic rule.
#[derive(Clone, Copy, Debug)]
pub struct Constraints<'r> {
    /// Only these deployments; empty = any.
    pub deployment_ids: &'r [String],
    /// Only deployments in these regions; empty = any.
    pub regions: &'r [String],
    pub prefer_region: Option<&'r str>,
    pub strategy: RoutingStrategy,
}

impl Constraints<'_> {
    pub fn allow(&self, d: &Deployment) -> bool {
        (self.deployment_ids.is_empty() || self.deployment_ids.contains(&d.id))
            && (self.regions.is_empty() || self.regions.contains(&d.region))
    }
}

/// A deployment chosen for an attempt, with its health on this edge.
pub struct Choice<'s> {
    pub deployment: &'s Deployment,
    pub health: Arc<DeploymentHealth>,
}

/// Whether `model` has any deployment the constraints allow (available or not).
pub fn serves(state: &PolicyState, model: &str, constraints: &Constraints<'_>) -> bool {
    state
        .deployments
        .values()
        .any(|d| d.model_name == model && constraints.allow(d))
}

/// What one attempt must respect besides the request's constraints.
pub struct Attempt<'a> {
    /// The deployments this request already tried; chosen again only when nothing else is
    /// available.
    pub tried: &'a [String],
    pub stream: bool,
    /// Choose a deployment whose circuit is open too (panic mode).
    pub ignore_circuits: bool,
    /// Deployments at their own rpm / tpm: never chosen.
    pub full: &'a (dyn Fn(&Deployment) -> bool + Sync),
}

/// The deployment of `model` for the next attempt, if one can take it now.
pub fn choose<'s>(
    state: &'s PolicyState,
    model: &str,
    constraints: &Constraints<'_>,
    health: &Health,
    attempt: &Attempt<'_>,
) -> Option<Choice<'s>> {
    let now = Instant::now();
    let mut pool: Vec<Choice<'s>> = state
        .deployments
        .values()
        .filter(|d| d.model_name == model && constraints.allow(d) && !(attempt.full)(d))
        .map(|d| Choice {
            deployment: d,
            health: health.of(&d.id),
        })
        .filter(|c| attempt.ignore_circuits || c.health.available(now))
        .collect();
    narrow(&mut pool, |c| !attempt.tried.contains(&c.deployment.id));
    if let Some(region) = constraints.prefer_region {
        narrow(&mut pool, |c| c.deployment.region == region);
    }
    let best = pool.iter().map(|c| c.deployment.priority).min()?;
    pool.retain(|c| c.deployment.priority == best);
    let index = match constraints.strategy {
        RoutingStrategy::SimpleShuffle | RoutingStrategy::Weighted => {
            weighted(pool.iter().map(|c| c.deployment.weight))
        }
        RoutingStrategy::Priority => (0..pool.len())
            .min_by_key(|&i| &pool[i].deployment.id)
            .unwrap_or(0),
        RoutingStrategy::LeastBusy => lowest(&pool, |c| c.health.in_flight() as f64),
        RoutingStrategy::LatencyBased => {
            // A deployment without a sample is tried first, so that every one gets measured.
            lowest(&pool, |c| {
                c.health
                    .latency_us(attempt.stream)
                    .map_or(0.0, |v| v as f64)
            })
        }
        RoutingStrategy::CostBased => lowest(&pool, |c| price_per_mtok(state, c.deployment)),
        RoutingStrategy::UsageBased => lowest(&pool, |c| -headroom(c)),
    };
    Some(pool.swap_remove(index))
}

/// Keeps the choices that satisfy `preferred`, unless none does.
fn narrow<'s>(pool: &mut Vec<Choice<'s>>, preferred: impl Fn(&Choice<'s>) -> bool) {
    if pool.iter().any(&preferred) {
        pool.retain(preferred);
    }
}

/// Weighted random: the index of each weight with probability weight / total (a weight of 0
/// counts as 1).
fn weighted(weights: impl Iterator<Item = u32> + Clone) -> usize {
    let total: u64 = weights.clone().map(|w| u64::from(w.max(1))).sum();
    let mut ticket = rand::rng().random_range(0..total.max(1));
    let mut last = 0;
    for (i, weight) in weights.enumerate() {
        let weight = u64::from(weight.max(1));
        if ticket < weight {
            return i;
        }
        ticket -= weight;
        last = i;
    }
    last
}

/// The choice with the lowest `score`, ties broken by weight (so equals share the load).
fn lowest(pool: &[Choice<'_>], score: impl Fn(&Choice<'_>) -> f64) -> usize {
    let scores: Vec<f64> = pool.iter().map(&score).collect();
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let tied: Vec<usize> = (0..pool.len()).filter(|&i| scores[i] <= best).collect();
    if tied.len() <= 1 {
        return tied.first().copied().unwrap_or(0);
    }
    tied[weighted(tied.iter().map(|&i| pool[i].deployment.weight))]
}

/// The price `d`'s answers are charged at, per million tokens; unknown prices sort last.
fn price_per_mtok(state: &PolicyState, d: &Deployment) -> f64 {
    pricing::charged(state, d).map_or(f64::MAX, pricing::per_mtok)
}

/// The share of its rpm / tpm limits a deployment has left this minute (the smaller of the
/// two; 1 when it has no limits).
fn headroom(c: &Choice<'_>) -> f64 {
    let (requests, tokens) = c.health.minute_usage();
    let left = |used: u64, limit: u64| {
        if limit == 0 {
            1.0
        } else {
            1.0 - used as f64 / limit as f64
        }
    };
    left(requests, c.deployment.rpm).min(left(tokens, c.deployment.tpm))
}
