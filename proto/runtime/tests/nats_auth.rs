//! The bus on a NATS server with authorization on, as `deploy/README.md` sets it up: each role
//! connects with its own credentials (`NATS_USER` / `NATS_PASSWORD` here), a client without
//! them or with a wrong password is refused, and an edge's credentials cannot publish to the
//! policy subject — a forged policy event never reaches the POLICY stream.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use tollgate_runtime::bus::{Bus, BusLimits, JetStreamBus, NatsAuth, POLICY, USAGE};
use tollgate_test_support::authorizing_nats::{AuthorizingNats, CONTROL_PLANE_USER, EDGE_USER};

const PREFIX: &str = "authz";

fn user((name, password): (&str, &str)) -> NatsAuth {
    NatsAuth {
        user: Some((name.to_owned(), password.into())),
        ..NatsAuth::default()
    }
}

async fn connect(server: &AuthorizingNats, auth: &NatsAuth) -> Result<JetStreamBus, String> {
    JetStreamBus::connect_as(&server.url, PREFIX, BusLimits::default(), auth)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn each_role_connects_with_its_credentials_and_an_edge_cannot_write_policy() -> Result<()> {
    let server = AuthorizingNats::start(PREFIX).await?;

    // Without credentials, or with a wrong password, there is no bus.
    assert!(connect(&server, &NatsAuth::default()).await.is_err());
    assert!(
        connect(&server, &user((EDGE_USER.0, "guess")))
            .await
            .is_err()
    );

    let control_plane = connect(&server, &user(CONTROL_PLANE_USER))
        .await
        .map_err(anyhow::Error::msg)?;
    control_plane
        .publish(POLICY, "event-1", Bytes::from_static(b"{\"sequence\":1}"))
        .await?;

    let edge = connect(&server, &user(EDGE_USER))
        .await
        .map_err(anyhow::Error::msg)?;
    // An edge reads policy and writes usage…
    let mut policy = edge.subscribe(POLICY, 0).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), policy.next())
        .await
        .context("no policy event within 5 s")?
        .context("the policy subscription ended")??;
    assert_eq!(first.payload.as_ref(), b"{\"sequence\":1}");
    edge.publish(USAGE, "usage-1", Bytes::from_static(b"{}"))
        .await?;
    // …but cannot write policy: the forged event is refused and the stream holds only the
    // control plane's.
    let forged = edge
        .publish(POLICY, "forged-1", Bytes::from_static(b"{\"forged\":true}"))
        .await;
    assert!(forged.is_err(), "an edge published to the policy subject");
    let last = control_plane
        .last(POLICY)
        .await?
        .context("the policy stream is empty")?;
    assert_eq!(last.payload.as_ref(), b"{\"sequence\":1}");
    Ok(())
}

#[test]
fn settings_name_what_is_missing_and_refuse_two_ways_at_once() {
    let settings = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let half = NatsAuth::from_settings(settings(&[("NATS_USER", "edge")]));
    assert_eq!(
        half.err().as_deref(),
        Some("NATS_PASSWORD is required beside NATS_USER")
    );
    let two = NatsAuth::from_settings(settings(&[("NATS_TOKEN", "t"), ("NATS_CREDS", "/x")]));
    assert!(two.is_err());
    let auth = NatsAuth::from_settings(settings(&[
        ("NATS_USER", "edge"),
        ("NATS_PASSWORD", "s3cret"),
    ]));
    let shown = format!("{:?}", auth.expect("valid settings"));
    assert!(!shown.contains("s3cret"), "{shown}");
}
