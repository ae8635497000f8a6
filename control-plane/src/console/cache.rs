//! The response cache page: which models' answers edges cache, for how long and shared by whom,
//! and a form to set a model's policy (the semantic tier is set with the CLI).

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CachePolicy, ListCachePoliciesRequest};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, number_input, select_input, text_input, words};
use super::session::Session;
use super::{Change, Console, Page, call, listed};

/// The page, with `notice` about the last change.
pub(super) async fn cache_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_cache_policies(call(session, ListCachePoliciesRequest {}))
        .await;
    let policies = listed(answer, notice).policies;
    let body = html! {
        form.inline method="post" action="/cache" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("cache_model", "model", "Model", "gpt-4o"))
            (field_error(notice, "model"))
            (number_input("ttl_seconds", "ttl_seconds", "Seconds", 7))
            (field_error(notice, "ttl_seconds"))
            (select_input("cache_scope", "scope", "Shared by", None, words(["team", "key", "global"])))
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
    layout("Response cache", session, notice, body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewPolicy {
    model: String,
    ttl_seconds: String,
    scope: String,
}

pub(super) async fn set_policy(Change(editor, form): Change<NewPolicy>) -> Response {
    let Ok(ttl_seconds) = form.ttl_seconds.trim().parse::<u32>() else {
        return editor
            .refused(
                Page::Cache,
                "ttl_seconds",
                format!("{:?} is not a whole number of seconds", form.ttl_seconds),
            )
            .await;
    };
    let policy = CachePolicy {
        model: form.model.trim().to_owned(),
        ttl_seconds,
        scope: form.scope,
        ..CachePolicy::default()
    };
    let result = editor.api().set_cache_policy(editor.call(policy)).await;
    editor
        .answer(
            result,
            Page::Cache,
            &[("ttl", "ttl_seconds"), ("", "model")],
        )
        .await
}
