//! `loadtest`: one command that measures Tollgate beside a direct call, the floor proxy and
//! LiteLLM's proxy in the same run, plus policy propagation, and writes the report.

use clap::Parser;
use tollgate_loadtest::run::{Options, run};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Measure Tollgate against a direct call, a minimal proxy and LiteLLM; write loadtest/results/<date>-<machine>.md"
)]
struct Cli {
    #[command(flatten)]
    options: Options,
}

fn main() -> anyhow::Result<()> {
    let options = Cli::parse().options;
    // Two workers: the runner itself only orchestrates; load rounds run on their own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(options))?;
    println!("report: {}", report.display());
    Ok(())
}
