//! Deleting a listed thing: one route, `POST /delete/{kind}/{id}`, that calls the admin API's
//! delete for `kind` and answers with the page it was listed on.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{DeletePriceRequest, DeleteRequest};

use super::forms::csrf_input;
use super::session::Session;
use super::{Change, NoFields, Page};

/// A row's delete button: a form of its own, asking the browser to confirm first.
pub fn delete_button(session: &Session, kind: &str, id: &str, what: &str) -> Markup {
    html! {
        form.delete method="post" action={ "/delete/" (kind) "/" (id) }
            data-confirm={ "Delete " (what) "?" } {
            (csrf_input(session))
            button type="submit" aria-label={ "Delete " (what) } { "Delete" }
        }
    }
}

pub(super) async fn delete(
    Path((kind, id)): Path<(String, String)>,
    Change(editor, _): Change<NoFields>,
) -> Response {
    let api = editor.api();
    let by_id = || editor.call(DeleteRequest { id: id.clone() });
    let (page, result) = match kind.as_str() {
        "teams" => (Page::Teams, api.delete_team(by_id()).await),
        "users" => (Page::Users, api.delete_user(by_id()).await),
        "credentials" => (Page::Providers, api.delete_credential(by_id()).await),
        "deployments" => (Page::Providers, api.delete_deployment(by_id()).await),
        "budgets" => (Page::Budgets, api.delete_budget(by_id()).await),
        "limits" => (Page::Limits, api.delete_rate_limit(by_id()).await),
        "groups" => (Page::Groups, api.delete_access_group(by_id()).await),
        "cache" => (Page::Cache, api.delete_cache_policy(by_id()).await),
        "guardrails" => (Page::Guardrails, api.delete_guardrail(by_id()).await),
        "routing" => (Page::Routing, api.delete_routing_rule(by_id()).await),
        "traffic" => (Page::Routing, api.delete_traffic_rule(by_id()).await),
        "prices" => {
            let request = editor.call(DeletePriceRequest { model: id.clone() });
            (Page::Prices, api.delete_price(request).await)
        }
        _ => return (StatusCode::NOT_FOUND, "Nothing of that kind.").into_response(),
    };
    // Refusals (a team still in use, a viewer's session) are said at the top of the page.
    editor.answer(result, page, &[]).await
}
