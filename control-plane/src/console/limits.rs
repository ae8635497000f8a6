//! The rate limits page: every limit with its figures and schedules, a form to set one and a form
//! to give a limit other figures during a weekly time window.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{LimitSchedule, ListRateLimitsRequest, RateLimit};

use super::delete::delete_button;
use super::forms::{Forms, table, window_inputs, words};
use super::pages::window_text;
use super::{Change, Drawing, Page, WindowForm, whole_number};

/// Why figures were refused.
const NOT_FIGURES: &str =
    "requests, tokens and concurrency are whole numbers (empty or 0: unlimited)";

/// What a rate limit may apply to.
const SCOPES: [&str; 5] = ["key", "team", "user", "model", "tag"];

/// The page, with the drawing's notice about the last change.
pub(super) async fn limits_page(drawing: &mut Drawing<'_>) -> Markup {
    let limits = drawing
        .list(
            AdminService::list_rate_limits,
            ListRateLimitsRequest::default(),
        )
        .await
        .rate_limits;
    let figure = |n: u64| {
        if n == 0 {
            "—".to_owned()
        } else {
            n.to_string()
        }
    };
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (form.inline("/limits", "Set limit", html! {
            (form.select("limit_scope", "scope", "Scope", None, words(SCOPES)))
            (form.text("limit_scope_id", "scope_id", "Id", "key, team or user id, a model or a tag"))
            (figure_inputs(form, ["rpm", "tpm", "max_concurrent"]))
            (form.error("figures"))
        }))
        p.hint { "Empty or 0: unlimited. Counted across every edge." }
        (table(&["Scope", "For", "Requests / min", "Tokens / min", "At once", "Model", "Schedules", ""], html! {
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
        }))
        h2 { "Schedules" }
        (form.inline("/limits/schedules", "Add schedule", html! {
            (form.select("schedule_limit", "limit_id", "Limit", None, limits.iter().map(|limit| {
                (&limit.id, format!("{} {}", limit.scope, limit.scope_id))
            })))
            (window_inputs("schedule"))
            (form.error("window"))
            (figure_inputs(form, ["schedule_rpm", "schedule_tpm", "schedule_concurrent"]))
            (form.error("schedule_figures"))
        }))
        p.hint { "While a window is open its figures replace the limit's; the first open window applies. Days empty: every day; the window wraps past midnight when it ends before it starts." }
    };
    drawing.layout("Rate limits", body)
}

/// The figures of a limit or of a schedule, as a form posts them (drawn by [`figure_inputs`]).
#[derive(Deserialize, Default)]
#[serde(default)]
struct FiguresForm {
    rpm: String,
    tpm: String,
    max_concurrent: String,
}

impl FiguresForm {
    /// Requests per minute, tokens per minute and concurrency; `None` when one is not a whole
    /// number.
    fn parse(&self) -> Option<(u64, u64, u64)> {
        Some((
            whole_number(&self.rpm)?,
            whole_number(&self.tpm)?,
            whole_number(&self.max_concurrent)?,
        ))
    }
}

/// The inputs of a [`FiguresForm`], with `ids` (requests, tokens, at once).
fn figure_inputs(form: Forms, [rpm, tpm, at_once]: [&str; 3]) -> Markup {
    html! {
        (form.number(rpm, "rpm", "Requests / min", 6))
        (form.number(tpm, "tpm", "Tokens / min", 8))
        (form.number(at_once, "max_concurrent", "At once", 4))
    }
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
    #[serde(flatten)]
    figures: FiguresForm,
}

pub(super) async fn set_limit(Change(editor, form): Change<NewLimit>) -> Response {
    let Some((rpm, tpm, max_concurrent)) = form.figures.parse() else {
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
    #[serde(flatten)]
    figures: FiguresForm,
}

/// Adds a schedule to a limit: the limit is set again, whole, with one schedule more.
pub(super) async fn add_schedule(Change(editor, form): Change<NewSchedule>) -> Response {
    let Some((rpm, tpm, max_concurrent)) = form.figures.parse() else {
        return editor
            .refused(Page::Limits, "schedule_figures", NOT_FIGURES)
            .await;
    };
    let limit = editor
        .list_or_empty(
            AdminService::list_rate_limits,
            ListRateLimitsRequest::default(),
        )
        .await
        .rate_limits
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
