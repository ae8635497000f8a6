//! For any sequence of commands run through the control plane on a real store, each command is
//! accepted exactly when the pure `decide` accepts it (appending what it decided) and refused
//! without a trace otherwise; the state folded from the log equals the live state, and
//! snapshot + later events equals a full replay.

use std::sync::Arc;

use anyhow::{Result, bail};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use tollgate_control_plane::error::ControlError;
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::store::load_state;
use tollgate_policy::command::decide;
use tollgate_policy::testing::{command, replay};
use tollgate_test_support::on_both_backends;
use tollgate_test_support::roles::*;

/// Cases per backend: each one gets a fresh database, so keep the count modest.
const CASES: usize = 12;

async fn folded_log_equals_live_state_and_snapshots_change_nothing(backend: Backend) -> Result<()> {
    let mut runner = TestRunner::new(Config::default());
    let commands = proptest::collection::vec(command(), 1..60);
    let (mut accepted, mut refusals) = (0, 0);
    for case in 0..CASES {
        let commands = commands
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        let test = backend.store().await?;
        let store = test.store.clone();
        let log = Arc::new(PolicyLog::open(store.clone()).await?);
        let snapshot_at = commands.len() / 2;
        let mut appended = 0;
        for (i, command) in commands.into_iter().enumerate() {
            let before = log.state();
            let decided = decide(&before, command.clone(), chrono::Utc::now());
            match (decided, log.execute("property-test", command.clone()).await) {
                (Ok(events), Ok(recorded)) => {
                    let kinds = |e: &[_]| e.iter().map(std::mem::discriminant).collect::<Vec<_>>();
                    let recorded_events: Vec<_> =
                        recorded.iter().map(|r| r.event.clone()).collect();
                    assert_eq!(
                        kinds(&recorded_events),
                        kinds(&events),
                        "case {case}: {command:?} appended other events than decided"
                    );
                    appended += recorded.len();
                    accepted += usize::from(!recorded.is_empty());
                }
                // Refused commands are part of the property: they must leave no trace.
                (Err(decided), Err(ControlError::Command(refused))) => {
                    assert_eq!(refused.to_string(), decided.to_string(), "case {case}");
                    assert_eq!(log.state(), before, "case {case}: {command:?} left a trace");
                    refusals += 1;
                }
                (decided, executed) => bail!(
                    "case {case}: {command:?}: decide said {decided:?}, the control plane {executed:?}"
                ),
            }
            if i == snapshot_at {
                store.save_snapshot(&log.state()).await?;
            }
        }
        let live = log.state();
        let events = store.read_after(0, 100_000).await?;
        assert_eq!(
            events.len(),
            appended,
            "case {case}: the log holds what was appended"
        );
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
    // Both paths are exercised: a generator (or a control plane) that only ever refuses
    // would make the rest of the property vacuous.
    assert!(
        accepted >= 20 && refusals >= 20,
        "{accepted} commands accepted, {refusals} refused over {CASES} cases"
    );
    Ok(())
}

on_both_backends!(folded_log_equals_live_state_and_snapshots_change_nothing);
