//! The built-in guardrails, run in the edge with no call out: `pii` (personal data, with
//! checksums where the format has one) and `regex` (deny and allow-only patterns).

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;
use tollgate_policy::guardrail::{
    Action, GuardrailSpec, PiiEntity, PiiGuardrail, RegexGuardrail, compile,
};

/// A finding replaced when masking: bytes `start..end` of the text become `[label]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Finding {
    start: usize,
    end: usize,
    label: String,
}

/// What a local guardrail concluded about some texts.
#[derive(Debug, PartialEq, Eq)]
pub enum Conclusion {
    Clean,
    /// The texts with every finding replaced by its placeholder.
    Masked(Vec<String>),
    /// Why, in words that name what was found, never the text itself.
    Blocked(String),
}

/// A compiled `pii` or `regex` guardrail.
#[derive(Debug)]
pub struct Detector {
    action: Action,
    entities: Vec<PiiEntity>,
    /// Custom entities (label, pattern) and, for `regex`, deny patterns labelled `REDACTED`.
    patterns: Vec<(String, Regex)>,
    /// For `regex`: at least one must match, or the text is blocked.
    allow_only: Vec<Regex>,
}

impl Detector {
    /// The detector for a `pii` or `regex` spec; `None` for a remote kind.
    pub fn compile(spec: &GuardrailSpec) -> Result<Option<Detector>, String> {
        match spec {
            GuardrailSpec::Pii(PiiGuardrail { custom, action, .. }) => Ok(Some(Detector {
                action: *action,
                entities: spec.entities(),
                patterns: custom
                    .iter()
                    .map(|c| Ok((c.name.clone(), compile(&c.pattern)?)))
                    .collect::<Result<_, String>>()?,
                allow_only: Vec::new(),
            })),
            GuardrailSpec::Regex(RegexGuardrail {
                patterns,
                allow_only,
                action,
            }) => Ok(Some(Detector {
                action: *action,
                entities: Vec::new(),
                patterns: patterns
                    .iter()
                    .map(|p| Ok(("REDACTED".to_owned(), compile(p)?)))
                    .collect::<Result<_, String>>()?,
                allow_only: allow_only
                    .iter()
                    .map(|p| compile(p))
                    .collect::<Result<_, String>>()?,
            })),
            GuardrailSpec::Bedrock(_) => Ok(None),
        }
    }

    /// Runs over `texts` (the parts of one request or answer).
    pub fn check(&self, texts: &[String]) -> Conclusion {
        if !self.allow_only.is_empty()
            && !texts
                .iter()
                .any(|t| self.allow_only.iter().any(|p| p.is_match(t)))
        {
            return Conclusion::Blocked("the text matches none of the allowed patterns".into());
        }
        let found: Vec<Vec<Finding>> = texts.iter().map(|t| self.findings(t)).collect();
        if found.iter().all(Vec::is_empty) {
            return Conclusion::Clean;
        }
        match self.action {
            Action::Block => {
                let mut labels: Vec<&str> = found.iter().flatten().map(|f| &*f.label).collect();
                labels.sort_unstable();
                labels.dedup();
                Conclusion::Blocked(format!("found {}", labels.join(", ")))
            }
            Action::Mask => Conclusion::Masked(
                texts
                    .iter()
                    .zip(&found)
                    .map(|(text, findings)| masked(text, findings))
                    .collect(),
            ),
        }
    }

    /// Non-overlapping findings in `text`, in order; where two overlap, the earlier (then the
    /// longer) wins.
    fn findings(&self, text: &str) -> Vec<Finding> {
        let mut all = Vec::new();
        for &entity in &self.entities {
            find_entity(entity, text, &mut all);
        }
        for (label, pattern) in &self.patterns {
            all.extend(
                pattern
                    .find_iter(text)
                    .filter(|m| !m.is_empty())
                    .map(|m| Finding {
                        start: m.start(),
                        end: m.end(),
                        label: label.clone(),
                    }),
            );
        }
        all.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut kept: Vec<Finding> = Vec::with_capacity(all.len());
        for finding in all {
            if kept.last().is_none_or(|last| finding.start >= last.end) {
                kept.push(finding);
            }
        }
        kept
    }
}

fn masked(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.start]);
        out.push('[');
        out.push_str(&f.label);
        out.push(']');
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

macro_rules! pattern {
    ($name:ident, $re:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($re).expect("built-in pattern compiles"));
    };
}

pattern!(
    EMAIL,
    r"(?i)\b[a-z0-9._%+-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}\b"
);
// Dialled internationally, with an area code in brackets, the North American 3-3-4 shape, or
// a national number with a trunk 0 in groups; the digit count decides the rest. Bare digit runs
// and dates are not phone numbers.
pattern!(
    PHONE,
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}\b|\b\d{3}[-. ]\d{3}[-. ]\d{4}\b|\b0\d{1,4}(?:[ -]\d{2,4}){2,4}\b"
);
pattern!(CARD, r"\b\d(?:[ -]?\d){12,18}\b");
pattern!(IBAN, r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b");
pattern!(
    IPV4,
    r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
);
pattern!(IPV6, r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}");
pattern!(AWS_KEY, r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b");

fn find_entity(entity: PiiEntity, text: &str, into: &mut Vec<Finding>) {
    let label = entity.label();
    let mut push = |start: usize, end: usize| {
        into.push(Finding {
            start,
            end,
            label: label.to_owned(),
        });
    };
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
    match entity {
        PiiEntity::Email => EMAIL.find_iter(text).for_each(|m| push(m.start(), m.end())),
        PiiEntity::CreditCard => CARD
            .find_iter(text)
            .filter(|m| luhn(m.as_str()))
            .for_each(|m| push(m.start(), m.end())),
        PiiEntity::Iban => IBAN
            .find_iter(text)
            .filter(|m| iban_checks(m.as_str()))
            .for_each(|m| push(m.start(), m.end())),
        PiiEntity::IpAddress => {
            IPV4.find_iter(text).for_each(|m| push(m.start(), m.end()));
            IPV6.find_iter(text)
                .filter(|m| m.as_str().parse::<Ipv6Addr>().is_ok())
                .for_each(|m| push(m.start(), m.end()));
        }
        PiiEntity::AwsAccessKey => AWS_KEY
            .find_iter(text)
            .for_each(|m| push(m.start(), m.end())),
        PiiEntity::Phone => PHONE
            .find_iter(text)
            .filter(|m| (9..=15).contains(&digits(m.as_str())))
            .for_each(|m| push(m.start(), m.end())),
    }
}

/// The Luhn checksum of the digits in `s`.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (1, doubled) if doubled > 9 => doubled - 9,
            (1, doubled) => doubled,
            _ => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 mod-97 check of an IBAN (spaces ignored).
fn iban_checks(s: &str) -> bool {
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut remainder: u32 = 0;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let width = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * width + value) % 97;
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tollgate_policy::testing::guardrail;

    use super::*;

    fn detector(kind: &str, config: serde_json::Value) -> Detector {
        Detector::compile(&GuardrailSpec::of(&guardrail(kind, config)).unwrap())
            .unwrap()
            .unwrap()
    }

    fn mask(text: &str) -> String {
        let pii = detector("pii", json!({"action": "mask"}));
        match pii.check(&[text.to_owned()]) {
            Conclusion::Masked(texts) => texts[0].clone(),
            Conclusion::Clean => text.to_owned(),
            Conclusion::Blocked(why) => panic!("blocked: {why}"),
        }
    }

    #[test]
    fn each_entity_is_masked_with_its_placeholder() {
        let cases = [
            (
                "write to jane.doe@example.co.uk now",
                "write to [EMAIL] now",
            ),
            ("call +44 20 7946 0958 today", "call [PHONE] today"),
            ("call (555) 123-4567", "call [PHONE]"),
            ("card 4111 1111 1111 1111 ok", "card [CREDIT_CARD] ok"),
            ("card 4111-1111-1111-1111", "card [CREDIT_CARD]"),
            ("iban DE89 3704 0044 0532 0130 00 ok", "iban [IBAN] ok"),
            ("iban GB82WEST12345698765432", "iban [IBAN]"),
            ("host 192.168.10.254 up", "host [IP_ADDRESS] up"),
            ("host 2001:db8::8a2e:370:7334 up", "host [IP_ADDRESS] up"),
            ("key AKIAIOSFODNN7EXAMPLE here", "key [AWS_ACCESS_KEY] here"),
        ];
        for (text, want) in cases {
            assert_eq!(mask(text), want, "{text}");
        }
    }

    #[test]
    fn look_alikes_are_left_alone() {
        for text in [
            // Fails the Luhn check.
            "order 4111 1111 1111 1112",
            // Fails mod-97.
            "ref GB82WEST12345698765433",
            "on 2024-01-15 and 01-15-2024",
            "version 1.2.3.4567 of 300.1.1.1",
            "it costs 1234567 units",
            "meet at 12:30:45",
            "no personal data here",
        ] {
            assert_eq!(mask(text), text, "{text}");
        }
    }

    #[test]
    fn block_names_what_was_found_not_the_text() {
        let pii = detector("pii", json!({"entities": ["email"], "action": "block"}));
        let texts = ["mail bob@example.com".to_owned()];
        let Conclusion::Blocked(why) = pii.check(&texts) else {
            panic!("not blocked")
        };
        assert_eq!(why, "found EMAIL");
        assert!(!why.contains("bob"));
    }

    #[test]
    fn custom_entities_and_regex_patterns() {
        let custom = json!({"entities": [], "custom": [{"name": "EMPLOYEE_ID", "pattern": "E\\d{6}"}],
            "action": "mask"});
        let deny = json!({"patterns": ["(?i)project\\s+falcon"], "action": "mask"});
        let allow_only = json!({"allow_only": ["(?i)invoice"], "action": "block"});
        let masked = |text: &str| Conclusion::Masked(vec![text.into()]);
        let cases = [
            (
                "pii",
                custom,
                "ask E123456 about x@y.io",
                masked("ask [EMPLOYEE_ID] about [EMAIL]"),
            ),
            (
                "regex",
                deny,
                "about Project  Falcon today",
                masked("about [REDACTED] today"),
            ),
            (
                "regex",
                allow_only.clone(),
                "a question about the invoice",
                Conclusion::Clean,
            ),
        ];
        for (kind, settings, text, want) in cases {
            assert_eq!(
                detector(kind, settings).check(&[text.into()]),
                want,
                "{text}"
            );
        }
        let allow = detector("regex", allow_only);
        assert!(matches!(
            allow.check(&["write me a poem".into()]),
            Conclusion::Blocked(_)
        ));
    }
}
