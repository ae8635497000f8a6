//! The routing page: each model's routing rule (strategy, fallbacks, retries, deadline) and the
//! traffic rules that deny or steer requests by who sends them, where from and when, with a form
//! for each.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{
    Deployment, ListDeploymentsRequest, ListRoutingRulesRequest, ListTrafficRulesRequest,
    RoutingRule, Team, TrafficAction, TrafficMatch, TrafficRule,
};

use super::delete::delete_button;
use super::forms::{Forms, table, team_choices, window_inputs, words};
use super::pages::{team_name, window_text};
use super::session::Session;
use super::{Change, Drawing, Page, WindowForm, list_of, listing, whole_number};

/// How a model's deployments are chosen.
const STRATEGIES: [&str; 6] = [
    "simple_shuffle",
    "weighted",
    "priority",
    "least_busy",
    "latency_based",
    "cost_based",
];
/// Why a routing rule's figures were refused.
const NOT_FIGURES: &str = "retries, cooldown and deadline are whole numbers (empty: the default)";
/// What a traffic rule may match on the request's kind.
const REQUEST_TYPES: [&str; 4] = ["chat", "embeddings", "stream", "tools"];

/// The page, with the drawing's notice about the last change.
pub(super) async fn routing_page(drawing: &mut Drawing<'_>) -> Markup {
    let rules = drawing
        .list(AdminService::list_routing_rules, ListRoutingRulesRequest {})
        .await
        .rules;
    let traffic = drawing
        .list(AdminService::list_traffic_rules, ListTrafficRulesRequest {})
        .await
        .rules;
    let teams = drawing.teams().await;
    let request = ListDeploymentsRequest::default();
    let deployments = listing(
        drawing.api(),
        drawing.session,
        AdminService::list_deployments,
        request,
    )
    .await
    .map(|listed| listed.deployments)
    .unwrap_or_default();
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (routing_rules(session, form, &rules))
        (traffic_rules(session, form, &traffic, &teams, &deployments))
    };
    drawing.layout("Routing", body)
}

/// The routing rules: a form to set one, and the table of those there are.
fn routing_rules(session: &Session, form: Forms, rules: &[RoutingRule]) -> Markup {
    html! {
        h2 { "Routing rules" }
        (form.inline("/routing", "Set rule", html! {
            (form.text("rule_model", "model_name", "Model", "gpt-4o"))
            (form.select("rule_strategy", "strategy", "Strategy", None, words(STRATEGIES)))
            (form.text("rule_fallbacks", "fallbacks", "Fallbacks", "claude-sonnet, gpt-4o-mini"))
            (form.number("rule_retries", "max_retries", "Retries", 3))
            (form.number("rule_cooldown", "cooldown_seconds", "Cooldown s", 4))
            (form.number("rule_timeout", "timeout_ms", "Deadline ms", 6))
            (form.error("figures"))
        }))
        p.hint { "One rule per model: setting a model again replaces its rule. Empty figures: the edge's defaults." }
        (table(&["Model", "Strategy", "Fallbacks", "Retries", "Cooldown s", "Deadline ms", ""], html! {
            @for rule in rules {
                tr data-routing=(rule.model_name) {
                    td { (rule.model_name) }
                    td { (rule.strategy) }
                    td { (or_dash(rule.fallbacks.join(", "))) }
                    td { (rule.max_retries) }
                    td { (rule.cooldown_seconds) }
                    td { (rule.timeout_ms) }
                    td { (delete_button(session, "routing", &rule.id, &rule.model_name)) }
                }
            }
        }))
    }
}

/// The traffic rules: a form to add one, and the table of those there are, in order.
fn traffic_rules(
    session: &Session,
    form: Forms,
    traffic: &[TrafficRule],
    teams: &[Team],
    deployments: &[Deployment],
) -> Markup {
    let deployment_choices = deployments.iter().map(|deployment| {
        let text = format!("{} · {}", deployment.model_name, deployment.id);
        (&deployment.id, text)
    });
    html! {
        h2 { "Traffic rules" }
        (form.stacked("/traffic", "Add traffic rule", html! {
            div.row {
                (form.number("traffic_order", "order", "Order", 4))
                label for="traffic_description" { "Description" }
                input type="text" id="traffic_description" name="description" size="40";
            }
            fieldset {
                legend { "When (every field given must match; empty: any)" }
                div.row {
                    (form.text("traffic_models", "models", "Models", ""))
                    (form.select("traffic_team", "team_id", "Team", Some("(any)"), team_choices(teams)))
                    (form.text("traffic_tags", "tags", "Tags", ""))
                    (form.text("traffic_from", "from_regions", "From regions", "eu-west-1"))
                    (form.select("traffic_type", "request_type", "Request type", Some("(any)"), words(REQUEST_TYPES)))
                }
                div.row {
                    (window_inputs("traffic"))
                    (form.error("time"))
                }
            }
            fieldset {
                legend { "Then (deny, or steer)" }
                div.row {
                    label for="traffic_deny" { "Deny with" }
                    input type="text" id="traffic_deny" name="deny" size="40" placeholder="the message the client gets";
                    (form.error("deny"))
                }
                div.row {
                    (form.select("traffic_deployment", "deployment_id", "Only deployment", Some("(any)"), deployment_choices))
                    (form.text("traffic_regions", "regions", "Only regions", ""))
                    (form.text("traffic_prefer", "prefer_region", "Prefer region", ""))
                    (form.select("traffic_strategy", "strategy", "Strategy", Some("(the model's)"), words(STRATEGIES)))
                }
            }
        }))
        (table(&["Order", "Description", "When", "Then", ""], html! {
            @for rule in traffic {
                tr data-traffic=(rule.id) {
                    td { (rule.order) }
                    td { (rule.description) }
                    td { (or_dash(describe_match(rule.when.as_ref(), &|id| team_name(teams, id)))) }
                    td { (describe_action(rule.then.as_ref())) }
                    td { (delete_button(session, "traffic", &rule.id, &rule.description)) }
                }
            }
        }))
    }
}

/// `text`, or a dash when it is empty.
fn or_dash(text: String) -> String {
    if text.is_empty() {
        "—".to_owned()
    } else {
        text
    }
}

/// What a traffic rule matches, in a line.
fn describe_match(when: Option<&TrafficMatch>, team: &dyn Fn(&String) -> String) -> String {
    let Some(when) = when else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mut list = |label: &str, values: Vec<String>| {
        if !values.is_empty() {
            parts.push(format!("{label} {}", values.join(", ")));
        }
    };
    list("models", when.models.clone());
    list("teams", when.team_ids.iter().map(team).collect());
    list("keys", when.key_ids.clone());
    list("tags", when.tags.clone());
    list("from", when.regions.clone());
    list("type", when.request_types.clone());
    list("days", when.weekdays.clone());
    if !when.time_start.is_empty() {
        parts.push(window_text(
            &when.time_start,
            &when.time_end,
            &when.timezone,
        ));
    }
    parts.join("; ")
}

/// What a traffic rule does, in a line.
fn describe_action(then: Option<&TrafficAction>) -> String {
    let Some(then) = then else {
        return String::new();
    };
    if !then.deny.is_empty() {
        return format!("deny: {}", then.deny);
    }
    let mut parts = Vec::new();
    if !then.deployment_ids.is_empty() {
        parts.push(format!("only {}", then.deployment_ids.join(", ")));
    }
    if !then.regions.is_empty() {
        parts.push(format!("only in {}", then.regions.join(", ")));
    }
    if !then.prefer_region.is_empty() {
        parts.push(format!("prefer {}", then.prefer_region));
    }
    if !then.strategy.is_empty() {
        parts.push(format!("strategy {}", then.strategy));
    }
    parts.join("; ")
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewRoutingRule {
    model_name: String,
    strategy: String,
    fallbacks: String,
    max_retries: String,
    cooldown_seconds: String,
    timeout_ms: String,
}

pub(super) async fn set_routing_rule(Change(editor, form): Change<NewRoutingRule>) -> Response {
    let (Some(max_retries), Some(cooldown_seconds), Some(timeout_ms)) = (
        whole_number(&form.max_retries),
        whole_number(&form.cooldown_seconds),
        whole_number(&form.timeout_ms),
    ) else {
        return editor.refused(Page::Routing, "figures", NOT_FIGURES).await;
    };
    let model_name = form.model_name.trim().to_owned();
    // One rule per model: setting a model again updates its rule.
    let id = editor
        .list_or_empty(AdminService::list_routing_rules, ListRoutingRulesRequest {})
        .await
        .rules
        .into_iter()
        .find(|rule| rule.model_name == model_name)
        .map(|rule| rule.id)
        .unwrap_or_default();
    let rule = RoutingRule {
        id,
        model_name,
        strategy: form.strategy,
        fallbacks: list_of(&form.fallbacks),
        max_retries,
        cooldown_seconds,
        timeout_ms,
        ..RoutingRule::default()
    };
    let result = editor.api().set_routing_rule(editor.call(rule)).await;
    editor
        .answer(
            result,
            Page::Routing,
            &[
                ("fallback", "fallbacks"),
                ("max_retries", "figures"),
                ("", "model_name"),
            ],
        )
        .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewTrafficRule {
    order: String,
    description: String,
    models: String,
    team_id: String,
    tags: String,
    from_regions: String,
    request_type: String,
    #[serde(flatten)]
    window: WindowForm,
    deny: String,
    deployment_id: String,
    regions: String,
    prefer_region: String,
    strategy: String,
}

pub(super) async fn set_traffic_rule(Change(editor, form): Change<NewTrafficRule>) -> Response {
    let Some(order) = whole_number(&form.order) else {
        let message = format!("{:?} is not a whole number", form.order);
        return editor.refused(Page::Routing, "order", message).await;
    };
    let (time_start, time_end, timezone, weekdays) = form.window.parts();
    let rule = TrafficRule {
        order,
        description: form.description.trim().to_owned(),
        when: Some(TrafficMatch {
            models: list_of(&form.models),
            team_ids: list_of(&form.team_id),
            tags: list_of(&form.tags),
            regions: list_of(&form.from_regions),
            request_types: list_of(&form.request_type),
            time_start,
            time_end,
            timezone,
            weekdays,
            ..TrafficMatch::default()
        }),
        then: Some(TrafficAction {
            // Kept as typed: an all-blank message is refused by the API with its reason.
            deny: form.deny,
            deployment_ids: list_of(&form.deployment_id),
            regions: list_of(&form.regions),
            prefer_region: form.prefer_region.trim().to_owned(),
            strategy: form.strategy,
        }),
        ..TrafficRule::default()
    };
    let result = editor.api().set_traffic_rule(editor.call(rule)).await;
    editor
        .answer(
            result,
            Page::Routing,
            &[
                ("model", "models"),
                ("team", "team_id"),
                ("time", "time"),
                ("weekday", "time"),
                ("zone", "time"),
                ("", "deny"),
            ],
        )
        .await
}
