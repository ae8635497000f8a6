//! What an edge works out once per deployment address (an egress verdict, parsed routes) and
//! looks up on every request after.
//!
//! A plain map under a read lock rather than a cache: the addresses are the deployments', few
//! and rarely new, so the cache's bookkeeping on each lookup (it showed in the request path's
//! profile) buys nothing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{PoisonError, RwLock};

/// How many addresses a memo keeps. Past that it forgets them all: thousands of addresses are
/// a careless admin's, not a working policy, and a re-parse each costs less than memory
/// without end.
const KEPT: usize = 4096;

/// Values worked out from a deployment address, each once.
pub(super) struct AddressMemo<V> {
    known: RwLock<HashMap<Box<str>, V>>,
}

impl<V: Clone> AddressMemo<V> {
    pub(super) fn new() -> Self {
        AddressMemo {
            known: RwLock::default(),
        }
    }

    /// The value for `address`, from `make` the first time.
    pub(super) fn get_or_insert_with(&self, address: &str, make: impl FnOnce() -> V) -> V {
        match self.get_or_try_insert_with(address, || Ok::<_, Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// The value for `address`, from `make` the first time it succeeds (a failure is not
    /// kept).
    pub(super) fn get_or_try_insert_with<E>(
        &self,
        address: &str,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = known.get(address) {
            return Ok(value.clone());
        }
        drop(known);
        let value = make()?;
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KEPT {
            known.clear();
        }
        known.insert(address.into(), value.clone());
        Ok(value)
    }

    /// How many addresses it holds now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_value_is_made_once_per_address() {
        let memo = AddressMemo::new();
        let made = Cell::new(0);
        let make = |n| {
            made.set(made.get() + 1);
            n
        };
        assert_eq!(memo.get_or_insert_with("http://a", || make(1)), 1);
        assert_eq!(memo.get_or_insert_with("http://a", || make(2)), 1);
        assert_eq!(memo.get_or_insert_with("http://b", || make(3)), 3);
        assert_eq!(made.get(), 2);
    }

    #[test]
    fn a_failure_is_not_kept() {
        let memo = AddressMemo::new();
        assert_eq!(memo.get_or_try_insert_with("x", || Err("bad")), Err("bad"));
        assert_eq!(memo.get_or_try_insert_with("x", || Ok::<_, &str>(7)), Ok(7));
        assert_eq!(memo.get_or_try_insert_with("x", || Err("bad")), Ok(7));
    }

    #[test]
    fn past_its_bound_a_memo_starts_again() {
        let memo = AddressMemo::new();
        for n in 0..KEPT {
            memo.get_or_insert_with(&n.to_string(), || n);
        }
        memo.get_or_insert_with("one more", || 0);
        assert_eq!(memo.len(), 1);
        assert_eq!(
            memo.get_or_insert_with("0", || 99),
            99,
            "forgotten, made again"
        );
    }
}
