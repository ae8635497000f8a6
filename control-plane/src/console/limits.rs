//! The rate limits page: every limit with its figures and schedules, a form to set one and a form
//! to give a limit other figures during a weekly time window.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{LimitSchedule, ListRateLimitsRequest, RateLimit};

use super::delete::delete_button;
use super::pages::{
    Notice, field_error, layout, number_input, select_input, text_input, window_inputs,
    window_text, words,
};
use super::session::Session;
use super::{Change, Console, Page, WindowForm, call, listed, whole_number};

/// Why figures were refused.
const NOT_FIGURES: &str =
    "requests, tokens and concurrency are whole numbers (empty or 0: unlimited)";

/// What a rate limit may apply to.
const SCOPES: [&str; 5] = ["key", "team", "user", "model", "tag"];

/// The page, with `notice` about the last change.
pub(super) async fn limits_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_rate_limits(call(session, ListRateLimitsRequest::default()))
        .await;
    let limits = listed(answer, notice).rate_limits;
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
            (select_input("limit_scope", "scope", "Scope", None, words(SCOPES)))
            (text_input("limit_scope_id", "scope_id", "Id", "key, team or user id, a model or a tag"))
            (field_error(notice, "scope_id"))
            (number_input("rpm", "rpm", "Requests / min", 6))
            (number_input("tpm", "tpm", "Tokens / min", 8))
            (number_input("max_concurrent", "max_concurrent", "At once", 4))
            (field_error(notice, "figures"))
            button type="submit" { "Set limit" }
        }
        p.hint { "Empty or 0: unlimited. Counted across every edge." }
        table {
            thead { tr { th { "Scope" } th { "For" } th { "Requests / min" } th { "Tokens / min" } th { "At once" } th { "Model" } th { "Schedules" } th {} } }
            tbody {
                @for limit in &limits {
                    tr data-limit=(limit.id) {
                        td { (limit.scope) }
                        td { (limit.scope_id) }
                        td.rpm { (figure(limit.rpm)) }
                        td { (figure(limit.tpm)) }
                        td { (figure(limit.max_concurrent)) }
                        td { (limit.model) }
                        td.schedules {
                            @for schedule in &limit.schedules {
                                div { (describe_schedule(schedule, &figure)) }
                            }
                        }
                        td { (delete_button(session, "limits", &limit.id, &limit.scope_id)) }
                    }
                }
            }
        }
        h2 { "Schedules" }
        form.inline method="post" action="/limits/schedules" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="schedule_limit" { "Limit" }
            select id="schedule_limit" name="limit_id" {
                @for limit in &limits {
                    option value=(limit.id) { (limit.scope) " " (limit.scope_id) }
                }
            }
            (field_error(notice, "limit_id"))
            (window_inputs("schedule"))
            (field_error(notice, "window"))
            (number_input("schedule_rpm", "rpm", "Requests / min", 6))
            (number_input("schedule_tpm", "tpm", "Tokens / min", 8))
            (number_input("schedule_concurrent", "max_concurrent", "At once", 4))
            (field_error(notice, "schedule_figures"))
            button type="submit" { "Add schedule" }
        }
        p.hint { "While a window is open its figures replace the limit's; the first open window applies. Days empty: every day; the window wraps past midnight when it ends before it starts." }
    };
    layout("Rate limits", session, notice, body)
}

/// Requests per minute, tokens per minute and concurrency from a form; `None` when one is not
/// a whole number.
fn figures(rpm: &str, tpm: &str, max_concurrent: &str) -> Option<(u64, u64, u64)> {
    Some((
        whole_number(rpm)?,
        whole_number(tpm)?,
        whole_number(max_concurrent)?,
    ))
}

/// A schedule in a line: its window and its figures.
fn describe_schedule(schedule: &LimitSchedule, figure: &dyn Fn(u64) -> String) -> String {
    let days = if schedule.weekdays.is_empty() {
        "every day".to_owned()
    } else {
        schedule.weekdays.join(", ")
    };
    format!(
        "{}, {days}: {} rpm, {} tpm, {} at once",
        window_text(&schedule.time_start, &schedule.time_end, &schedule.timezone),
        figure(schedule.rpm),
        figure(schedule.tpm),
        figure(schedule.max_concurrent)
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewLimit {
    scope: String,
    scope_id: String,
    rpm: String,
    tpm: String,
    max_concurrent: String,
}

pub(super) async fn set_limit(Change(editor, form): Change<NewLimit>) -> Response {
    let Some((rpm, tpm, max_concurrent)) = figures(&form.rpm, &form.tpm, &form.max_concurrent)
    else {
        return editor.refused(Page::Limits, "figures", NOT_FIGURES).await;
    };
    let limit = RateLimit {
        scope: form.scope,
        scope_id: form.scope_id.trim().to_owned(),
        rpm,
        tpm,
        max_concurrent,
        ..RateLimit::default()
    };
    let result = editor.api().set_rate_limit(editor.call(limit)).await;
    editor
        .answer(
            result,
            Page::Limits,
            &[("scope", "scope_id"), ("", "figures")],
        )
        .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewSchedule {
    limit_id: String,
    #[serde(flatten)]
    window: WindowForm,
    rpm: String,
    tpm: String,
    max_concurrent: String,
}

/// Adds a schedule to a limit: the limit is set again, whole, with one schedule more.
pub(super) async fn add_schedule(Change(editor, form): Change<NewSchedule>) -> Response {
    let Some((rpm, tpm, max_concurrent)) = figures(&form.rpm, &form.tpm, &form.max_concurrent)
    else {
        return editor
            .refused(Page::Limits, "schedule_figures", NOT_FIGURES)
            .await;
    };
    let limit = editor
        .api()
        .list_rate_limits(editor.call(ListRateLimitsRequest::default()))
        .await
        .map(|listed| listed.into_inner().rate_limits)
        .unwrap_or_default()
        .into_iter()
        .find(|limit| limit.id == form.limit_id);
    let Some(mut limit) = limit else {
        let message = format!("no rate limit {:?}: set the limit first", form.limit_id);
        return editor.refused(Page::Limits, "limit_id", message).await;
    };
    let (time_start, time_end, timezone, weekdays) = form.window.parts();
    limit.schedules.push(LimitSchedule {
        time_start,
        time_end,
        timezone,
        weekdays,
        rpm,
        tpm,
        max_concurrent,
    });
    let result = editor.api().set_rate_limit(editor.call(limit)).await;
    editor.answer(result, Page::Limits, &[("", "window")]).await
}
