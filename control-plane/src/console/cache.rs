//! The response cache page: which models' answers edges cache, for how long and shared by whom,
//! and a form to set a model's policy (the semantic tier is set with the CLI).

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CachePolicy, ListCachePoliciesRequest};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, number_input, text_input};
use super::session::Session;
use super::{Console, Page, Refused, after_change, call, changing, listed, page};

/// The page, with `notice` about the last change and `status` as its HTTP status.
pub(super) async fn cache_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_cache_policies(call(session, ListCachePoliciesRequest {}))
        .await;
    let policies = listed(answer, &mut notice).policies;
    let body = html! {
        form.inline method="post" action="/cache" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("cache_model", "model", "Model", "gpt-4o"))
            (field_error(&notice, "model"))
            (number_input("ttl_seconds", "ttl_seconds", "Seconds", 7))
            (field_error(&notice, "ttl_seconds"))
            label for="cache_scope" { "Shared by" }
            select id="cache_scope" name="scope" {
                @for scope in ["team", "key", "global"] { option value=(scope) { (scope) } }
            }
            button type="submit" { "Cache answers" }
        }
        table {
            thead { tr { th { "Model" } th { "Seconds" } th { "Shared by" } th { "Semantic tier" } th {} } }
            tbody {
                @for policy in &policies {
                    tr {
                        td { (policy.model) }
                        td { (policy.ttl_seconds) }
                        td { (policy.scope) }
                        td { (policy.semantic_embeddings_model) }
                        td { (delete_button(session, "cache", &policy.id, &policy.model)) }
                    }
                }
            }
        }
    };
    page(status, layout("Response cache", session, &notice, body))
}

#[derive(Deserialize)]
pub(super) struct NewPolicy {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    ttl_seconds: String,
    #[serde(default)]
    scope: String,
}

pub(super) async fn set_policy(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewPolicy>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let Ok(ttl_seconds) = form.ttl_seconds.trim().parse::<u32>() else {
        return Ok(Page::Cache
            .refused(
                &console,
                &session,
                "ttl_seconds",
                format!("{:?} is not a whole number of seconds", form.ttl_seconds),
            )
            .await);
    };
    let policy = CachePolicy {
        model: form.model.trim().to_owned(),
        ttl_seconds,
        scope: form.scope,
        ..CachePolicy::default()
    };
    let result = console.api.set_cache_policy(call(&session, policy)).await;
    Ok(after_change(
        &console,
        &session,
        result,
        Page::Cache,
        &[("ttl", "ttl_seconds"), ("", "model")],
    )
    .await)
}
