//! Provider credentials under envelope encryption with AWS KMS (a KMS-protocol test server
//! through the real aws-sdk-kms client): rotating the key encryption key while requests flow
//! fails none of them, the request path never calls KMS, and afterwards every credential
//! opens on an edge that holds only the new key.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use common::{Process, eventually_in, free_port};
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::admin::{
    CreateKeyRequest, Deployment, GetSnapshotRequest, PutCredentialRequest,
};
use tollgate_test_support::kms_upstream::FakeKms;
use tollgate_test_support::openai_upstream::FakeOpenAi;
use tonic::transport::Channel;

const TOKEN: &str = "kms-rotation-test-admin-token";
const MODELS: [&str; 3] = ["gpt-a", "gpt-b", "gpt-c"];

fn authorized<T>(message: T) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    Ok(request)
}

/// The KEK each credential's data key is wrapped by, from a snapshot.
async fn wrapped_by(admin: u16) -> Result<Vec<String>> {
    let mut client = AdminServiceClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{admin}"))?
            .connect()
            .await?,
    );
    let snapshot = client
        .get_snapshot(authorized(GetSnapshotRequest {})?)
        .await?
        .into_inner();
    let state: tollgate_policy::PolicyState = serde_json::from_slice(&snapshot.state_json)?;
    Ok(state
        .credentials
        .values()
        .map(|c| c.envelope.as_ref().map_or("none".into(), |e| e.kek.clone()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_encryption_key_while_requests_flow_fails_none() -> Result<()> {
    let kms = FakeKms::start().await?;
    let (old, new) = (kms.create_key(), kms.create_key());
    let upstream = FakeOpenAi::start().await?;
    let nats = tollgate_test_support::nats_url().await?;
    let prefix = tollgate_test_support::unique_name("kms");
    let dir = tempfile::tempdir()?;
    // The standard AWS settings, pointed at the test server; nothing read from this machine.
    let aws = |kek: &str, previous: Option<&str>| {
        let mut env = vec![
            ("NATS_URL", nats.clone()),
            ("TOLLGATE_BUS_PREFIX", prefix.clone()),
            ("AWS_ENDPOINT_URL_KMS", kms.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "AKIDTEST".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test-secret".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/nonexistent".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_owned()),
            ("TOLLGATE_KMS_KEY_ID", kek.to_owned()),
        ];
        if let Some(previous) = previous {
            env.push(("TOLLGATE_KMS_KEY_ID_PREVIOUS", previous.to_owned()));
        }
        env
    };
    let admin = free_port()?;
    let control_plane_env = |kek: &str, previous: Option<&str>| {
        let mut env = aws(kek, previous);
        env.extend([
            ("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}")),
            ("TOLLGATE_ADMIN_TOKEN", TOKEN.to_owned()),
            (
                "DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("policy.db").display()
                ),
            ),
        ]);
        env
    };
    let control_plane = Process::start(
        "control-plane",
        "control-plane",
        dir.path(),
        &control_plane_env(&old, None),
    )?;
    let connect = || async {
        Ok::<_, anyhow::Error>(AdminServiceClient::new(
            Channel::from_shared(format!("http://127.0.0.1:{admin}"))?
                .connect()
                .await?,
        ))
    };
    eventually_in(dir.path(), "the control plane answering", || async {
        connect().await.is_ok()
    })
    .await?;
    let mut client = connect().await?;
    for model in MODELS {
        let credential = client
            .put_credential(authorized(PutCredentialRequest {
                name: format!("{model}-key"),
                provider: "openai".into(),
                secret_fields: [("api_key".to_owned(), format!("sk-{model}"))].into(),
            })?)
            .await?
            .into_inner();
        client
            .upsert_deployment(authorized(Deployment {
                model_name: model.into(),
                provider: "openai".into(),
                api_base: upstream.base_url(),
                credential_id: credential.id,
                ..Default::default()
            })?)
            .await?;
    }
    let secret = client
        .create_key(authorized(CreateKeyRequest::default())?)
        .await?
        .into_inner()
        .secret;
    assert_eq!(wrapped_by(admin).await?, vec![format!("kms:{old}"); 3]);

    let http = reqwest::Client::new();
    let chat = |port: u16, model: &'static str| {
        http.post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let serves_all = |port: u16| async move {
        for model in MODELS {
            if !chat(port, model).await.is_ok_and(|r| r.status() == 200) {
                return false;
            }
        }
        true
    };
    // An edge holding `kek` alone, and its port, once it serves every model.
    let edge_serving = async |name: &str, kek: &str, what: &str| -> Result<(u16, Process)> {
        let port = free_port()?;
        let mut env = aws(kek, None);
        env.push(("TOLLGATE_EDGE_ADDR", format!("127.0.0.1:{port}")));
        let edge = Process::start("edge", name, dir.path(), &env)?;
        eventually_in(dir.path(), what, || serves_all(port)).await?;
        Ok((port, edge))
    };
    let (edge_port, _edge) = edge_serving("edge", &old, "the edge serving every model").await?;

    // Requests flow from here until the rotation is over.
    let (ok, failed, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let decrypts_before = kms.decrypts();
    let traffic = {
        let (ok, failed, stop, http, secret) = (
            ok.clone(),
            failed.clone(),
            stop.clone(),
            http.clone(),
            secret.clone(),
        );
        tokio::spawn(async move {
            for model in MODELS.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let answered = http
                    .post(format!("http://127.0.0.1:{edge_port}/v1/chat/completions"))
                    .bearer_auth(&secret)
                    .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await;
                let counter = match answered {
                    Ok(r) if r.status() == 200 => &ok,
                    _ => &failed,
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // The operator's rotation: the control plane restarted with the new key, the old one as
    // the previous; it re-wraps every data key.
    drop(control_plane);
    let _rotated = Process::start(
        "control-plane",
        "control-plane-rotating",
        dir.path(),
        &control_plane_env(&new, Some(&old)),
    )?;
    eventually_in(dir.path(), "every data key re-wrapped", || async {
        wrapped_by(admin)
            .await
            .is_ok_and(|keks| keks == vec![format!("kms:{new}"); 3])
    })
    .await?;
    let during = ok.load(Ordering::SeqCst);
    eventually_in(dir.path(), "more requests after the rotation", || async {
        ok.load(Ordering::SeqCst) > during + 30
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    traffic.await?;
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    // Only the control plane's re-wrapping asked KMS to decrypt: never a request.
    assert_eq!(kms.decrypts() - decrypts_before, MODELS.len());

    // The old key retired: an edge holding only the new one opens every credential.
    kms.disable(&old);
    edge_serving("late-edge", &new, "the new edge serving every model")
        .await
        .context("every credential opens with the new key")?;
    Ok(())
}
