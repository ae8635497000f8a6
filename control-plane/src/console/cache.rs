//! The response cache page: which models' answers edges cache, for how long and shared by whom,
//! and a form to set a model's policy (the semantic tier is set with the CLI).

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CachePolicy, ListCachePoliciesRequest};

use super::delete::delete_button;
use super::forms::{table, words};
use super::{Change, Drawing, Page};

/// The page, with the drawing's notice about the last change.
pub(super) async fn cache_page(drawing: &mut Drawing<'_>) -> Markup {
    let policies = drawing
        .list(
            AdminService::list_cache_policies,
            ListCachePoliciesRequest {},
        )
        .await
        .policies;
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (form.inline("/cache", "Cache answers", html! {
            (form.text("cache_model", "model", "Model", "gpt-4o"))
            (form.number("ttl_seconds", "ttl_seconds", "Seconds", 7))
            (form.select("cache_scope", "scope", "Shared by", None, words(["team", "key", "global"])))
        }))
        (table(&["Model", "Seconds", "Shared by", "Semantic tier", ""], html! {
            @for policy in &policies {
                tr {
                    td { (policy.model) }
                    td { (policy.ttl_seconds) }
                    td { (policy.scope) }
                    td { (policy.semantic_embeddings_model) }
                    td { (delete_button(session, "cache", &policy.id, &policy.model)) }
                }
            }
        }))
    };
    drawing.layout("Response cache", body)
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
        let message = format!("{:?} is not a whole number of seconds", form.ttl_seconds);
        return editor.refused(Page::Cache, "ttl_seconds", message).await;
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
