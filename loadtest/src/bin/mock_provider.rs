//! `mock-provider`: an OpenAI-compatible upstream for load tests (see `tollgate_loadtest::mock`).

use clap::Parser;
use tollgate_loadtest::mock::{MockConfig, serve};

#[derive(Parser)]
#[command(
    name = "mock-provider",
    about = "OpenAI-compatible mock upstream for load tests"
)]
struct Cli {
    #[command(flatten)]
    config: MockConfig,
}

fn main() -> anyhow::Result<()> {
    let config = Cli::parse().config;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.max(1))
        .enable_all()
        .build()?
        .block_on(serve(config))
}
