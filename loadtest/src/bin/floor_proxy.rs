//! `floor-proxy`: the minimal forwarding proxy (see `tollgate_loadtest::floor`).

use clap::Parser;
use tollgate_loadtest::floor::{FloorConfig, serve};

fn main() -> anyhow::Result<()> {
    let config = FloorConfig::parse();
    tollgate_loadtest::serve_with_workers(config.workers, serve(config))
}
