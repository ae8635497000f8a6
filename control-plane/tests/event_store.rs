//! The event store's guarantees, on PostgreSQL and SQLite alike: optimistic concurrency per
//! aggregate, a gap-free global sequence that readers never skip, and snapshots.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::Utc;
use tollgate_control_plane::store::{EventStore, NewEvent, StoreError, load_state};
use tollgate_policy::PolicyEvent;
use tollgate_policy::model::Team;
use tollgate_test_support::on_both_backends;
use tollgate_test_support::roles::*;
use uuid::Uuid;

fn team_event(id: &str, version: u64, name: &str) -> NewEvent {
    let team = Team {
        id: id.to_owned(),
        name: name.to_owned(),
        metadata: Default::default(),
    };
    NewEvent {
        id: Uuid::now_v7(),
        aggregate_id: format!("team:{id}"),
        version,
        actor: "test".to_owned(),
        occurred_at: Utc::now(),
        event: if version == 1 {
            PolicyEvent::TeamCreated { team }
        } else {
            PolicyEvent::TeamUpdated { team }
        },
    }
}

/// The versions of `aggregate` and all sequences, read back from the log.
async fn log_contents(store: &dyn EventStore, aggregate: &str) -> Result<(Vec<u64>, Vec<u64>)> {
    let events = store.read_after(0, 100_000).await?;
    let versions = events
        .iter()
        .filter(|e| e.aggregate_id == aggregate)
        .map(|e| e.version)
        .collect();
    let sequences = events.iter().map(|e| e.sequence).collect();
    Ok((versions, sequences))
}

async fn concurrent_writers_on_one_aggregate_get_distinct_versions_or_a_conflict(
    backend: Backend,
) -> Result<()> {
    let test = backend.store().await?;
    let store = test.store.clone();
    store.append(None, vec![team_event("t", 1, "v1")]).await?;
    const WRITERS: usize = 50;
    // Every writer reads before any appends, so all of them build on version 1 and race for
    // version 2: exactly one may win, every other one must see a conflict.
    let all_have_read = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (store, all_have_read) = (store.clone(), all_have_read.clone());
        writers.push(tokio::spawn(async move {
            let (versions, _) = log_contents(store.as_ref(), "team:t").await?;
            let next = versions.last().copied().unwrap_or(0) + 1;
            all_have_read.wait().await;
            match store
                .append(None, vec![team_event("t", next, &format!("w{writer}"))])
                .await
            {
                Ok(recorded) => Ok(Some(recorded[0].version)),
                Err(StoreError::Conflict(_)) => Ok(None),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        }));
    }
    let mut won = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        match writer.await?? {
            Some(version) => won.push(version),
            None => conflicts += 1,
        }
    }
    assert_eq!(won, vec![2], "exactly one writer gets version 2");
    assert_eq!(conflicts, WRITERS - 1, "every other writer sees a conflict");
    let (versions, sequences) = log_contents(store.as_ref(), "team:t").await?;
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "versions have no gaps or duplicates"
    );
    assert_eq!(
        sequences,
        (1..=sequences.len() as u64).collect::<Vec<_>>(),
        "the sequence has no gaps"
    );
    assert_eq!(versions, vec![1, 2]);
    Ok(())
}

async fn an_append_expecting_an_old_sequence_conflicts_and_writes_nothing(
    backend: Backend,
) -> Result<()> {
    let test = backend.store().await?;
    let store = test.store.as_ref();
    store.append(Some(0), vec![team_event("a", 1, "a")]).await?;
    let stale = store.append(Some(0), vec![team_event("b", 1, "b")]).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(_))),
        "got {stale:?}"
    );
    let wrong_version = store.append(None, vec![team_event("a", 3, "a3")]).await;
    assert!(
        matches!(wrong_version, Err(StoreError::Conflict(_))),
        "got {wrong_version:?}"
    );
    let batch = store
        .append(
            None,
            vec![team_event("c", 1, "c"), team_event("a", 1, "dup")],
        )
        .await;
    assert!(
        matches!(batch, Err(StoreError::Conflict(_))),
        "a failing batch is refused whole"
    );
    assert_eq!(store.last_sequence().await?, 1);
    assert_eq!(store.read_after(0, 10).await?.len(), 1);
    Ok(())
}

/// Returns once the late append is held up by the open one: on PostgreSQL, once a session of
/// the test's database waits for a lock; on SQLite (whose writers queue inside the store), after
/// a pause that gives a wrong store time to commit out of order. Either way, the sequence
/// assertions that follow are what prove the order; this only makes them bite.
async fn wait_until_an_append_is_blocked(backend: Backend, url: &str) -> Result<()> {
    match backend {
        Backend::PostgresJetStream => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut conn)
                .await?;
                if waiting > 0 {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("the late append never waited for the open one's lock");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Backend::SqliteMemory => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
    }
}

async fn readers_never_skip_an_event_whose_transaction_commits_late(
    backend: Backend,
) -> Result<()> {
    let test = backend.store().await?;
    let store = test.store.clone();
    // The first append takes its sequence and holds it, uncommitted.
    let early = store
        .begin_append(None, vec![team_event("early", 1, "early")])
        .await?;
    // A second append starts meanwhile; it must not commit a later sequence first.
    let late_store = store.clone();
    let (started, late_started) = tokio::sync::oneshot::channel();
    let late = tokio::spawn(async move {
        let _ = started.send(());
        late_store
            .append(None, vec![team_event("late", 1, "late")])
            .await
    });
    late_started.await?;
    wait_until_an_append_is_blocked(backend, &test.url).await?;
    assert!(!late.is_finished(), "a later append waits for the open one");
    assert!(
        store.read_after(0, 10).await?.is_empty(),
        "readers see nothing uncommitted"
    );
    assert_eq!(store.last_sequence().await?, 0);
    early.commit().await?;
    let late = late.await??;
    let seen: Vec<(u64, String)> = store
        .read_after(0, 10)
        .await?
        .into_iter()
        .map(|e| (e.sequence, e.aggregate_id))
        .collect();
    assert_eq!(
        seen,
        vec![(1, "team:early".to_owned()), (2, "team:late".to_owned())]
    );
    assert_eq!(late[0].sequence, 2);
    Ok(())
}

async fn a_reader_polling_during_a_slow_append_sees_every_event_in_order(
    backend: Backend,
) -> Result<()> {
    let test = backend.store().await?;
    let store: Arc<dyn EventStore> = test.store.clone();
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        // A relay-style reader: `sequence > last`, as fast as it can.
        let mut last = 0;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 40 {
            if tokio::time::Instant::now() > deadline {
                bail!("reader saw only {} of 40 events", seen.len());
            }
            for event in reader_store.read_after(last, 100).await? {
                last = event.sequence;
                seen.push(event.sequence);
            }
        }
        Ok(seen)
    });
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10 {
                let pending = store
                    .begin_append(None, vec![team_event(&format!("w{w}-{i}"), 1, "x")])
                    .await?;
                // Hold some appends open a while, as a slow transaction would.
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                pending.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let seen = reader.await??;
    assert_eq!(
        seen,
        (1..=40).collect::<Vec<u64>>(),
        "the reader saw every sequence once, in order"
    );
    Ok(())
}

async fn a_snapshot_plus_later_events_equals_the_full_replay(backend: Backend) -> Result<()> {
    let test = backend.store().await?;
    let store = test.store.as_ref();
    for i in 0..5 {
        store
            .append(
                None,
                vec![team_event(&format!("t{i}"), 1, &format!("team {i}"))],
            )
            .await?;
    }
    let at_five = load_state(store).await?;
    store.save_snapshot(&at_five).await?;
    store
        .append(None, vec![team_event("t1", 2, "renamed")])
        .await?;
    store
        .append(None, vec![team_event("t9", 1, "late")])
        .await?;
    let from_snapshot = load_state(store).await?;
    let mut full = tollgate_policy::PolicyState::default();
    for event in store.read_after(0, 1000).await? {
        full.apply(&event);
    }
    assert_eq!(from_snapshot, full);
    assert_eq!(from_snapshot.sequence, 7);
    assert_eq!(from_snapshot.teams["t1"].name, "renamed");
    assert_eq!(store.latest_snapshot().await?.map(|s| s.sequence), Some(5));
    Ok(())
}

on_both_backends!(
    concurrent_writers_on_one_aggregate_get_distinct_versions_or_a_conflict,
    an_append_expecting_an_old_sequence_conflicts_and_writes_nothing,
    readers_never_skip_an_event_whose_transaction_commits_late,
    a_reader_polling_during_a_slow_append_sees_every_event_in_order,
    a_snapshot_plus_later_events_equals_the_full_replay,
);
