//! What the committed EKS manifests (`deploy/rendered/eks/`, rendered by `deploy/render`, which
//! CI checks for drift) must say: real health checks, resource limits, secrets only by
//! reference, an autoscaled edge that keeps two pods and a disruption budget, non-root pods, and
//! the private overlay reachable only through an internal load balancer.

use std::path::Path;

mod common;

use anyhow::{Context, Result};
use common::secret_looking;
use serde::Deserialize;
use serde_json::Value;

/// Every document of the rendered overlay `name`.
fn rendered(name: &str) -> Result<Vec<Value>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/rendered/eks/{name}.yaml"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).context("a YAML document"))
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(document: &Value) -> &str {
    document["metadata"]["name"].as_str().unwrap_or_default()
}

/// The names of the documents of `kind`.
fn names_of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a str> {
    of_kind(documents, kind).into_iter().map(name).collect()
}

/// The pod templates of the workloads, with their names.
fn pods(documents: &[Value]) -> Vec<(&str, &Value)> {
    documents
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .map(|d| (name(d), &d["spec"]["template"]["spec"]))
        .collect()
}

const OVERLAYS: [&str; 2] = ["public", "private"];

#[test]
fn every_container_has_real_health_checks_limits_and_runs_as_non_root() -> Result<()> {
    for overlay in OVERLAYS {
        let documents = rendered(overlay)?;
        let pods = pods(&documents);
        assert_eq!(pods.len(), 4, "three roles and NATS in {overlay}");
        for (workload, pod) in pods {
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{workload}");
            for container in pod["containers"].as_array().context("containers")? {
                let what = format!("{overlay}/{workload}");
                for probe in ["readinessProbe", "livenessProbe"] {
                    let probe = &container[probe];
                    assert!(
                        probe["httpGet"]["path"].is_string() || probe["grpc"]["port"].is_number(),
                        "{what}: {probe} asks a real endpoint"
                    );
                }
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"]["limits"][resource].is_string(),
                        "{what}: {resource} limit"
                    );
                    assert!(
                        container["resources"]["requests"][resource].is_string(),
                        "{what}: {resource} request"
                    );
                }
                let security = &container["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            }
        }
    }
    Ok(())
}

#[test]
fn no_secret_is_a_plain_environment_value() -> Result<()> {
    for overlay in OVERLAYS {
        let documents = rendered(overlay)?;
        for (workload, pod) in pods(&documents) {
            for container in pod["containers"].as_array().context("containers")? {
                for variable in container["env"].as_array().into_iter().flatten() {
                    let variable_name = variable["name"].as_str().unwrap_or_default();
                    assert!(
                        !(secret_looking(variable_name) && variable.get("value").is_some()),
                        "{overlay}/{workload}: {variable_name} is a plain value"
                    );
                }
            }
        }
        for config_map in of_kind(&documents, "ConfigMap") {
            for key in config_map["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                assert!(
                    !secret_looking(key),
                    "{overlay}: ConfigMap {} holds {key}",
                    name(config_map)
                );
            }
        }
        assert!(
            of_kind(&documents, "Secret").is_empty(),
            "{overlay}: secrets come from Secrets Manager"
        );
    }
    Ok(())
}

#[test]
fn the_edge_autoscales_from_two_pods_and_every_role_has_a_disruption_budget() -> Result<()> {
    for overlay in OVERLAYS {
        let documents = rendered(overlay)?;
        let autoscalers = of_kind(&documents, "HorizontalPodAutoscaler");
        let edge = autoscalers
            .iter()
            .find(|h| h["spec"]["scaleTargetRef"]["name"] == "edge")
            .context("an autoscaler for the edge")?;
        assert!(edge["spec"]["minReplicas"].as_u64() >= Some(2), "{overlay}");
        let budgets = names_of_kind(&documents, "PodDisruptionBudget");
        for workload in ["edge", "control-plane", "aggregator", "nats"] {
            assert!(
                budgets.contains(&workload),
                "{overlay}: no budget for {workload}"
            );
        }
        let nats = of_kind(&documents, "StatefulSet");
        assert_eq!(
            nats.first().map(|n| &n["spec"]["replicas"]),
            Some(&Value::from(3))
        );
    }
    Ok(())
}

#[test]
fn the_private_overlay_has_an_internal_load_balancer_for_named_networks_only() -> Result<()> {
    let annotations = |overlay: &str| -> Result<Vec<Value>> {
        Ok(of_kind(&rendered(overlay)?, "Ingress")
            .into_iter()
            .map(|i| i["metadata"]["annotations"].clone())
            .collect())
    };
    let private = annotations("private")?;
    assert_eq!(private.len(), 1);
    assert_eq!(private[0]["alb.ingress.kubernetes.io/scheme"], "internal");
    let cidrs = private[0]["alb.ingress.kubernetes.io/inbound-cidrs"]
        .as_str()
        .context("inbound-cidrs names the networks")?;
    for broad in ["0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        assert!(
            !cidrs.split(',').any(|c| c.trim() == broad),
            "{broad} is not a named network"
        );
    }
    let private_documents = rendered("private")?;
    for service in of_kind(&private_documents, "Service") {
        let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
        assert_eq!(kind, "ClusterIP", "{}: no public service", name(service));
    }
    let public = annotations("public")?;
    assert_eq!(
        public[0]["alb.ingress.kubernetes.io/scheme"],
        "internet-facing"
    );
    Ok(())
}

#[test]
fn every_secret_a_pod_reads_comes_from_an_external_secret_the_operator_serves() -> Result<()> {
    for overlay in OVERLAYS {
        let documents = rendered(overlay)?;
        let stores = names_of_kind(&documents, "SecretStore");
        let external = of_kind(&documents, "ExternalSecret");
        let mut targets = Vec::new();
        for secret in &external {
            let what = format!("{overlay}/{}", name(secret));
            // v1beta1 is no longer served from External Secrets 0.17 on.
            assert_eq!(secret["apiVersion"], "external-secrets.io/v1", "{what}");
            let store = secret["spec"]["secretStoreRef"]["name"].as_str();
            assert!(store.is_some_and(|s| stores.contains(&s)), "{what}: store");
            for entry in secret["spec"]["data"].as_array().context("data")? {
                assert!(entry["secretKey"].is_string(), "{what}: secretKey");
                assert!(
                    entry["remoteRef"]["key"].is_string(),
                    "{what}: remoteRef.key"
                );
            }
            targets.push(
                secret["spec"]["target"]["name"]
                    .as_str()
                    .unwrap_or_default(),
            );
        }
        for (workload, pod) in pods(&documents) {
            for container in pod["containers"].as_array().context("containers")? {
                let from_env = container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["valueFrom"]["secretKeyRef"]["name"].as_str());
                let from_env_from = container["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["secretRef"]["name"].as_str());
                for secret in from_env.chain(from_env_from) {
                    assert!(
                        targets.contains(&secret),
                        "{overlay}/{workload}: {secret} is made by no ExternalSecret"
                    );
                }
            }
        }
    }
    Ok(())
}
