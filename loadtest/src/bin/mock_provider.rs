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
    tollgate_loadtest::serve_with_workers(config.workers, serve(config))
}
