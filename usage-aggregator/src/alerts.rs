//! Delivering budget alerts from the ledger's outbox: a generic webhook (JSON, signed with
//! HMAC-SHA256), a Slack incoming webhook, or the bus's ALERTS topic. Each runs apart from the
//! ledger, with retries and exponential back-off; a failing sink never blocks usage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;
use tollgate_policy::redact::Secret;
use tollgate_runtime::bus::{ALERTS, Bus};
use tollgate_runtime::egress::Egress;

use crate::ledger::{Ledger, PendingAlert};

/// Where alerts go. Webhook URLs can carry tokens (Slack's do), so they are secrets too.
#[derive(Clone, Debug, Default)]
pub struct AlertSinks {
    /// A URL that receives the alert JSON, signed in `x-tollgate-signature: sha256=<hex>`.
    pub webhook_url: Option<Secret>,
    /// The HMAC key of the webhook signature.
    pub webhook_secret: Option<Secret>,
    /// A Slack incoming-webhook URL.
    pub slack_url: Option<Secret>,
    /// Also publish alerts to the bus's ALERTS topic.
    pub bus: bool,
    /// Where webhook calls may connect: never a link-local or cloud metadata address, judged
    /// again after each DNS resolution.
    pub egress: Egress,
}

impl AlertSinks {
    /// The names of the configured sinks, as stored in the outbox.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.webhook_url.is_some() {
            names.push("webhook".to_owned());
        }
        if self.slack_url.is_some() {
            names.push("slack".to_owned());
        }
        if self.bus {
            names.push("nats".to_owned());
        }
        names
    }
}

const POLL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;

/// Delivers due alerts until `shutdown` flips to true.
pub async fn run(
    ledger: Ledger,
    bus: Arc<dyn Bus>,
    sinks: AlertSinks,
    mut shutdown: watch::Receiver<bool>,
) {
    // A redirect would carry the signed alert elsewhere: the sink's answer is final.
    let http = match sinks.egress.http_client(CONNECT_TIMEOUT) {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client for alerts; alerts stay in the outbox");
            return;
        }
    };
    while !*shutdown.borrow() {
        let now = chrono::Utc::now().timestamp_millis();
        match ledger.due_alerts(now).await {
            Ok(alerts) => {
                for alert in alerts {
                    let delivered = match deliver(&http, bus.as_ref(), &sinks, &alert).await {
                        Ok(()) => true,
                        Err(error) => {
                            tracing::warn!(sink = %alert.sink, budget = %alert.budget_id, %error, "alert delivery failed; will retry");
                            false
                        }
                    };
                    let backoff = (1000i64 << alert.attempts.clamp(0, 20)).min(MAX_BACKOFF_MS);
                    if let Err(e) = ledger
                        .alert_attempted(&alert, delivered, now + backoff)
                        .await
                    {
                        tracing::warn!(error = %e, "could not record an alert delivery");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the alert outbox failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn deliver(
    http: &reqwest::Client,
    bus: &dyn Bus,
    sinks: &AlertSinks,
    alert: &PendingAlert,
) -> Result<(), String> {
    // One id per alert and sink, so a receiver can drop the rare repeat after a crash.
    let alert_id = format!(
        "{}:{}:{}",
        alert.budget_id, alert.period_start_ms, alert.threshold_pct
    );
    match alert.sink.as_str() {
        "webhook" => {
            let url = sinks
                .webhook_url
                .as_ref()
                .ok_or("no webhook URL configured")?;
            let mut request = http
                .post(url.expose())
                .timeout(TIMEOUT)
                .header("content-type", "application/json")
                .header("x-tollgate-alert-id", &alert_id);
            if let Some(secret) = &sinks.webhook_secret {
                request = request.header(
                    "x-tollgate-signature",
                    format!("sha256={}", sign(secret.expose(), alert.payload.as_bytes())),
                );
            }
            check(request.body(alert.payload.clone()).send().await)
        }
        "slack" => {
            let url = sinks.slack_url.as_ref().ok_or("no Slack URL configured")?;
            let value: serde_json::Value = serde_json::from_str(&alert.payload).unwrap_or_default();
            let text = format!(
                ":warning: Budget `{}` ({} {}) crossed {}%: ${:.2} of ${:.2} spent this {} period.",
                value["budget_id"].as_str().unwrap_or_default(),
                value["scope"].as_str().unwrap_or_default(),
                value["scope_id"].as_str().unwrap_or_default(),
                value["threshold_pct"],
                value["spent_usd"].as_f64().unwrap_or_default(),
                value["amount_usd"].as_f64().unwrap_or_default(),
                value["period"].as_str().unwrap_or_default(),
            );
            check(
                http.post(url.expose())
                    .timeout(TIMEOUT)
                    .json(&json!({"text": text}))
                    .send()
                    .await,
            )
        }
        "nats" => bus
            .publish(ALERTS, &alert_id, Bytes::from(alert.payload.clone()))
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown sink {other}")),
    }
}

fn check(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    // Without the URL (a Slack URL holds a token), with the causes (why a call was refused).
    let response = result.map_err(|e| {
        let e = e.without_url();
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            why = format!("{why}: {cause}");
            source = cause.source();
        }
        why
    })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

/// Hex HMAC-SHA256 of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tollgate_runtime::bus::MemoryBus;
    use tollgate_runtime::egress::Lookup;

    use super::*;

    /// A server counting its hits: `/hook` answers 200, `/moved` a 302 to `/hook`.
    async fn counting_server() -> (u16, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new()
            .route(
                "/moved",
                axum::routing::post(|| async {
                    (axum::http::StatusCode::FOUND, [("location", "/hook")])
                }),
            )
            .fallback(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, hits)
    }

    fn alert() -> PendingAlert {
        PendingAlert {
            budget_id: "b".into(),
            period_start_ms: 0,
            threshold_pct: 50.0,
            sink: "webhook".into(),
            payload: "{}".into(),
            attempts: 0,
        }
    }

    /// A webhook host that resolves to the metadata address only when the alert is sent (DNS
    /// rebinding) is refused before connecting; a redirect is not followed; a host resolving
    /// to the machine is called.
    #[tokio::test]
    async fn webhook_calls_are_judged_after_resolution_and_never_redirected() {
        let (port, hits) = counting_server().await;
        let lookup: Lookup = Arc::new(|host: String| {
            Box::pin(async move {
                Ok(match host.as_str() {
                    "rebound.test" => vec![IpAddr::from([169, 254, 169, 254])],
                    _ => vec![IpAddr::from([127, 0, 0, 1])],
                })
            })
        });
        let sinks = |url: String| AlertSinks {
            webhook_url: Some(url.into()),
            egress: Egress::default().with_lookup(lookup.clone()),
            ..Default::default()
        };
        let bus = MemoryBus::new();
        let send = |url: String| {
            let sinks = sinks(url);
            let bus = bus.clone();
            async move {
                let http = sinks.egress.http_client(CONNECT_TIMEOUT).expect("a client");
                deliver(&http, &bus, &sinks, &alert()).await
            }
        };
        let refused = send(format!("http://rebound.test:{port}/hook")).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|why| why.contains("link-local")),
            "{refused:?}"
        );
        let moved = send(format!("http://served.test:{port}/moved")).await;
        assert_eq!(moved, Err("HTTP 302 Found".to_owned()));
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached /hook");
        let served = send(format!("http://served.test:{port}/hook")).await;
        assert_eq!(served, Ok(()));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// RFC 4231, test case 2: what a webhook receiver's own HMAC-SHA256 computes.
    #[test]
    fn webhook_signatures_match_the_rfc_4231_vector() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
