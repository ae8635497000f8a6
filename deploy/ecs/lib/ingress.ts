// The way in: an application load balancer with TLS in front of the edges, autoscaled on CPU and
// on requests per task. Who may reach it depends on the access option:
//   global   — internet-facing, but only CloudFront's origin-facing addresses (managed prefix
//              list) reach it; WAF runs on CloudFront (see global.ts).
//   regional — internet-facing, with a regional WAF web ACL on the load balancer.
//   private  — internal, in private subnets, reachable only from the named networks.

import { Duration } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { EDGE_PORT } from './roles';
import { Sizing } from './settings';
import { acknowledge } from './findings';
import { managedRules } from './waf';

/** Who may reach the load balancer. */
export type Access =
  | { kind: 'global'; cloudFrontPrefixListId: string }
  | { kind: 'regional' }
  | { kind: 'private'; inboundCidrs: string[] };

export interface IngressProps {
  readonly vpc: ec2.IVpc;
  readonly access: Access;
  readonly certificateArn: string;
  readonly edges: ecs.FargateService;
  readonly edgeSecurityGroup: ec2.ISecurityGroup;
  readonly sizing: Sizing;
  readonly accessLogs: s3.IBucket;
}

/** The load balancer and the edges' autoscaling. */
export class Ingress extends Construct {
  readonly loadBalancer: elbv2.ApplicationLoadBalancer;

  constructor(scope: Construct, id: string, props: IngressProps) {
    super(scope, id);
    const internetFacing = props.access.kind !== 'private';
    const group = new ec2.SecurityGroup(this, 'Callers', {
      vpc: props.vpc,
      description: `Tollgate load balancer (${props.access.kind})`,
      allowAllOutbound: false,
    });
    switch (props.access.kind) {
      case 'global':
        group.addIngressRule(ec2.Peer.prefixList(props.access.cloudFrontPrefixListId), ec2.Port.tcp(443), 'CloudFront origin-facing addresses only');
        break;
      case 'regional':
        group.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'callers on the internet, through WAF');
        acknowledge(group, 'EC23', 'The regional option serves callers on the internet: TLS only, AWS WAF on the load balancer, a virtual key on every request.');
        break;
      case 'private':
        for (const cidr of props.access.inboundCidrs) {
          group.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), `calling network ${cidr}`);
        }
        break;
    }
    group.addEgressRule(props.edgeSecurityGroup, ec2.Port.tcp(EDGE_PORT), 'the edges');
    props.edgeSecurityGroup.connections.allowFrom(group, ec2.Port.tcp(EDGE_PORT), 'the load balancer');

    this.loadBalancer = new elbv2.ApplicationLoadBalancer(this, 'LoadBalancer', {
      vpc: props.vpc,
      internetFacing,
      securityGroup: group,
      vpcSubnets: { subnetType: internetFacing ? ec2.SubnetType.PUBLIC : ec2.SubnetType.PRIVATE_WITH_EGRESS },
      dropInvalidHeaderFields: true,
      deletionProtection: true,
      // Streams may pause between chunks for as long as the edge's first-byte timeout.
      idleTimeout: Duration.seconds(120),
    });
    this.loadBalancer.logAccessLogs(props.accessLogs, 'alb');

    const listener = this.loadBalancer.addListener('Https', {
      port: 443,
      protocol: elbv2.ApplicationProtocol.HTTPS,
      certificates: [elbv2.ListenerCertificate.fromArn(props.certificateArn)],
      sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
      open: false,
    });
    const targets = listener.addTargets('Edges', {
      port: EDGE_PORT,
      protocol: elbv2.ApplicationProtocol.HTTP,
      targets: [props.edges.loadBalancerTarget({ containerName: 'tollgate', containerPort: EDGE_PORT })],
      // A new edge takes traffic only once it has loaded policy.
      healthCheck: {
        path: '/health/ready',
        healthyHttpCodes: '200',
        interval: Duration.seconds(10),
        timeout: Duration.seconds(5),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 2,
      },
      deregistrationDelay: Duration.seconds(60),
    });

    const scaling = props.edges.autoScaleTaskCount({
      minCapacity: props.sizing.edgeMinTasks,
      maxCapacity: props.sizing.edgeMaxTasks,
    });
    scaling.scaleOnCpuUtilization('Cpu', {
      targetUtilizationPercent: 60,
      scaleInCooldown: Duration.minutes(5),
      scaleOutCooldown: Duration.seconds(60),
    });
    scaling.scaleOnRequestCount('Requests', {
      requestsPerTarget: props.sizing.edgeRequestsPerTask * 60,
      targetGroup: targets,
      scaleInCooldown: Duration.minutes(5),
      scaleOutCooldown: Duration.seconds(60),
    });

    if (props.access.kind === 'regional') {
      const acl = new wafv2.CfnWebACL(this, 'Firewall', {
        scope: 'REGIONAL',
        defaultAction: { allow: {} },
        visibilityConfig: { cloudWatchMetricsEnabled: true, metricName: 'tollgate-regional', sampledRequestsEnabled: true },
        rules: managedRules(),
      });
      new wafv2.CfnWebACLAssociation(this, 'FirewallOnLoadBalancer', {
        resourceArn: this.loadBalancer.loadBalancerArn,
        webAclArn: acl.attrArn,
      });
    }
  }
}
