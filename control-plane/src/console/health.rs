//! Deployment health: each edge's circuit breaker of each deployment it calls.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use tollgate_proto::admin::ListDeploymentHealthRequest;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::convert::from_timestamp;

use super::pages::{Notice, layout};
use super::{Console, Refused, call, listed, page, signed_in};

pub(super) async fn health(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let (_, session) = signed_in(&console, &headers)?;
    let mut notice = Notice::default();
    let answer = console
        .api
        .list_deployment_health(call(&session, ListDeploymentHealthRequest::default()))
        .await;
    let circuits = listed(answer, &mut notice).deployments;
    let body = html! {
        p.hint { "Edges report a circuit when it changes. A deployment no edge has called, or whose circuit never left closed, is not listed." }
        table {
            thead { tr { th { "Deployment" } th { "Edge" } th { "State" } th { "Failures" } th { "Retry at" } th { "Last error" } } }
            tbody {
                @for circuit in &circuits {
                    tr data-state=(circuit.state) {
                        td { code { (circuit.deployment_id) } }
                        td { (circuit.edge_id) }
                        td { (circuit.state) }
                        td { (circuit.failures) }
                        td {
                            (circuit.retry_at.as_ref().and_then(from_timestamp)
                                .map(|at| at.format("%H:%M:%S").to_string())
                                .unwrap_or_default())
                        }
                        td { (circuit.last_error) }
                    }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        layout("Deployment health", &session, &notice, body),
    ))
}
