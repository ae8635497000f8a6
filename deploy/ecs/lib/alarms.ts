// Alarms on what an operator must hear about: an edge serving on stale policy, usage events
// dropped, server errors and slow answers. Request figures come from the edges' JSON access
// lines (metric filters); gauges and counters from /metrics through the agent beside each edge.

import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

const NAMESPACE = 'Tollgate';

export interface AlarmsProps {
  readonly logGroup: logs.ILogGroup;
  readonly email: string;
  readonly key: kms.IKey;
}

/** The alarm topic and the edges' alarms. */
export class Alarms extends Construct {
  constructor(scope: Construct, id: string, props: AlarmsProps) {
    super(scope, id);
    const topic = new sns.Topic(this, 'Topic', { masterKey: props.key, enforceSSL: true });
    topic.addSubscription(new subscriptions.EmailSubscription(props.email));
    const notify = new actions.SnsAction(topic);

    const access = '$.target = "tollgate::access"';
    const filter = (name: string, pattern: string, value: string, unit?: cloudwatch.Unit) =>
      new logs.MetricFilter(this, name, {
        logGroup: props.logGroup,
        filterPattern: logs.FilterPattern.literal(`{ ${pattern} }`),
        metricNamespace: NAMESPACE,
        metricName: name,
        metricValue: value,
        unit,
      });
    const requests = filter('requests', access, '1').metric({ statistic: 'Sum', period: Duration.minutes(1) });
    const errors = filter('requests_5xx', `${access} && $.status >= 500`, '1').metric({ statistic: 'Sum', period: Duration.minutes(1) });
    const latency = filter('latency_ms', `${access} && $.status < 400`, '$.latency_ms', cloudwatch.Unit.MILLISECONDS);
    const gauge = (name: string, statistic: string) =>
      new cloudwatch.Metric({ namespace: NAMESPACE, metricName: name, dimensionsMap: { Service: 'edge' }, statistic, period: Duration.minutes(1) });

    const alarms = [
      new cloudwatch.Alarm(this, 'PolicyStale', {
        alarmDescription: 'An edge has not heard from the control plane for 5 minutes: it serves on the policy it has.',
        metric: gauge('tollgate_policy_staleness_seconds', 'Maximum'),
        threshold: 300,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      }),
      new cloudwatch.Alarm(this, 'UsageDropped', {
        alarmDescription: 'An edge dropped usage events: its buffer overflowed while NATS was away.',
        metric: gauge('tollgate_usage_events_dropped_total', 'Maximum'),
        threshold: 0,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
      new cloudwatch.Alarm(this, 'ServerErrors', {
        alarmDescription: 'More than 5 % of requests answered 5xx for 5 minutes.',
        metric: new cloudwatch.MathExpression({
          expression: 'IF(requests > 0, 100 * errors / requests, 0)',
          usingMetrics: { errors, requests },
          period: Duration.minutes(1),
        }),
        threshold: 5,
        evaluationPeriods: 5,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
      new cloudwatch.Alarm(this, 'SlowAnswers', {
        alarmDescription: 'p99 of successful requests over 30 s for 10 minutes (providers included).',
        metric: latency.metric({ statistic: 'p99', period: Duration.minutes(1) }),
        threshold: 30000,
        evaluationPeriods: 10,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    ];
    for (const alarm of alarms) {
      alarm.addAlarmAction(notify);
      alarm.addOkAction(notify);
    }
  }
}
