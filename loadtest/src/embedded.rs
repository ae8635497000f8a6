//! Tollgate as a newcomer first runs it: `tollgate up`, every role in one process on SQLite and
//! the in-process bus, with the same policy as the distributed shape, so that the report shows
//! the two shapes' throughput and CPU side by side.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_test_support::Bearer;
use tonic::transport::Channel;

use crate::procs::{Proc, free_port};
use crate::tollgate::{CREDENTIAL_KEY, last_sequence, serves_policy, set_up_policy, wait_for};

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
        let admin_addr = format!("127.0.0.1:{}", free_port()?);
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut command = Command::new(bin);
        command
            .arg("up")
            .env_remove("TOLLGATE_CONFIG")
            .env("RUST_LOG", "warn")
            .env("TOLLGATE_DATA_DIR", log_dir.join("up-data"))
            .env("TOLLGATE_UI_ADDR", "off")
            .env("TOLLGATE_ADMIN_ADDR", &admin_addr)
            .env("TOLLGATE_ADMIN_TOKEN", &admin_token)
            .env("TOLLGATE_CREDENTIAL_KEY", CREDENTIAL_KEY)
            .env("TOLLGATE_EDGE_ADDR", &addr)
            .env("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{}", free_port()?))
            .env(
                "TOLLGATE_USAGE_HTTP_ADDR",
                format!("127.0.0.1:{}", free_port()?),
            );
        let proc = Proc::spawn("tollgate up", command, &log_dir.join("up.log"), false)?;
        wait_for(Duration::from_secs(60), || {
            crate::procs::answers(&admin_addr)
        })
        .await
        .context("tollgate up did not start listening (see up.log)")?;
        let channel = Channel::from_shared(format!("http://{admin_addr}"))?
            .connect()
            .await?;
        let mut admin = AdminServiceClient::with_interceptor(channel, Bearer(admin_token));
        let key = set_up_policy(&mut admin, mock).await?.key;
        let target = last_sequence(&mut admin).await?;
        serves_policy(&addr, target, "up").await?;
        Ok(Embedded { proc, addr, key })
    }
}
