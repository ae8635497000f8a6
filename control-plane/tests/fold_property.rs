//! For any sequence of commands run through the control plane on a real store, the state
//! folded from the log equals the live state, and snapshot + later events equals a full replay.

mod common;

use std::sync::Arc;

use anyhow::Result;
use common::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::store::load_state;
use tollgate_policy::testing::{command, replay};

/// Cases per backend: each one gets a fresh database, so keep the count modest.
const CASES: usize = 12;

async fn folded_log_equals_live_state_and_snapshots_change_nothing(backend: Backend) -> Result<()> {
    let mut runner = TestRunner::new(Config::default());
    let commands = proptest::collection::vec(command(), 1..60);
    for case in 0..CASES {
        let commands = commands
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        let test = backend.store().await?;
        let store = test.store.clone();
        let log = Arc::new(PolicyLog::open(store.clone()).await?);
        let snapshot_at = commands.len() / 2;
        for (i, command) in commands.into_iter().enumerate() {
            // Refused commands are part of the property: they must leave no trace.
            let _ = log.execute("property-test", command).await;
            if i == snapshot_at {
                store.save_snapshot(&log.state()).await?;
            }
        }
        let live = log.state();
        let events = store.read_after(0, 100_000).await?;
        assert_eq!(
            &replay(&events),
            live.as_ref(),
            "case {case}: full replay equals the live state"
        );
        assert_eq!(
            &load_state(store.as_ref()).await?,
            live.as_ref(),
            "case {case}: snapshot + later events equals the live state"
        );
        assert!(events.iter().all(|e| e.actor == "property-test"));
        let reopened = PolicyLog::open(store.clone()).await?;
        assert_eq!(
            reopened.state().as_ref(),
            live.as_ref(),
            "case {case}: a restarted control plane has the same state"
        );
    }
    Ok(())
}

on_both_backends!(folded_log_equals_live_state_and_snapshots_change_nothing);
