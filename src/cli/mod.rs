//! `tollgate admin …` and `tollgate usage …`: the command line over the admin and usage APIs.

use clap::Args;

/// Arguments of `tollgate admin`.
#[derive(Args)]
pub struct AdminArgs {}

/// Arguments of `tollgate usage`.
#[derive(Args)]
pub struct UsageArgs {}

pub async fn admin(_args: AdminArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub async fn usage(_args: UsageArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
