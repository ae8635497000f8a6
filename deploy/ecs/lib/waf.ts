// The web ACL rules shared by the regional (load balancer) and global (CloudFront) options.

import * as wafv2 from 'aws-cdk-lib/aws-wafv2';

function managed(name: string, priority: number, countOnly: string[] = []): wafv2.CfnWebACL.RuleProperty {
  return {
    name,
    priority,
    overrideAction: { none: {} },
    statement: {
      managedRuleGroupStatement: {
        vendorName: 'AWS',
        name,
        ruleActionOverrides: countOnly.map((rule) => ({ name: rule, actionToUse: { count: {} } })),
      },
    },
    visibilityConfig: { cloudWatchMetricsEnabled: true, metricName: name, sampledRequestsEnabled: true },
  };
}

/** AWS's managed rule groups and a per-address rate limit. Prompts are large and full of code
 * and markup, so the common set's body-size and body-XSS rules only count: blocking them would
 * refuse ordinary chat requests (the edge limits body size itself, TOLLGATE_MAX_BODY_BYTES). */
export function managedRules(): wafv2.CfnWebACL.RuleProperty[] {
  return [
    managed('AWSManagedRulesAmazonIpReputationList', 0),
    managed('AWSManagedRulesCommonRuleSet', 1, ['SizeRestrictions_BODY', 'CrossSiteScripting_BODY']),
    managed('AWSManagedRulesKnownBadInputsRuleSet', 2),
    {
      name: 'RateLimitPerAddress',
      priority: 3,
      action: { block: {} },
      statement: { rateBasedStatement: { limit: 20000, aggregateKeyType: 'IP' } },
      visibilityConfig: { cloudWatchMetricsEnabled: true, metricName: 'RateLimitPerAddress', sampledRequestsEnabled: true },
    },
  ];
}
