//! `loadtest`: one command that measures Tollgate beside a direct call, the floor proxy and
//! LiteLLM's proxy in the same run, plus policy propagation, and writes the report.

use clap::Parser;
use tollgate_loadtest::run::{Options, run};

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    // Two workers: the runner itself only orchestrates; load rounds run on their own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // On Ctrl-C or SIGTERM the run is dropped, and with it every child process it started
    // (their handles kill them): nothing is left listening after an interrupted run.
    let outcome = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            report = run(options) => report,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    let report = outcome?;
    println!("report: {}", report.display());
    Ok(())
}
