//! The console's pages, rendered on the server (maud): plain HTML forms that post back with
//! the session's CSRF token, and one small script (`assets/console.js`) for the live tail and
//! copying a new key.

use maud::{DOCTYPE, Markup, html};
use tollgate_policy::model::AdminRole;
use tollgate_proto::admin::{Budget, Key, Team};

use super::delete::delete_button;
use super::forms::{Forms, Notice, csrf_input, table, team_choices, words};
use super::session::Session;

/// The name of team `id` among `teams`, or the id when it is not one of them.
pub fn team_name(teams: &[Team], id: &str) -> String {
    teams
        .iter()
        .find(|t| t.id == id)
        .map_or_else(|| id.to_owned(), |t| t.name.clone())
}

/// The sections of the console, each as (path, name in the menu).
const POLICY_SECTIONS: [(&str, &str); 13] = [
    ("/teams", "Teams"),
    ("/users", "Users"),
    ("/keys", "Keys"),
    ("/providers", "Providers"),
    ("/prices", "Prices"),
    ("/budgets", "Budgets"),
    ("/limits", "Limits"),
    ("/groups", "Access"),
    ("/cache", "Cache"),
    ("/guardrails", "Guardrails"),
    ("/routing", "Routing"),
    ("/tail", "Live requests"),
    ("/health", "Health"),
];
const SPEND: (&str, &str) = ("/spend", "Spend");
const AUDIT: (&str, &str) = ("/audit", "Audit");

/// The sections a `role` may open: policy for admins and viewers, spend for admins and finance
/// (the admin API's own rules; a page it would refuse is not offered).
pub fn sections(role: AdminRole) -> Vec<(&'static str, &'static str)> {
    match role {
        AdminRole::Admin => POLICY_SECTIONS.into_iter().chain([SPEND, AUDIT]).collect(),
        AdminRole::Viewer => POLICY_SECTIONS.into_iter().chain([AUDIT]).collect(),
        AdminRole::Finance => vec![SPEND],
        // Service tokens cannot sign in; were one to, it would be offered nothing.
        AdminRole::Edge | AdminRole::Aggregator => vec![],
    }
}

/// Where `role` lands after signing in.
pub fn home(role: AdminRole) -> &'static str {
    sections(role).first().map_or("/sign-in", |(path, _)| *path)
}

/// Every page's `<head>`.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tollgate" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/console.js" defer {}
        }
    }
}

/// The frame of every signed-in page.
pub fn layout(title: &str, session: &Session, notice: &Notice, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#content" { "Skip to the page" }
                header {
                    strong { "Tollgate" }
                    nav aria-label="Sections" {
                        @for (path, name) in sections(session.role) {
                            a href=(path) { (name) }
                        }
                    }
                    span.who { (session.actor) " (" (session.role) ")" }
                    form method="post" action="/sign-out" {
                        (csrf_input(session))
                        button type="submit" { "Sign out" }
                    }
                }
                main id="content" tabindex="-1" {
                    h1 { (title) }
                    @if let Some(message) = notice.general() {
                        p.error role="alert" id="page-error" { (message) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A weekly window in a line, `22:00–06:00 Europe/Paris` (UTC when it names no zone).
pub fn window_text(start: &str, end: &str, zone: &str) -> String {
    let zone = if zone.is_empty() { "UTC" } else { zone };
    format!("{start}–{end} {zone}")
}

/// The sign-in page.
pub fn sign_in(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main.narrow {
                    h1 { "Tollgate console" }
                    form method="post" action="/sign-in" {
                        label for="token" { "Admin token" }
                        input type="password" id="token" name="token" autocomplete="off" required autofocus;
                        @if let Some(error) = error {
                            span.error role="alert" id="token-error" { (error) }
                        }
                        button type="submit" { "Sign in" }
                    }
                    p.hint { "An admin, viewer or finance token (tga-…) from CreateAdminToken or TOLLGATE_ADMIN_TOKEN." }
                }
            }
        }
    }
}

/// The teams page.
pub fn teams(session: &Session, teams: &[Team], notice: &Notice) -> Markup {
    let form = Forms::new(session, notice);
    let body = html! {
        (form.inline("/teams", "Create team", form.text("name", "name", "New team", "research")))
        (table(&["Name", "Id", ""], html! {
            @for team in teams {
                tr { td { (team.name) } td { code { (team.id) } } td { (delete_button(session, "teams", &team.id, &team.name)) } }
            }
        }))
    };
    layout("Teams", session, notice, body)
}

/// The keys page; `secret` is a new key's secret, shown this once.
pub fn keys(
    session: &Session,
    keys: &[Key],
    teams: &[Team],
    secret: Option<&str>,
    notice: &Notice,
) -> Markup {
    let form = Forms::new(session, notice);
    let body = html! {
        (form.error("grace_seconds"))
        @if let Some(secret) = secret {
            section.secret aria-label="New key" {
                p { "The new key's secret. It is shown this once: copy it now." }
                code id="new-secret" { (secret) }
                button type="button" data-copy="new-secret" { "Copy" }
            }
        }
        (form.inline("/keys", "Create key", html! {
            (form.text("alias", "alias", "New key", "alias"))
            (form.select("team_id", "team_id", "Team", Some("(none)"), team_choices(teams)))
        }))
        (table(&["Alias", "Prefix", "Team", "State", ""], html! {
            @for key in keys {
                tr data-key=(key.id) {
                    td { (key.alias) }
                    td { code { (key.prefix) "…" } }
                    td { (team_name(teams, &key.team_id)) }
                    td {
                        @if key.revoked { "revoked" }
                        @else if key.blocked { "blocked" }
                        @else { "active" }
                    }
                    td.actions {
                        @if !key.revoked {
                            form method="post" action={ "/keys/" (key.id) "/rotate" } {
                                (csrf_input(session))
                                label { "grace s "
                                    input type="text" name="grace_seconds" value="3600" size="5"
                                        aria-label={ "Seconds the old secret of " (key.alias) " keeps working" };
                                }
                                button type="submit" aria-label={ "Rotate " (key.alias) } { "Rotate" }
                            }
                            @let toggle = if key.blocked { "unblock" } else { "block" };
                            form method="post" action={ "/keys/" (key.id) "/" (toggle) } {
                                (csrf_input(session))
                                button type="submit" aria-label={ (toggle) " " (key.alias) } {
                                    @if key.blocked { "Unblock" } @else { "Block" }
                                }
                            }
                            form method="post" action={ "/keys/" (key.id) "/revoke" } {
                                (csrf_input(session))
                                button type="submit" aria-label={ "Revoke " (key.alias) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }))
    };
    layout("Keys", session, notice, body)
}

/// The live request tail: rows arrive over server-sent events from `/tail/events`.
pub fn tail(session: &Session, teams: &[Team], team_id: &str) -> Markup {
    let body = html! {
        form.inline method="get" action="/tail" {
            label for="team" { "Team" }
            select id="team" name="team_id" {
                option value="" { "(every team)" }
                @for team in teams {
                    option value=(team.id) selected[team.id == team_id] { (team.name) }
                }
            }
            button type="submit" { "Filter" }
        }
        p.hint { "Requests appear as every edge serves them; nothing here is stored." }
        table data-tail={ "/tail/events?team_id=" (team_id) } {
            thead {
                tr {
                    th { "Time" } th { "Status" } th { "Model" } th { "Team" } th { "Key" }
                    th { "Tokens in / out" } th { "Cost (USD)" } th { "ms" } th { "Request id" }
                }
            }
            tbody id="tail-rows" {}
        }
    };
    layout("Live requests", session, &Notice::default(), body)
}

/// A budget and its spend in the current period (or why that is unknown).
pub struct BudgetRow {
    pub budget: Budget,
    /// (spent USD, exceeded).
    pub status: Result<(f64, bool), String>,
}

/// Alert thresholds as `50 %, 80 %`, or a dash.
fn percentages(thresholds: &[f64]) -> String {
    if thresholds.is_empty() {
        return "—".to_owned();
    }
    let each: Vec<String> = thresholds.iter().map(|t| format!("{t} %")).collect();
    each.join(", ")
}

/// The budgets page.
pub fn budgets(session: &Session, rows: &[BudgetRow], teams: &[Team], notice: &Notice) -> Markup {
    let scope_name = |budget: &Budget| match budget.scope.as_str() {
        "team" => team_name(teams, &budget.scope_id),
        _ => budget.scope_id.clone(),
    };
    let form = Forms::new(session, notice);
    let body = html! {
        (form.inline("/budgets", "Set budget", html! {
            (form.select("scope", "scope", "Scope", None, words(["team", "key", "user", "model"])))
            label for="scope_id" { "Id" }
            input type="text" id="scope_id" name="scope_id" list="team-ids" placeholder="team, key or user id, or a model";
            datalist id="team-ids" {
                @for team in teams {
                    option value=(team.id) { (team.name) }
                }
            }
            (form.error("scope_id"))
            (form.decimal("amount_usd", "amount_usd", "USD", 8))
            (form.select("period", "period", "Per", None, words(["daily", "weekly", "monthly", "total"])))
            (form.text("budget_timezone", "timezone", "Time zone", "UTC"))
            (form.text("thresholds", "thresholds", "Alert at %", "50, 80, 100"))
        }))
        (table(&["Scope", "For", "Period", "Spent (USD)", "Budget (USD)", "Status", "Alerts at", ""], html! {
            @for row in rows {
                tr data-budget=(row.budget.id) {
                    td { (row.budget.scope) }
                    td { (scope_name(&row.budget)) }
                    td { (row.budget.period) }
                    @match &row.status {
                        Ok((spent, exceeded)) => {
                            td.spent { (format!("{spent:.6}")) }
                            td { (format!("{:.2}", row.budget.amount_usd)) }
                            td.status {
                                @if *exceeded { "exceeded" }
                                @else { (format!("{:.0} % used", 100.0 * spent / row.budget.amount_usd.max(f64::MIN_POSITIVE))) }
                            }
                        }
                        Err(why) => {
                            td.spent { "—" }
                            td { (format!("{:.2}", row.budget.amount_usd)) }
                            td.status { (why) }
                        }
                    }
                    td.thresholds { (percentages(&row.budget.thresholds)) }
                    td { (delete_button(session, "budgets", &row.budget.id, &scope_name(&row.budget))) }
                }
            }
        }))
    };
    layout("Budgets", session, notice, body)
}

/// What the spend page shows: spend per day, and per group over the whole range.
pub struct Spend {
    pub by: &'static str,
    /// ("MM-DD", USD), oldest first.
    pub days: Vec<(String, f64)>,
    /// Group → (USD, requests).
    pub groups: std::collections::BTreeMap<String, (f64, u64)>,
}

/// The spend page: a bar chart drawn as SVG on the server, and a table.
pub fn spend(session: &Session, by: &str, spend: &Result<Spend, String>) -> Markup {
    const WIDTH: f64 = 700.0;
    const HEIGHT: f64 = 220.0;
    const AXIS: f64 = 24.0;
    let body = html! {
        form.inline method="get" action="/spend" {
            label for="by" { "By" }
            select id="by" name="by" {
                @for option in ["team", "model", "key"] {
                    option value=(option) selected[option == by] { (option) }
                }
            }
            button type="submit" { "Show" }
        }
        @match spend {
            Err(why) => { p.error role="alert" id="page-error" { "Spend is not available: " (why) } }
            Ok(spend) => {
                @let top = spend.days.iter().map(|(_, c)| *c).fold(0.0, f64::max);
                @let slot = WIDTH / spend.days.len().max(1) as f64;
                figure {
                    svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT + AXIS) } role="img"
                        aria-label="Spend per day, last 14 days" {
                        @for (i, (day, cost)) in spend.days.iter().enumerate() {
                            @let height = if top > 0.0 { cost / top * (HEIGHT - 10.0) } else { 0.0 };
                            rect.bar x=(i as f64 * slot + 4.0) y=(HEIGHT - height) width=(slot - 8.0)
                                height=(height) data-day=(day) data-cost=(format!("{cost:.6}")) {
                                title { (day) ": $" (format!("{cost:.6}")) }
                            }
                            text x=(i as f64 * slot + slot / 2.0) y=(HEIGHT + 16.0) text-anchor="middle" font-size="11" {
                                (day)
                            }
                        }
                    }
                    figcaption { "Spend per day (UTC), highest $" (format!("{top:.6}")) }
                }
                (table(&[spend.by, "Requests", "Spent (USD)"], html! {
                    @for (group, (cost, requests)) in &spend.groups {
                        tr { td { (group) } td { (requests) } td { (format!("{cost:.6}")) } }
                    }
                }))
            }
        }
    };
    layout("Spend", session, &Notice::default(), body)
}
