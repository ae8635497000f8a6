//! The semantic tier's index: per scope and request family (everything in the request but its
//! text), the unit vectors of requests whose answers this edge stored, newest last. A lookup
//! is a linear scan for the highest cosine similarity: at most [`MAX_VECTORS`] per family.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Vectors kept per scope and family; the oldest go first.
pub const MAX_VECTORS: usize = 10_000;

type Entries = VecDeque<(Vec<f32>, [u8; 32])>;

/// Vectors of stored requests, by (scope and family) key.
#[derive(Default)]
pub struct SemanticIndex {
    families: Mutex<HashMap<[u8; 32], Entries>>,
}

impl SemanticIndex {
    /// The cache key of the most similar stored request of `family`, when at least `threshold`
    /// similar, with its similarity.
    pub fn nearest(
        &self,
        family: &[u8; 32],
        vector: &[f32],
        threshold: f64,
    ) -> Option<([u8; 32], f64)> {
        let query = unit(vector)?;
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        families
            .get(family)?
            .iter()
            .map(|(v, key)| (*key, dot(v, &query)))
            .filter(|(_, similarity)| *similarity >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Remembers that the answer to the request with `vector` is stored under `key`.
    pub fn insert(&self, family: [u8; 32], vector: &[f32], key: [u8; 32]) {
        let Some(vector) = unit(vector) else { return };
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = families.entry(family).or_default();
        entries.retain(|(_, k)| *k != key);
        if entries.len() >= MAX_VECTORS {
            entries.pop_front();
        }
        entries.push_back((vector, key));
    }
}

/// `v` scaled to length 1; `None` for a zero or non-finite vector.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    (norm.is_finite() && norm > 0.0)
        .then(|| v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NEG_INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_vector_above_the_threshold_wins() {
        let index = SemanticIndex::default();
        let family = [1; 32];
        index.insert(family, &[1.0, 0.0], [10; 32]);
        index.insert(family, &[0.6, 0.8], [11; 32]);
        let (key, similarity) = index.nearest(&family, &[2.0, 0.1], 0.9).unwrap();
        assert_eq!(key, [10; 32]);
        assert!(similarity > 0.99);
        assert_eq!(index.nearest(&family, &[0.0, 1.0], 0.9), None);
        assert_eq!(
            index.nearest(&[2; 32], &[1.0, 0.0], 0.5),
            None,
            "other family"
        );
        assert_eq!(
            index.nearest(&family, &[0.0, 0.0], 0.5),
            None,
            "zero vector"
        );
        assert_eq!(
            index.nearest(&family, &[1.0, 0.0, 0.0], 0.5),
            None,
            "other length"
        );
    }
}
