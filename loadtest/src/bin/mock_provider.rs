//! `mock-provider`: an OpenAI-compatible upstream for load tests (see `tollgate_loadtest::mock`).

use clap::Parser;
use tollgate_loadtest::mock::{MockConfig, serve};

fn main() -> anyhow::Result<()> {
    let config = MockConfig::parse();
    tollgate_loadtest::serve_with_workers(config.workers, serve(config))
}
