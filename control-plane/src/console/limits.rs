//! The rate limits page: every limit with its figures, and a form to set one (schedules are set
//! with `tollgate admin rate-limits set`; the page shows how many a limit has).

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{ListRateLimitsRequest, RateLimit};

use super::pages::{Notice, field_error, layout};
use super::session::Session;
use super::{Console, Page, Refused, after_change, call, changing, listed, page};

/// What a rate limit may apply to.
const SCOPES: [&str; 5] = ["key", "team", "user", "model", "tag"];

/// The page, with `notice` about the last change and `status` as its HTTP status.
pub(super) async fn limits_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_rate_limits(call(session, ListRateLimitsRequest::default()))
        .await;
    let limits = listed(answer, &mut notice).rate_limits;
    let figure = |n: u64| {
        if n == 0 {
            "—".to_owned()
        } else {
            n.to_string()
        }
    };
    let body = html! {
        form.inline method="post" action="/limits" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="limit_scope" { "Scope" }
            select id="limit_scope" name="scope" {
                @for scope in SCOPES { option value=(scope) { (scope) } }
            }
            label for="limit_scope_id" { "Id" }
            input type="text" id="limit_scope_id" name="scope_id" placeholder="key, team or user id, a model or a tag";
            (field_error(&notice, "scope_id"))
            label for="rpm" { "Requests / min" }
            input type="text" id="rpm" name="rpm" inputmode="numeric" size="6";
            label for="tpm" { "Tokens / min" }
            input type="text" id="tpm" name="tpm" inputmode="numeric" size="8";
            label for="max_concurrent" { "At once" }
            input type="text" id="max_concurrent" name="max_concurrent" inputmode="numeric" size="4";
            (field_error(&notice, "figures"))
            button type="submit" { "Set limit" }
        }
        p.hint { "Empty or 0: unlimited. Counted across every edge." }
        table {
            thead { tr { th { "Scope" } th { "For" } th { "Requests / min" } th { "Tokens / min" } th { "At once" } th { "Model" } th { "Schedules" } } }
            tbody {
                @for limit in &limits {
                    tr data-limit=(limit.id) {
                        td { (limit.scope) }
                        td { (limit.scope_id) }
                        td.rpm { (figure(limit.rpm)) }
                        td { (figure(limit.tpm)) }
                        td { (figure(limit.max_concurrent)) }
                        td { (limit.model) }
                        td { (limit.schedules.len()) }
                    }
                }
            }
        }
    };
    page(status, layout("Rate limits", session, &notice, body))
}

#[derive(Deserialize)]
pub(super) struct NewLimit {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    scope_id: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
    #[serde(default)]
    max_concurrent: String,
}

pub(super) async fn set_limit(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewLimit>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let count = |text: &str| {
        let text = text.trim();
        if text.is_empty() {
            Some(0)
        } else {
            text.parse::<u64>().ok()
        }
    };
    let (Some(rpm), Some(tpm), Some(max_concurrent)) = (
        count(&form.rpm),
        count(&form.tpm),
        count(&form.max_concurrent),
    ) else {
        let notice = Notice {
            field: Some("figures"),
            message: "requests, tokens and concurrency are whole numbers (empty or 0: unlimited)"
                .to_owned(),
        };
        return Ok(limits_page(&console, &session, StatusCode::BAD_REQUEST, notice).await);
    };
    let limit = RateLimit {
        scope: form.scope,
        scope_id: form.scope_id.trim().to_owned(),
        rpm,
        tpm,
        max_concurrent,
        ..RateLimit::default()
    };
    let result = console.api.set_rate_limit(call(&session, limit)).await;
    Ok(after_change(
        &console,
        &session,
        result,
        Page::Limits,
        &[("scope", "scope_id"), ("", "figures")],
    )
    .await)
}
