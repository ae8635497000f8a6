//! Tollgate as a newcomer first runs it: `tollgate up`, every role in one process on SQLite and
//! the in-process bus, with the same policy as the distributed shape, so that the report shows
//! the two shapes' throughput and CPU side by side.

use std::path::Path;

use crate::procs::{Proc, free_addr};
use crate::tollgate::{
    CREDENTIAL_KEY, admin_client, last_sequence, role_command, serves_policy, set_up_policy,
};

/// A running `tollgate up`.
pub struct Embedded {
    pub proc: Proc,
    /// The OpenAI-compatible API's address.
    pub addr: String,
    /// `Bearer <secret>` of the load key.
    pub key: String,
}

impl Embedded {
    /// Starts `tollgate up` with its data in `log_dir` and the load policy pointing at `mock`
    /// (host:port), and waits until its edge serves that policy.
    pub async fn start(bin: &Path, mock: &str, log_dir: &Path) -> anyhow::Result<Embedded> {
        let admin_token = format!("tga-loadtest-{}", tollgate_test_support::unique_name("up"));
        let admin_addr = free_addr()?;
        let addr = free_addr()?;
        let mut command = role_command(bin, "up");
        command
            .env("TOLLGATE_DATA_DIR", log_dir.join("up-data"))
            .env("TOLLGATE_UI_ADDR", "off")
            .env("TOLLGATE_ADMIN_ADDR", &admin_addr)
            .env("TOLLGATE_ADMIN_TOKEN", &admin_token)
            .env("TOLLGATE_CREDENTIAL_KEY", CREDENTIAL_KEY)
            .env("TOLLGATE_EDGE_ADDR", &addr)
            .env("TOLLGATE_USAGE_ADDR", free_addr()?)
            .env("TOLLGATE_USAGE_HTTP_ADDR", free_addr()?);
        let proc = Proc::spawn("tollgate up", command, &log_dir.join("up.log"), false)?;
        let mut admin = admin_client(&admin_addr, admin_token, "tollgate up", "up.log").await?;
        let key = set_up_policy(&mut admin, mock).await?.key;
        let target = last_sequence(&mut admin).await?;
        serves_policy(&addr, target, "up").await?;
        Ok(Embedded { proc, addr, key })
    }
}
