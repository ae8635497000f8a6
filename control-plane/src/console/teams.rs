//! The teams page: every team, and a form to create one.

use axum::response::Response;
use maud::Markup;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateTeamRequest, ListTeamsRequest};

use super::pages;
use super::{Change, Drawing, Page};

/// The page, with the drawing's notice about the last change.
pub(super) async fn teams_page(drawing: &mut Drawing<'_>) -> Markup {
    let teams = drawing
        .list(AdminService::list_teams, ListTeamsRequest {})
        .await
        .teams;
    pages::teams(drawing.session, &teams, &drawing.notice)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewTeam {
    name: String,
}

pub(super) async fn create_team(Change(editor, form): Change<NewTeam>) -> Response {
    let request = CreateTeamRequest {
        name: form.name.trim().to_owned(),
        ..Default::default()
    };
    let result = editor.api().create_team(editor.call(request)).await;
    editor.answer(result, Page::Teams, &[("", "name")]).await
}
