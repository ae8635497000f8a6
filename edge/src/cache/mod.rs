//! The response cache: exact-match answers for models with a cache policy.
//!
//! Two tiers. Each edge keeps answers in memory (`moka`, bounded by bytes, least recently used
//! out first, each entry expiring at its policy's TTL); every answer an edge stores is also
//! published on the bus's `response_cache` topic, and every edge adds what the others publish
//! to its own memory. A lookup therefore never leaves the edge: a hit on edge B of an answer
//! stored by edge A arrives as soon as the bus delivers it (milliseconds), with no round trip
//! on the request path.
//!
//! Only complete chat and embeddings answers (status 200) are stored; a streamed request is
//! answered from an entry by replaying it as a stream ([`replay`]). Request controls:
//! `cache-control: no-cache` skips the lookup, `no-store` the write, `max-age=N` refuses
//! entries older than N seconds.

pub mod key;
pub mod replay;
pub mod semantic;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use moka::Expiry;
use tokio::sync::watch;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{CacheScope, VirtualKey};
use tollgate_runtime::bus::{Bus, RESPONSE_CACHE};

use crate::clock::Clock;
use crate::guardrails::Applicable;
use crate::guardrails::text::{Shape, Texts};
use crate::metrics::{CacheLabels, Metrics};
use semantic::SemanticIndex;

/// The largest answer kept (larger ones go uncached).
const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// The largest answer shared with other edges (a NATS message carries at most 1 MiB).
const MAX_SHARED_BYTES: usize = 512 * 1024;
/// How many of the most recently shared answers a starting edge reads.
const WARM_ENTRIES: u64 = 10_000;
/// How long a publish to the shared tier may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes counted per entry on top of its body (key, times, bookkeeping).
const ENTRY_OVERHEAD: usize = 128;

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    /// Unix milliseconds.
    stored_at: i64,
    expires_at: i64,
}

/// The request a cache plan is for.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    /// `chat` or `embeddings`.
    pub route: &'a str,
    pub model: &'a str,
    pub headers: &'a HeaderMap,
    /// The body as the client sent it.
    pub body: &'a [u8],
}

/// What the cache does for one request.
#[derive(Debug)]
pub struct Plan {
    key: [u8; 32],
    ttl: Duration,
    lookup: bool,
    store: bool,
    max_age: Option<Duration>,
    /// When the policy has a semantic tier.
    pub semantic: Option<SemanticPlan>,
}

/// The semantic tier's part of a plan.
#[derive(Debug)]
pub struct SemanticPlan {
    pub embeddings_model: String,
    threshold: f64,
    family: [u8; 32],
    /// The request's text, to embed.
    pub text: String,
}

/// What the cache said about a request, for `x-tollgate-cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    /// The client asked not to be answered from the cache (`no-cache`).
    Bypass,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
        }
    }
}

/// Entries expire at their own policy's TTL (what was left of it when they arrived).
struct UntilExpiry;

impl Expiry<[u8; 32], Arc<Entry>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let left = entry.expires_at - chrono::Utc::now().timestamp_millis();
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

/// This edge's response cache.
pub struct ResponseCache {
    entries: moka::future::Cache<[u8; 32], Arc<Entry>>,
    semantic: SemanticIndex,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl ResponseCache {
    pub fn new(max_bytes: u64, bus: Arc<dyn Bus>, metrics: Arc<Metrics>, clock: Clock) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, entry: &Arc<Entry>| {
                u32::try_from(entry.body.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(UntilExpiry)
            .build();
        ResponseCache {
            entries,
            semantic: SemanticIndex::default(),
            bus,
            metrics,
            clock,
        }
    }

    /// The cache's plan for `asked` by `key`, when a cache policy covers its model; `None`
    /// (no cache, no header) otherwise.
    pub fn plan(
        &self,
        state: &PolicyState,
        key: &VirtualKey,
        asked: Asked<'_>,
        guardrails: &Applicable,
    ) -> Option<Plan> {
        if state.cache_policies.is_empty() {
            return None;
        }
        let policy = state
            .cache_policies
            .values()
            .find(|p| p.model == asked.model)?;
        let scope = match (policy.scope, &key.team_id) {
            (CacheScope::Global, _) => "global".to_owned(),
            (CacheScope::Team, Some(team)) => format!("team:{team}"),
            // A key without a team shares with nobody.
            (CacheScope::Team, None) | (CacheScope::Key, _) => format!("key:{}", key.id),
        };
        // An answer is only reused under the guardrails it was checked by.
        let mut fingerprint = Vec::new();
        for check in guardrails
            .input
            .iter()
            .chain(&guardrails.output)
            .chain(&guardrails.windowed)
        {
            fingerprint.extend_from_slice(check.fingerprint());
        }
        let (lookup, store, max_age) = controls(asked.headers);
        let semantic = match &policy.semantic {
            Some(s) => {
                let shape = if asked.route == "embeddings" {
                    Shape::EmbeddingsRequest
                } else {
                    Shape::ChatRequest
                };
                Some(SemanticPlan {
                    embeddings_model: s.embeddings_model.clone(),
                    threshold: s.threshold,
                    family: key::family(asked.route, &scope, &fingerprint, asked.body)?,
                    text: Texts::read(asked.body, shape).ok()?.texts.join("\n"),
                })
            }
            None => None,
        };
        Some(Plan {
            key: key::key(asked.route, &scope, &fingerprint, asked.body)?,
            ttl: Duration::from_secs(u64::from(policy.ttl_seconds)),
            lookup,
            store,
            max_age,
            semantic,
        })
    }

    /// Entries held, and their weight in bytes.
    pub async fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// The answer for `plan`, and what the lookup was.
    pub async fn lookup(&self, plan: &Plan) -> (Status, Option<Arc<Entry>>) {
        let (status, entry) = if !plan.lookup {
            (Status::Bypass, None)
        } else {
            match self.fresh(plan, &plan.key).await {
                Some(entry) => (Status::Hit, Some(entry)),
                None => (Status::Miss, None),
            }
        };
        self.count(status.as_str());
        (status, entry)
    }

    /// After an exact miss: the answer to the most similar request of the same family, when
    /// one is similar enough and still fresh.
    pub async fn lookup_similar(&self, plan: &Plan, vector: &[f32]) -> Option<Arc<Entry>> {
        let semantic = plan.semantic.as_ref()?;
        let (key, _) = self
            .semantic
            .nearest(&semantic.family, vector, semantic.threshold)?;
        let entry = self.fresh(plan, &key).await?;
        self.count("semantic_hit");
        Some(entry)
    }

    /// The entry under `key`, if it has not expired and is as young as the request accepts.
    async fn fresh(&self, plan: &Plan, key: &[u8; 32]) -> Option<Arc<Entry>> {
        let now = self.clock.now().timestamp_millis();
        let entry = self.entries.get(key).await?;
        let young_enough = plan.max_age.is_none_or(|age| {
            now - entry.stored_at <= i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
        });
        (entry.expires_at > now && young_enough).then_some(entry)
    }

    fn count(&self, result: &'static str) {
        let labels = CacheLabels { result };
        self.metrics.cache_lookups.get_or_create(&labels).inc();
    }

    /// Keeps `body` as the answer for `plan` here and, in the background, on every edge;
    /// `vector` (the request's embedding) indexes it for the semantic tier on this edge.
    pub async fn store(&self, plan: &Plan, body: Bytes, vector: Option<&[f32]>) {
        if !plan.store || body.len() > MAX_ENTRY_BYTES {
            return;
        }
        if let (Some(semantic), Some(vector)) = (&plan.semantic, vector) {
            self.semantic.insert(semantic.family, vector, plan.key);
        }
        let stored_at = self.clock.now().timestamp_millis();
        let entry = Arc::new(Entry {
            body,
            stored_at,
            expires_at: stored_at + i64::try_from(plan.ttl.as_millis()).unwrap_or(i64::MAX),
        });
        self.entries.insert(plan.key, entry.clone()).await;
        if entry.body.len() <= MAX_SHARED_BYTES {
            let bus = self.bus.clone();
            let msg_id = format!("{}-{stored_at}", hex::encode(plan.key));
            let payload = encode(&plan.key, &entry);
            tokio::spawn(async move {
                let published = bus.publish(RESPONSE_CACHE, &msg_id, payload);
                match tokio::time::timeout(PUBLISH_TIMEOUT, published).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "cache entry not shared"),
                    Err(_) => tracing::debug!("cache entry not shared: the bus did not answer"),
                }
            });
        }
    }

    /// Adds the answers other edges share to this edge's memory until `stop`.
    pub async fn follow(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut after = match self.bus.last(RESPONSE_CACHE).await {
            Ok(Some(last)) => last.sequence.saturating_sub(WARM_ENTRIES),
            _ => 0,
        };
        while !*stop.borrow() {
            match self.bus.subscribe(RESPONSE_CACHE, after).await {
                Ok(mut shared) => loop {
                    tokio::select! {
                        message = shared.next() => match message {
                            Some(Ok(message)) => {
                                after = message.sequence;
                                self.add_shared(message.payload).await;
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "shared cache feed interrupted");
                                break;
                            }
                            None => break,
                        },
                        _ = stop.changed() => return,
                    }
                },
                Err(e) => tracing::debug!(error = %e, "shared cache feed unavailable"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn add_shared(&self, payload: Bytes) {
        let Some((key, entry)) = decode(payload) else {
            return;
        };
        let now = self.clock.now().timestamp_millis();
        if entry.expires_at > now && !self.entries.contains_key(&key) {
            self.entries.insert(key, Arc::new(entry)).await;
        }
    }
}

/// The request's `cache-control`: (look up, store, max age).
fn controls(headers: &HeaderMap) -> (bool, bool, Option<Duration>) {
    let (mut lookup, mut store, mut max_age) = (true, true, None);
    for value in headers.get_all("cache-control") {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" => lookup = false,
                "no-store" => store = false,
                other => {
                    if let Some(seconds) = other.strip_prefix("max-age=")
                        && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
                    {
                        max_age = Some(Duration::from_secs(seconds));
                    }
                }
            }
        }
    }
    (lookup, store, max_age)
}

/// A shared entry on the bus: key, stored and expiry times (unix ms), then the body.
fn encode(key: &[u8; 32], entry: &Entry) -> Bytes {
    let mut out = BytesMut::with_capacity(48 + entry.body.len());
    out.put_slice(key);
    out.put_i64(entry.stored_at);
    out.put_i64(entry.expires_at);
    out.put_slice(&entry.body);
    out.freeze()
}

fn decode(mut payload: Bytes) -> Option<([u8; 32], Entry)> {
    if payload.len() < 48 || payload.len() > 48 + MAX_SHARED_BYTES {
        return None;
    }
    let key: [u8; 32] = payload.split_to(32).as_ref().try_into().ok()?;
    let stored_at = payload.get_i64();
    let expires_at = payload.get_i64();
    Some((
        key,
        Entry {
            body: payload,
            stored_at,
            expires_at,
        },
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn cache_control_directives_are_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(controls(&headers), (true, true, None));
        headers.insert("cache-control", HeaderValue::from_static("No-Cache"));
        assert_eq!(controls(&headers), (false, true, None));
        headers.insert(
            "cache-control",
            HeaderValue::from_static("no-store, max-age=30"),
        );
        assert_eq!(
            controls(&headers),
            (true, false, Some(Duration::from_secs(30)))
        );
    }

    #[test]
    fn shared_entries_round_trip_and_junk_is_ignored() {
        let entry = Entry {
            body: Bytes::from_static(b"{\"ok\":true}"),
            stored_at: 5,
            expires_at: 9,
        };
        let (key, back) = decode(encode(&[7; 32], &entry)).unwrap();
        assert_eq!(key, [7; 32]);
        assert_eq!((back.stored_at, back.expires_at), (5, 9));
        assert_eq!(back.body, entry.body);
        assert!(decode(Bytes::from_static(b"short")).is_none());
    }
}
