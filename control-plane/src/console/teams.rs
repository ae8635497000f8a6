//! The teams page: every team, and a form to create one.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateTeamRequest, ListTeamsRequest};

use super::pages::{self, Notice};
use super::session::Session;
use super::{Console, Page, Refused, after_change, call, changing, listed, page};

/// The page, with `notice` about the last change and `status` as its HTTP status.
pub(super) async fn teams_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_teams(call(session, ListTeamsRequest {}))
        .await;
    let teams = listed(answer, &mut notice).teams;
    page(status, pages::teams(session, &teams, &notice))
}

#[derive(Deserialize)]
pub(super) struct NewTeam {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub(super) async fn create_team(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewTeam>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let request = CreateTeamRequest {
        name: form.name.trim().to_owned(),
        ..Default::default()
    };
    let result = console.api.create_team(call(&session, request)).await;
    Ok(after_change(&console, &session, result, Page::Teams, &[("", "name")]).await)
}
