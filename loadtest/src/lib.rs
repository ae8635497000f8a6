//! Tollgate's benchmark suite: the mock upstream, the floor proxy, the open-loop load
//! generator, and the runner that measures Tollgate beside its references in one run and
//! writes `loadtest/results/<date>-<machine>.md`.

pub mod charts;
pub mod compare;
pub mod embedded;
pub mod floor;
pub mod http;
pub mod litellm;
pub mod load;
mod markdown;
pub mod mock;
pub mod plan;
pub mod procs;
pub mod profile;
pub mod propagation;
pub mod report;
mod report_tail;
pub mod results;
pub mod run;
pub mod stalls;
pub mod streams;
pub mod suite;
pub mod syscalls;
pub mod tollgate;
pub mod verdict;
pub mod wakeup;

/// Runs `server` to its end on a runtime of `workers` threads (at least one): the main of
/// `mock-provider` and `floor-proxy`, whose worker count is part of what they model.
pub fn serve_with_workers(
    workers: usize,
    server: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?
        .block_on(server)
}
