//! Deployment health: each edge's circuit breaker of each deployment it calls.

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use tollgate_proto::admin::ListDeploymentHealthRequest;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::convert::from_timestamp;

use super::forms::{Notice, table};
use super::{Drawing, SignedIn, page};

pub(super) async fn health(signed_in: SignedIn) -> Response {
    let (console, session) = (signed_in.console, signed_in.session);
    let mut drawing = Drawing::new(&console, &session, Notice::default());
    let circuits = drawing
        .list(
            AdminService::list_deployment_health,
            ListDeploymentHealthRequest::default(),
        )
        .await
        .deployments;
    let body = html! {
        p.hint { "Edges report a circuit when it changes. A deployment no edge has called, or whose circuit never left closed, is not listed." }
        (table(&["Deployment", "Edge", "State", "Failures", "Retry at", "Last error"], html! {
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
        }))
    };
    page(StatusCode::OK, drawing.layout("Deployment health", body))
}
