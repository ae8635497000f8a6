//! Cost of a request from the price table (USD per million tokens of each class).

use tollgate_policy::PolicyState;
use tollgate_policy::model::{Deployment, Price};

/// Tokens of one request, by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All input tokens, cached ones included.
    pub input: u64,
    pub output: u64,
    /// The part of `input` read from the provider's prompt cache.
    pub cached_input: u64,
    /// The part of `input` written to the provider's prompt cache.
    pub cache_write: u64,
}

/// The price `deployment`'s answers are charged at: its model name's, else its upstream
/// model's.
pub fn charged<'s>(state: &'s PolicyState, deployment: &Deployment) -> Option<&'s Price> {
    state
        .prices
        .get(&deployment.model_name)
        .or_else(|| state.prices.get(&deployment.upstream_model))
}

/// The price a request for `model` is reserved against before a deployment is chosen: the
/// model name's, else the first of its deployments' charged prices.
pub fn model_price<'s>(state: &'s PolicyState, model: &str) -> Option<&'s Price> {
    state
        .prices
        .get(model)
        .or_else(|| state.deployments_for(model).find_map(|d| charged(state, d)))
}

/// The cost in USD; 0 when the model has no price.
pub fn cost(price: Option<&Price>, tokens: Tokens) -> f64 {
    let Some(price) = price else { return 0.0 };
    let uncached = tokens
        .input
        .saturating_sub(tokens.cached_input)
        .saturating_sub(tokens.cache_write);
    (uncached as f64 * price.input_per_mtok
        + tokens.cached_input as f64 * price.cached_input_per_mtok
        + tokens.cache_write as f64 * price.cache_write_per_mtok
        + tokens.output as f64 * price.output_per_mtok)
        / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_input_is_priced_apart_from_the_rest() {
        let price = Price {
            model: "m".into(),
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
            cached_input_per_mtok: 0.5,
            cache_write_per_mtok: 0.0,
        };
        let tokens = Tokens {
            input: 1_000_000,
            output: 500_000,
            cached_input: 400_000,
            cache_write: 0,
        };
        assert!((cost(Some(&price), tokens) - (1.2 + 0.2 + 4.0)).abs() < 1e-9);
        assert_eq!(cost(None, tokens), 0.0);
        let price = Price {
            cache_write_per_mtok: 3.0,
            ..price
        };
        let written = Tokens {
            input: 1_000_000,
            output: 0,
            cached_input: 0,
            cache_write: 500_000,
        };
        assert!((cost(Some(&price), written) - (1.0 + 1.5)).abs() < 1e-9);
    }
}
