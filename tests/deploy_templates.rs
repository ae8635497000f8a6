//! What the committed CloudFormation templates (`deploy/rendered/ecs/`, synthesized from
//! `deploy/ecs` by `deploy/render`, which CI checks for drift) must say: real health checks,
//! sized tasks, secrets only as ECS secrets, an autoscaled edge that keeps two tasks, no IAM
//! statement that allows everything or every Bedrock / SageMaker action, the private option
//! reachable only through an internal load balancer from named networks, and the global option
//! behind CloudFront with WAF.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use anyhow::{Context, Result};
use common::secret_looking;
use serde_json::Value;

/// The stack templates of an access option, by stack name.
fn option(name: &str) -> Result<BTreeMap<String, Value>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rendered/ecs");
    let mut templates = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let Some(stack) = file.strip_suffix(".template.json") else {
            continue;
        };
        if stack == format!("tollgate-{name}") || stack.starts_with(&format!("tollgate-{name}-")) {
            let text = std::fs::read_to_string(&path)?;
            templates.insert(stack.to_owned(), serde_json::from_str(&text)?);
        }
    }
    anyhow::ensure!(!templates.is_empty(), "no template for the {name} option");
    Ok(templates)
}

const OPTIONS: [&str; 3] = ["global", "regional", "private"];

/// The resources of `template` of CloudFormation type `kind`, with their logical ids.
fn resources<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), &r["Properties"]))
        .collect()
}

/// Every template of every option, named `option/stack`.
fn every_template() -> Result<Vec<(String, Value)>> {
    let mut all = Vec::new();
    for name in OPTIONS {
        for (stack, template) in option(name)? {
            all.push((format!("{name}/{stack}"), template));
        }
    }
    Ok(all)
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

#[test]
fn every_essential_container_has_a_real_health_check_and_every_task_is_sized() -> Result<()> {
    for (what, template) in every_template()? {
        for (id, task) in resources(&template, "AWS::ECS::TaskDefinition") {
            assert!(
                task["Cpu"].is_string() && task["Memory"].is_string(),
                "{what}/{id}: size"
            );
            for container in task["ContainerDefinitions"]
                .as_array()
                .context("containers")?
            {
                let name = container["Name"].as_str().unwrap_or_default();
                if container["Essential"] == false {
                    continue;
                }
                let command: Vec<&str> = container["HealthCheck"]["Command"]
                    .as_array()
                    .with_context(|| format!("{what}/{id}/{name}: no health check"))?
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let asks_the_role = command == ["CMD", "/usr/local/bin/tollgate", "health"];
                let asks_nats = command.first() == Some(&"CMD")
                    && command.iter().any(|part| part.ends_with(":8222/healthz"));
                assert!(
                    asks_the_role || asks_nats,
                    "{what}/{id}/{name}: {command:?} is not a real health check"
                );
                assert_eq!(
                    container["ReadonlyRootFilesystem"], true,
                    "{what}/{id}/{name}"
                );
            }
        }
        for (id, group) in resources(&template, "AWS::ElasticLoadBalancingV2::TargetGroup") {
            if group["Port"] == 4000 {
                assert_eq!(group["HealthCheckPath"], "/health/ready", "{what}/{id}");
            }
        }
    }
    Ok(())
}

#[test]
fn no_secret_is_a_plain_environment_value() -> Result<()> {
    let mut secrets = 0;
    for (what, template) in every_template()? {
        for (id, task) in resources(&template, "AWS::ECS::TaskDefinition") {
            for container in task["ContainerDefinitions"]
                .as_array()
                .context("containers")?
            {
                for variable in container["Environment"].as_array().into_iter().flatten() {
                    let name = variable["Name"].as_str().unwrap_or_default();
                    // The key id names the KMS key; it opens nothing by itself.
                    if name == "TOLLGATE_KMS_KEY_ID" {
                        continue;
                    }
                    assert!(
                        !secret_looking(name),
                        "{what}/{id}: {name} is a plain value"
                    );
                }
                for secret in container["Secrets"].as_array().into_iter().flatten() {
                    assert!(secret["ValueFrom"].is_string() || secret["ValueFrom"].is_object());
                    secrets += 1;
                }
            }
        }
    }
    assert!(
        secrets > 20,
        "the roles' secrets come as ECS secrets ({secrets})"
    );
    Ok(())
}

/// The edge's ECS service, with its logical id.
fn edge_service(template: &Value) -> Result<(&str, &Value)> {
    resources(template, "AWS::ECS::Service")
        .into_iter()
        .find(|(id, _)| id.starts_with("EdgeService"))
        .context("an edge service")
}

#[test]
fn the_edge_keeps_two_tasks_and_autoscales_on_cpu_and_requests() -> Result<()> {
    for (what, template) in every_template()? {
        if what.ends_with("-cdn") {
            continue;
        }
        let (edge_id, edge) = edge_service(&template)?;
        assert!(edge["DesiredCount"].as_u64() >= Some(2), "{what}");
        // A deployment never takes capacity away (the PodDisruptionBudget's role on EKS).
        assert_eq!(
            edge["DeploymentConfiguration"]["MinimumHealthyPercent"], 100,
            "{what}"
        );
        let target = resources(&template, "AWS::ApplicationAutoScaling::ScalableTarget")
            .into_iter()
            .find(|(_, t)| t["ResourceId"].to_string().contains(edge_id))
            .with_context(|| format!("{what}: the edge's scalable target"))?;
        assert!(target.1["MinCapacity"].as_u64() >= Some(2), "{what}");
        let metrics: Vec<String> =
            resources(&template, "AWS::ApplicationAutoScaling::ScalingPolicy")
                .into_iter()
                .map(|(_, p)| {
                    p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
                    ["PredefinedMetricType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
                })
                .collect();
        for metric in [
            "ECSServiceAverageCPUUtilization",
            "ALBRequestCountPerTarget",
        ] {
            assert!(metrics.iter().any(|m| m == metric), "{what}: {metric}");
        }
    }
    Ok(())
}

/// Actions that have no resource-level permissions, so `Resource: "*"` is the only way to grant them.
const NO_RESOURCE_LEVEL: [&str; 1] = ["ecr:GetAuthorizationToken"];

#[test]
fn no_iam_statement_allows_everything_or_every_bedrock_or_sagemaker_action() -> Result<()> {
    let mut checked = 0;
    for (what, template) in every_template()? {
        let mut documents = Vec::new();
        for (id, policy) in resources(&template, "AWS::IAM::Policy") {
            documents.push((id, &policy["PolicyDocument"]));
        }
        for (id, role) in resources(&template, "AWS::IAM::Role") {
            for policy in role["Policies"].as_array().into_iter().flatten() {
                documents.push((id, &policy["PolicyDocument"]));
            }
        }
        for (id, document) in documents {
            for statement in as_list(&document["Statement"]) {
                checked += 1;
                if statement["Effect"] != "Allow" {
                    continue;
                }
                let actions: Vec<&str> = as_list(&statement["Action"])
                    .into_iter()
                    .filter_map(Value::as_str)
                    .collect();
                for action in &actions {
                    assert!(
                        !matches!(*action, "*" | "bedrock:*" | "sagemaker:*"),
                        "{what}/{id}: allows {action}"
                    );
                }
                if as_list(&statement["Resource"]).contains(&&Value::from("*")) {
                    assert!(
                        actions.iter().all(|a| NO_RESOURCE_LEVEL.contains(a)),
                        "{what}/{id}: {actions:?} on every resource"
                    );
                }
            }
        }
    }
    assert!(checked > 50, "{checked} statements");
    // The edges' model permissions name what the settings name.
    let regional = option("regional")?;
    let template = &regional["tollgate-regional"];
    let edge_policy = resources(template, "AWS::IAM::Policy")
        .into_iter()
        .find(|(id, _)| id.starts_with("EdgeTaskTaskRole"))
        .context("the edge task role's policy")?;
    let text = edge_policy.1.to_string();
    assert!(text.contains("bedrock:InvokeModelWithResponseStream"));
    assert!(text.contains("foundation-model/amazon.nova-pro-v1:0"));
    assert!(text.contains("sagemaker:InvokeEndpoint"));
    assert!(text.contains(":endpoint/llama-3-70b-instruct"));
    Ok(())
}

/// Where an ingress rule lets traffic in from: a network, a prefix list or another group.
fn source(rule: &Value) -> String {
    ["CidrIp", "CidrIpv6", "SourcePrefixListId"]
        .iter()
        .find_map(|k| rule[k].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| rule["SourceSecurityGroupId"].to_string())
}

/// The ingress rules of every security group in `template`: (group, source, port).
fn ingress(template: &Value) -> Vec<(String, String, i64)> {
    let port = |rule: &Value| rule["FromPort"].as_i64().unwrap_or(-1);
    let mut rules = Vec::new();
    for (id, group) in resources(template, "AWS::EC2::SecurityGroup") {
        for rule in as_list(&group["SecurityGroupIngress"]) {
            rules.push((id.to_owned(), source(rule), port(rule)));
        }
    }
    for (_, rule) in resources(template, "AWS::EC2::SecurityGroupIngress") {
        rules.push((rule["GroupId"].to_string(), source(rule), port(rule)));
    }
    rules
}

fn load_balancers(template: &Value) -> Vec<&Value> {
    resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| b["Type"] != "network")
        .collect()
}

#[test]
fn the_private_option_is_an_internal_load_balancer_for_named_networks_only() -> Result<()> {
    let private = option("private")?;
    assert_eq!(private.len(), 1, "one stack");
    let template = &private["tollgate-private"];
    let balancers = load_balancers(template);
    assert_eq!(balancers.len(), 1);
    assert_eq!(balancers[0]["Scheme"], "internal");
    for (_, network) in resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer") {
        assert_eq!(network["Scheme"], "internal", "NATS's balancer too");
    }
    for kind in [
        "AWS::CloudFront::Distribution",
        "AWS::EC2::InternetGateway",
        "AWS::EC2::EIP",
    ] {
        assert!(resources(template, kind).is_empty(), "no {kind}");
    }
    let rules = ingress(template);
    let https: Vec<&str> = rules
        .iter()
        .filter(|(_, _, port)| *port == 443)
        .map(|(_, source, _)| source.as_str())
        .collect();
    assert_eq!(
        https,
        ["10.20.0.0/16", "192.168.40.0/24"],
        "the named networks"
    );
    for (group, source, port) in &rules {
        for broad in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ] {
            assert_ne!(source, broad, "{group} port {port}");
        }
    }
    Ok(())
}

#[test]
fn the_global_option_is_behind_cloudfront_with_waf_and_its_balancers_take_only_cloudfront()
-> Result<()> {
    let global = option("global")?;
    let cdn = &global["tollgate-global-cdn"];
    let distributions = resources(cdn, "AWS::CloudFront::Distribution");
    assert_eq!(distributions.len(), 1);
    let config = &distributions[0].1["DistributionConfig"];
    assert!(config["WebACLId"].is_object(), "WAF on CloudFront");
    assert_eq!(
        config["DefaultCacheBehavior"]["ViewerProtocolPolicy"],
        "https-only"
    );
    let acls = resources(cdn, "AWS::WAFv2::WebACL");
    assert_eq!(acls.len(), 1);
    assert_eq!(acls[0].1["Scope"], "CLOUDFRONT");
    let regions: Vec<&Value> = global
        .iter()
        .filter(|(stack, _)| !stack.ends_with("-cdn"))
        .map(|(_, t)| t)
        .collect();
    assert!(regions.len() >= 2, "a home region and an edge region");
    for template in regions {
        for balancer in load_balancers(template) {
            assert_eq!(balancer["Scheme"], "internet-facing");
        }
        for (group, source, port) in ingress(template) {
            if port == 443 {
                assert!(
                    source.starts_with("pl-"),
                    "{group}: 443 from {source}, not CloudFront"
                );
            }
            assert!(
                source != "0.0.0.0/0" && source != "::/0",
                "{group} port {port}"
            );
        }
        let records = resources(template, "AWS::Route53::RecordSet");
        assert!(
            records.iter().any(|(_, r)| r["Region"].is_string()),
            "a latency record for the region"
        );
    }
    Ok(())
}

#[test]
fn the_regional_option_has_waf_on_its_internet_facing_balancer() -> Result<()> {
    let regional = option("regional")?;
    let template = &regional["tollgate-regional"];
    assert_eq!(load_balancers(template)[0]["Scheme"], "internet-facing");
    let acls = resources(template, "AWS::WAFv2::WebACL");
    assert_eq!(acls.len(), 1);
    assert_eq!(acls[0].1["Scope"], "REGIONAL");
    assert_eq!(
        resources(template, "AWS::WAFv2::WebACLAssociation").len(),
        1,
        "the web ACL is on the load balancer"
    );
    Ok(())
}

#[test]
fn nats_is_three_nodes_that_sync_every_write_and_deny_policy_to_other_roles() -> Result<()> {
    for (what, template) in every_template()? {
        let tasks = resources(&template, "AWS::ECS::TaskDefinition");
        let configs: Vec<String> = tasks
            .iter()
            .flat_map(|(_, t)| {
                t["ContainerDefinitions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|c| c["Environment"].as_array().cloned().unwrap_or_default())
            .filter(|v| v["Name"] == "NATS_CONFIG")
            .map(|v| v["Value"].to_string())
            .collect();
        let cluster: Vec<&String> = configs.iter().filter(|c| c.contains("jetstream")).collect();
        if what.ends_with("-cdn") || what.ends_with("eu-west-1") {
            assert!(
                cluster.is_empty(),
                "{what}: no JetStream outside the home region"
            );
            continue;
        }
        assert_eq!(cluster.len(), 3, "{what}: three JetStream nodes");
        for config in cluster {
            assert!(config.contains("sync_interval: always"), "{what}");
            for user in ["edge", "aggregator", "leaf"] {
                assert!(
                    config.contains(&format!(
                        "{{user: {user}, password: ${}_PASSWORD, permissions: {{publish: {{deny: [\\\"tollgate.policy\\\", \\\"tollgate.policy.>\\\"]}}}}}}",
                        user.to_uppercase()
                    )),
                    "{what}: {user} may not publish policy"
                );
            }
        }
    }
    Ok(())
}
