//! The console's pages, rendered on the server (maud): plain HTML forms that post back with
//! the session's CSRF token, and one small script (`assets/console.js`) for the live tail and
//! copying a new key.

use maud::{DOCTYPE, Markup, html};
use tollgate_proto::admin::{Key, Team};

use super::session::Session;

/// What a page says about the last change, next to the field it concerns.
#[derive(Default)]
pub struct Notice {
    /// The form field the message is about (`name`, `alias`, …), or `None` for the page.
    pub field: Option<&'static str>,
    pub message: String,
}

impl Notice {
    fn about(&self, field: &str) -> Option<&str> {
        (self.field == Some(field) && !self.message.is_empty()).then_some(self.message.as_str())
    }

    fn general(&self) -> Option<&str> {
        (self.field.is_none() && !self.message.is_empty()).then_some(self.message.as_str())
    }
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
fn layout(title: &str, session: &Session, notice: &Notice, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    strong { "Tollgate" }
                    nav aria-label="Sections" {
                        a href="/teams" { "Teams" }
                        a href="/keys" { "Keys" }
                        a href="/tail" { "Live requests" }
                    }
                    span.who { (session.actor) " (" (session.role) ")" }
                    form method="post" action="/sign-out" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main {
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

/// A field's error, when it has one.
fn field_error(notice: &Notice, field: &str) -> Markup {
    html! {
        @if let Some(message) = notice.about(field) {
            span.error role="alert" id={ (field) "-error" } { (message) }
        }
    }
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
    let body = html! {
        form.inline method="post" action="/teams" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="name" { "New team" }
            input type="text" id="name" name="name" placeholder="research";
            (field_error(notice, "name"))
            button type="submit" { "Create team" }
        }
        table {
            thead { tr { th { "Name" } th { "Id" } } }
            tbody {
                @for team in teams {
                    tr { td { (team.name) } td { code { (team.id) } } }
                }
            }
        }
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
    let team_name = |id: &str| {
        teams
            .iter()
            .find(|t| t.id == id)
            .map_or_else(|| id.to_owned(), |t| t.name.clone())
    };
    let body = html! {
        @if let Some(secret) = secret {
            section.secret aria-label="New key" {
                p { "The new key's secret. It is shown this once: copy it now." }
                code id="new-secret" { (secret) }
                button type="button" data-copy="new-secret" { "Copy" }
            }
        }
        form.inline method="post" action="/keys" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="alias" { "New key" }
            input type="text" id="alias" name="alias" placeholder="alias";
            (field_error(notice, "alias"))
            label for="team_id" { "Team" }
            select id="team_id" name="team_id" {
                option value="" { "(none)" }
                @for team in teams {
                    option value=(team.id) { (team.name) }
                }
            }
            (field_error(notice, "team_id"))
            button type="submit" { "Create key" }
        }
        table {
            thead { tr { th { "Alias" } th { "Prefix" } th { "Team" } th { "State" } th {} } }
            tbody {
                @for key in keys {
                    tr data-key=(key.id) {
                        td { (key.alias) }
                        td { code { (key.prefix) "…" } }
                        td { (team_name(&key.team_id)) }
                        td {
                            @if key.revoked { "revoked" }
                            @else if key.blocked { "blocked" }
                            @else { "active" }
                        }
                        td {
                            @if !key.revoked {
                                form method="post" action={ "/keys/" (key.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" aria-label={ "Revoke " (key.alias) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
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
