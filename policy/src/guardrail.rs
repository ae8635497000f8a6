//! What a guardrail does, read from its `kind` and `config`: the typed form the control plane
//! validates and every edge enforces. Reading is strict (unknown fields are refused) so that a
//! misspelt setting is an error, never a check that silently does not run.

use serde::Deserialize;

use crate::model::Guardrail;

/// The most patterns (deny, allow-only or custom entities) one guardrail may hold.
pub const MAX_PATTERNS: usize = 64;
/// The most memory one compiled pattern may take: a hostile pattern is refused, not compiled.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A guardrail's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardrailSpec {
    /// Amazon Bedrock Guardrails, called through `ApplyGuardrail`.
    Bedrock(BedrockGuardrail),
    /// Built-in detection of personal data.
    Pii(PiiGuardrail),
    /// Deny (or allow-only) regular expressions.
    Regex(RegexGuardrail),
}

/// `kind = "bedrock"`: which Bedrock guardrail to apply, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BedrockGuardrail {
    /// The guardrail's id or ARN.
    pub guardrail_id: String,
    /// A version number, or `DRAFT`.
    pub version: String,
    /// The AWS region the guardrail lives in.
    pub region: String,
    /// A `bedrock` credential to sign with; without one, the edge's AWS identity.
    #[serde(default)]
    pub credential_id: Option<String>,
    /// Replaces the service endpoint (a VPC endpoint); empty for Bedrock's own.
    #[serde(default)]
    pub endpoint: String,
}

/// What a local guardrail does with what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace each finding with a typed placeholder (`[EMAIL]`) and let the request go on.
    Mask,
    /// Refuse the request (or cut the answer).
    Block,
}

/// The personal data the `pii` guardrail knows without configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiEntity {
    Email,
    Phone,
    /// Card numbers that pass the Luhn check.
    CreditCard,
    /// IBANs that pass the mod-97 check.
    Iban,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKey,
}

impl PiiEntity {
    /// Every built-in entity, the default when a `pii` guardrail names none.
    pub const ALL: [PiiEntity; 6] = [
        PiiEntity::Email,
        PiiEntity::Phone,
        PiiEntity::CreditCard,
        PiiEntity::Iban,
        PiiEntity::IpAddress,
        PiiEntity::AwsAccessKey,
    ];

    /// The placeholder a masked finding becomes, without brackets.
    pub fn label(self) -> &'static str {
        match self {
            PiiEntity::Email => "EMAIL",
            PiiEntity::Phone => "PHONE",
            PiiEntity::CreditCard => "CREDIT_CARD",
            PiiEntity::Iban => "IBAN",
            PiiEntity::IpAddress => "IP_ADDRESS",
            PiiEntity::AwsAccessKey => "AWS_ACCESS_KEY",
        }
    }
}

/// `kind = "pii"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiGuardrail {
    /// Built-in entities to find; empty means all of them.
    #[serde(default)]
    pub entities: Vec<PiiEntity>,
    /// The organisation's own entities, by regular expression.
    #[serde(default)]
    pub custom: Vec<CustomEntity>,
    pub action: Action,
}

/// A named entity of the organisation's own (`EMPLOYEE_ID` = `E\d{6}`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEntity {
    /// Upper-case letters, digits and `_`: it becomes the placeholder `[NAME]`.
    pub name: String,
    pub pattern: String,
}

/// `kind = "regex"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexGuardrail {
    /// Text matching any of these is blocked (or the match masked as `[REDACTED]`).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// When set, text must match at least one of these, or it is blocked.
    #[serde(default)]
    pub allow_only: Vec<String>,
    pub action: Action,
}

impl GuardrailSpec {
    /// The behaviour `guardrail` describes, or why it describes none (a message for its admin).
    pub fn of(guardrail: &Guardrail) -> Result<GuardrailSpec, String> {
        let config = guardrail.config.clone();
        let spec = match guardrail.kind.as_str() {
            "bedrock" => GuardrailSpec::Bedrock(read(config, "bedrock")?),
            "pii" => GuardrailSpec::Pii(read(config, "pii")?),
            "regex" => GuardrailSpec::Regex(read(config, "regex")?),
            other => {
                return Err(format!(
                    "guardrail kind {other:?} is not one Tollgate enforces (bedrock, pii, regex)"
                ));
            }
        };
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        match self {
            GuardrailSpec::Bedrock(b) => {
                if b.guardrail_id.trim().is_empty() || b.guardrail_id.len() > 2048 {
                    return Err("bedrock guardrail needs guardrail_id (an id or ARN)".into());
                }
                let version_ok =
                    b.version == "DRAFT" || b.version.chars().all(|c| c.is_ascii_digit());
                if b.version.is_empty() || b.version.len() > 16 || !version_ok {
                    return Err(format!(
                        "bedrock guardrail version must be a number or DRAFT, got {:?}",
                        b.version
                    ));
                }
                let region_ok = b
                    .region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if b.region.is_empty() || b.region.len() > 32 || !region_ok {
                    return Err(format!(
                        "bedrock guardrail needs region (for example us-east-1), got {:?}",
                        b.region
                    ));
                }
                Ok(())
            }
            GuardrailSpec::Pii(p) => {
                if p.custom.len() > MAX_PATTERNS {
                    return Err(format!("at most {MAX_PATTERNS} custom entities"));
                }
                for entity in &p.custom {
                    let name_ok = entity
                        .name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                    if entity.name.is_empty() || entity.name.len() > 32 || !name_ok {
                        return Err(format!(
                            "custom entity name {:?} must be 1 to 32 upper-case letters, digits \
                             or _ (it becomes the placeholder)",
                            entity.name
                        ));
                    }
                    compile(&entity.pattern)?;
                }
                Ok(())
            }
            GuardrailSpec::Regex(r) => {
                if r.patterns.is_empty() && r.allow_only.is_empty() {
                    return Err("regex guardrail needs patterns (or allow_only)".into());
                }
                if r.patterns.len() + r.allow_only.len() > MAX_PATTERNS {
                    return Err(format!("at most {MAX_PATTERNS} patterns"));
                }
                if r.patterns.is_empty() && r.action == Action::Mask {
                    return Err(
                        "action mask needs patterns to mask; allow_only can only block".into(),
                    );
                }
                for pattern in r.patterns.iter().chain(&r.allow_only) {
                    compile(pattern)?;
                }
                Ok(())
            }
        }
    }

    /// The built-in entities a `pii` guardrail finds (all of them when it names none).
    pub fn entities(&self) -> Vec<PiiEntity> {
        match self {
            GuardrailSpec::Pii(p) if p.entities.is_empty() => PiiEntity::ALL.to_vec(),
            GuardrailSpec::Pii(p) => {
                let mut entities = p.entities.clone();
                entities.sort();
                entities.dedup();
                entities
            }
            _ => Vec::new(),
        }
    }
}

/// `pattern` compiled with the size limit every role uses.
pub fn compile(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() {
        return Err("a pattern must not be empty".into());
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("pattern {pattern:?} is not a valid regular expression: {e}"))
}

fn read<T: for<'de> Deserialize<'de>>(config: serde_json::Value, kind: &str) -> Result<T, String> {
    serde_json::from_value(config).map_err(|e| format!("{kind} guardrail config: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::guardrail;

    #[test]
    fn each_kind_reads_its_config() {
        let pii = guardrail(
            "pii",
            json!({"entities": ["email", "iban"], "action": "mask"}),
        );
        let GuardrailSpec::Pii(p) = GuardrailSpec::of(&pii).unwrap() else {
            panic!("not pii")
        };
        assert_eq!(p.entities, vec![PiiEntity::Email, PiiEntity::Iban]);
        let all = guardrail("pii", json!({"action": "block"}));
        assert_eq!(GuardrailSpec::of(&all).unwrap().entities().len(), 6);
        let regex = guardrail("regex", json!({"patterns": ["secret"], "action": "block"}));
        assert!(matches!(
            GuardrailSpec::of(&regex),
            Ok(GuardrailSpec::Regex(_))
        ));
        let bedrock = guardrail(
            "bedrock",
            json!({"guardrail_id": "gr-1", "version": "DRAFT", "region": "us-east-1"}),
        );
        assert!(matches!(
            GuardrailSpec::of(&bedrock),
            Ok(GuardrailSpec::Bedrock(_))
        ));
    }

    #[test]
    fn misconfigurations_are_refused_with_a_reason() {
        let cases = [
            guardrail("keywords", json!({})),
            guardrail("pii", json!({"action": "mask", "entitys": ["email"]})),
            guardrail("pii", json!({"entities": ["ssn"], "action": "mask"})),
            guardrail("pii", json!({"action": "warn"})),
            guardrail(
                "pii",
                json!({"custom": [{"name": "emp id", "pattern": "E\\d+"}], "action": "mask"}),
            ),
            guardrail("regex", json!({"patterns": ["("], "action": "block"})),
            guardrail("regex", json!({"patterns": [], "action": "block"})),
            guardrail("regex", json!({"allow_only": ["ok"], "action": "mask"})),
            guardrail(
                "regex",
                json!({"patterns": ["a{1000}{1000}"], "action": "block"}),
            ),
            guardrail(
                "bedrock",
                json!({"guardrail_id": "g", "region": "us-east-1"}),
            ),
            guardrail(
                "bedrock",
                json!({"guardrail_id": "g", "version": "v1", "region": "us-east-1"}),
            ),
            guardrail(
                "bedrock",
                json!({"guardrail_id": "g", "version": "1", "region": "US EAST"}),
            ),
        ];
        for case in cases {
            let refused = GuardrailSpec::of(&case);
            assert!(refused.is_err(), "{case:?} was accepted");
        }
    }
}
