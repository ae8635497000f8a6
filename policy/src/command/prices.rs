//! Model prices: per million tokens, never negative.

use crate::event::PolicyEvent;
use crate::model::Price;
use crate::state::PolicyState;
use crate::validate;

use super::{Decision, changed, deleted};

/// Sets a model's price (nothing if it is the same).
pub(super) fn set(state: &PolicyState, price: Price) -> Decision {
    validate::model_name("model", &price.model)?;
    validate::non_negative("input_per_mtok", price.input_per_mtok)?;
    validate::non_negative("output_per_mtok", price.output_per_mtok)?;
    validate::non_negative("cached_input_per_mtok", price.cached_input_per_mtok)?;
    validate::non_negative("cache_write_per_mtok", price.cache_write_per_mtok)?;
    changed(state.prices.get(&price.model), price, |price| {
        PolicyEvent::PriceSet { price }
    })
}

/// Deletes a model's price.
pub(super) fn delete(state: &PolicyState, model: String) -> Decision {
    deleted(
        state.prices.get(&model),
        "price for model",
        model,
        |model| PolicyEvent::PriceDeleted { model },
    )
}
