//! The dashboard and the alarms in `deploy/` name only metrics the roles expose, so that a
//! renamed metric fails here instead of leaving an empty panel or an alarm that never fires.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;
use tollgate_edge::metrics::{
    CacheLabels, DeploymentLabels, GuardrailLabels, Metrics, ModelLabels, Phase, ReasonLabels,
    RequestLabels, TokenLabels, UpstreamLabels,
};
use tollgate_usage_aggregator::ConsumerCounters;
use tollgate_usage_aggregator::metrics::AggregatorMetrics;

/// Every series name the edge and the aggregator can expose (counters with `_total`,
/// histograms with `_bucket`, `_count` and `_sum`).
fn exposed() -> BTreeSet<String> {
    let text = populated().render()
        + &AggregatorMetrics::new(Arc::new(ConsumerCounters::default())).render();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = declared.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// The edge's metrics with one series in every labelled family (an empty family is not
/// exposed at all).
fn populated() -> Metrics {
    let metrics = Metrics::default();
    let request = RequestLabels {
        route: "chat",
        status: 200,
    };
    let model = || "m".to_owned();
    metrics.requests.get_or_create(&request).inc();
    metrics.request_seconds.get_or_create(&request).observe(0.1);
    let tokens = TokenLabels {
        model: model(),
        kind: "input",
    };
    metrics.tokens.get_or_create(&tokens).inc();
    metrics
        .cost_usd
        .get_or_create(&ModelLabels { model: model() })
        .inc();
    let upstream = UpstreamLabels {
        provider: "openai",
        code: "upstream_error",
    };
    metrics.upstream_errors.get_or_create(&upstream).inc();
    let deployment = DeploymentLabels {
        deployment: "d".into(),
    };
    metrics.circuit_state.get_or_create(&deployment).set(0);
    metrics.circuit_opened.get_or_create(&deployment).inc();
    let reason = ReasonLabels { reason: "failure" };
    metrics.retries.get_or_create(&reason).inc();
    metrics.fallbacks.get_or_create(&reason).inc();
    let guardrail = GuardrailLabels {
        guardrail: "g".into(),
        outcome: "passed",
    };
    metrics.guardrail_checks.get_or_create(&guardrail).inc();
    let cache = CacheLabels { result: "hit" };
    metrics.cache_lookups.get_or_create(&cache).inc();
    metrics.refused(Phase::Auth, "invalid_api_key");
    metrics
}

/// The `tollgate_…` names in `text`.
fn named_metrics(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("tollgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn read_json(path: &str) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn every_dashboard_query_names_an_exposed_metric() -> Result<()> {
    let exposed = exposed();
    let dashboard = read_json("deploy/grafana/tollgate.json")?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    assert!(panels.len() >= 10, "the dashboard lost its panels");
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        for target in targets {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let names = named_metrics(expr);
            assert!(!names.is_empty(), "{expr} names no metric");
            for name in names {
                assert!(
                    exposed.contains(&name),
                    "panel {:?} queries {name}, which no role exposes",
                    panel["title"]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn every_alarm_watches_an_exposed_metric_or_a_log_metric_filter() -> Result<()> {
    let exposed = exposed();
    let alarms = read_json("deploy/cloudwatch/alarms.json")?;
    let from_logs: BTreeSet<&str> = alarms["metric_filters"]
        .as_array()
        .context("no metric filters")?
        .iter()
        .flat_map(|f| f["metricTransformations"].as_array().into_iter().flatten())
        .filter_map(|t| t["metricName"].as_str())
        .collect();
    let scraped: Vec<String> = alarms["agent_metric_declaration"]
        .as_array()
        .context("no agent declaration")?
        .iter()
        .flat_map(|d| d["metric_selectors"].as_array().into_iter().flatten())
        .filter_map(|s| s.as_str())
        .map(|s| s.trim_start_matches('^').trim_end_matches('$').to_owned())
        .collect();
    for name in &scraped {
        assert!(
            exposed.contains(name),
            "the agent scrapes {name}, which no role exposes"
        );
    }
    let list = alarms["alarms"].as_array().context("no alarms")?;
    assert!(list.len() >= 5);
    for alarm in list {
        let mut watched: Vec<&str> = alarm["MetricName"].as_str().into_iter().collect();
        for metric in alarm["Metrics"].as_array().into_iter().flatten() {
            watched.extend(metric["MetricStat"]["Metric"]["MetricName"].as_str());
        }
        assert!(
            !watched.is_empty(),
            "{} watches nothing",
            alarm["AlarmName"]
        );
        for name in watched {
            assert!(
                from_logs.contains(name) || scraped.iter().any(|s| s == name),
                "{} watches {name}, which neither a metric filter nor the agent provides",
                alarm["AlarmName"]
            );
        }
    }
    Ok(())
}
