//! The budgets page: every budget with its live status from the usage API, and a form to set
//! one (through `SetBudget`, like any other change).

use axum::response::Response;
use maud::Markup;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{Budget, ListBudgetsRequest};
use tollgate_proto::usage::GetBudgetStatusRequest;

use super::pages::{self, BudgetRow};
use super::session::Session;
use super::{Change, Console, Drawing, Page, call, list_of};

/// The page, with the drawing's notice about the last change.
pub(super) async fn budgets_page(drawing: &mut Drawing<'_>) -> Markup {
    let budgets = drawing
        .list(AdminService::list_budgets, ListBudgetsRequest::default())
        .await
        .budgets;
    let mut rows = Vec::with_capacity(budgets.len());
    for budget in budgets {
        let status = live_status(drawing.console, drawing.session, &budget).await;
        rows.push(BudgetRow { budget, status });
    }
    let teams = drawing.teams().await;
    pages::budgets(drawing.session, &rows, &teams, &drawing.notice)
}

/// The budget's spend in its current period, or why it cannot be shown.
async fn live_status(
    console: &Console,
    session: &Session,
    budget: &Budget,
) -> Result<(f64, bool), String> {
    let Some(mut usage) = console.usage.clone() else {
        return Err("no usage API configured (TOLLGATE_USAGE_URL)".to_owned());
    };
    let request = GetBudgetStatusRequest {
        scope: budget.scope.clone(),
        scope_id: budget.scope_id.clone(),
    };
    let answer = usage
        .get_budget_status(call(session, request))
        .await
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    answer
        .budgets
        .iter()
        .find(|b| b.budget_id == budget.id)
        .map(|b| (b.spent_usd, b.exceeded))
        .ok_or_else(|| "no spend recorded yet".to_owned())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewBudget {
    scope: String,
    scope_id: String,
    amount_usd: String,
    period: String,
    timezone: String,
    thresholds: String,
}

pub(super) async fn set_budget(Change(editor, form): Change<NewBudget>) -> Response {
    let Ok(amount_usd) = form.amount_usd.trim().parse::<f64>() else {
        let message = format!("{:?} is not an amount in USD", form.amount_usd);
        return editor.refused(Page::Budgets, "amount_usd", message).await;
    };
    let thresholds: Result<Vec<f64>, _> = list_of(&form.thresholds)
        .iter()
        .map(|t| t.trim_end_matches('%').trim().parse::<f64>())
        .collect();
    let Ok(thresholds) = thresholds else {
        let message = format!(
            "{:?} is not a list of percentages like 50, 80, 100",
            form.thresholds
        );
        return editor.refused(Page::Budgets, "thresholds", message).await;
    };
    let budget = Budget {
        scope: form.scope,
        scope_id: form.scope_id.trim().to_owned(),
        amount_usd,
        period: form.period,
        timezone: form.timezone.trim().to_owned(),
        thresholds,
        ..Budget::default()
    };
    let result = editor.api().set_budget(editor.call(budget)).await;
    editor
        .answer(
            result,
            Page::Budgets,
            &[
                ("threshold", "thresholds"),
                ("amount", "amount_usd"),
                ("period", "period"),
                ("zone", "timezone"),
                ("", "scope_id"),
            ],
        )
        .await
}
