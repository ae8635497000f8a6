//! `floor-proxy`: the minimal forwarding proxy (see `tollgate_loadtest::floor`).

use clap::Parser;
use tollgate_loadtest::floor::{FloorConfig, serve};

#[derive(Parser)]
#[command(
    name = "floor-proxy",
    about = "Minimal forwarding proxy: the floor a gateway cannot beat"
)]
struct Cli {
    #[command(flatten)]
    config: FloorConfig,
}

fn main() -> anyhow::Result<()> {
    let config = Cli::parse().config;
    tollgate_loadtest::serve_with_workers(config.workers, serve(config))
}
