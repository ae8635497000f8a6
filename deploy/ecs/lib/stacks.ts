// The stacks: a home region (databases, NATS, control plane, aggregator, edges), edge-only
// regions joined to its NATS through leaf nodes, and the global option's CloudFront front door.

import { CfnOutput, Duration, Fn, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as cloudfront from 'aws-cdk-lib/aws-cloudfront';
import * as origins from 'aws-cdk-lib/aws-cloudfront-origins';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as route53 from 'aws-cdk-lib/aws-route53';
import * as targets from 'aws-cdk-lib/aws-route53-targets';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { Alarms } from './alarms';
import { Access, Ingress } from './ingress';
import { NatsCluster, NatsLeaves, natsPassword } from './nats';
import { vpcFor } from './network';
import { aggregator, controlPlane, edges, RoleContext } from './roles';
import { GlobalSettings, RegionSettings, Settings } from './settings';
import { acknowledge, REASONS, skipCheckov } from './findings';
import { managedRules } from './waf';

const NAMESPACE = 'tollgate.internal';

/** What a region's stack shares between its parts. */
interface Base {
  readonly image: ecs.ContainerImage;
  readonly vpc: ec2.IVpc;
  readonly cluster: ecs.Cluster;
  readonly storageKey: kms.Key;
  readonly logGroup: logs.LogGroup;
  readonly accessLogs: s3.Bucket;
}

/** The VPC, cluster, storage key, log group and access-log bucket of a region. */
function base(scope: Construct, settings: Settings, region: RegionSettings): Base {
  const storageKey = new kms.Key(scope, 'StorageKey', {
    description: 'Tollgate: secrets, databases, logs, the NATS store, alarms',
    enableKeyRotation: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const stack = Stack.of(scope);
  // CloudWatch Logs encrypts this region's log groups with it, and only those of this account.
  storageKey.addToResourcePolicy(new iam.PolicyStatement({
    sid: 'CloudWatchLogsEncryptsThisAccountsLogGroups',
    principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
    actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
    resources: ['*'],
    conditions: {
      ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${stack.partition}:logs:${stack.region}:${stack.account}:log-group:*` },
    },
  }));
  const vpc = vpcFor(scope, region, 2, storageKey);
  const cluster = new ecs.Cluster(scope, 'Cluster', {
    vpc,
    containerInsightsV2: ecs.ContainerInsights.ENHANCED,
    defaultCloudMapNamespace: { name: NAMESPACE, vpc },
  });
  const logGroup = new logs.LogGroup(scope, 'Logs', {
    logGroupName: `/${settings.name}/roles`,
    retention: logs.RetentionDays.THREE_MONTHS,
    encryptionKey: storageKey,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  // Load balancer access logs take S3-managed encryption only.
  const accessLogs = new s3.Bucket(scope, 'AccessLogs', {
    encryption: s3.BucketEncryption.S3_MANAGED,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    enforceSSL: true,
    versioned: true,
    removalPolicy: RemovalPolicy.RETAIN,
    lifecycleRules: [{ expiration: Duration.days(90), noncurrentVersionExpiration: Duration.days(30) }],
  });
  acknowledge(accessLogs, 'S1', REASONS.logBucket);
  skipCheckov(accessLogs, 'CKV_AWS_18', REASONS.logBucket);
  const repository = ecr.Repository.fromRepositoryName(scope, 'Images', settings.imageRepository);
  const image = ecs.ContainerImage.fromEcrRepository(repository, settings.imageTag);
  return { image, vpc, cluster, storageKey, logGroup, accessLogs };
}

/** What every role of a region shares from its base. */
function shared(settings: Settings, b: Base) {
  return { settings, image: b.image, storageKey: b.storageKey, cluster: b.cluster, logGroup: b.logGroup };
}

function postgres(scope: Construct, id: string, b: Base, settings: Settings, databaseName: string): rds.DatabaseCluster {
  const clusterIdentifier = `${settings.name}-${databaseName.replace('_', '-')}`;
  // Made here, so that no log-retention function is needed to bound what RDS exports.
  new logs.LogGroup(scope, `${id}Logs`, {
    logGroupName: `/aws/rds/cluster/${clusterIdentifier}/postgresql`,
    retention: logs.RetentionDays.ONE_MONTH,
    encryptionKey: b.storageKey,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const cluster = new rds.DatabaseCluster(scope, id, {
    clusterIdentifier,
    engine: rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_17_6 }),
    vpc: b.vpc,
    vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
    writer: rds.ClusterInstance.serverlessV2('Writer', { autoMinorVersionUpgrade: true }),
    readers: [rds.ClusterInstance.serverlessV2('Reader', { scaleWithWriter: true, autoMinorVersionUpgrade: true })],
    serverlessV2MinCapacity: settings.sizing.databaseMinAcu,
    serverlessV2MaxCapacity: settings.sizing.databaseMaxAcu,
    defaultDatabaseName: databaseName,
    credentials: rds.Credentials.fromGeneratedSecret('tollgate', { encryptionKey: b.storageKey }),
    storageEncrypted: true,
    storageEncryptionKey: b.storageKey,
    iamAuthentication: true,
    deletionProtection: true,
    backup: { retention: Duration.days(14) },
    cloudwatchLogsExports: ['postgresql'],
    monitoringInterval: Duration.seconds(60),
    removalPolicy: RemovalPolicy.SNAPSHOT,
  });
  acknowledge(cluster, 'IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole]',
    'The role RDS itself assumes to publish enhanced monitoring: AWS\'s policy for it writes to the RDSOSMetrics log group only.');
  acknowledge(cluster, 'SMG4', 'The roles read the database password at start; rotate it with a rolling restart (deploy/README.md), not behind running connection pools.');
  return cluster;
}

function existingSecret(scope: Construct, id: string, name: string) {
  return secretsmanager.Secret.fromSecretNameV2(scope, id, name);
}

export interface HomeStackProps extends StackProps {
  readonly settings: Settings;
  readonly region: RegionSettings;
  readonly access: Access;
  /** Edge-only regions of the global option: their leaf networks and secret replicas. */
  readonly edgeRegions?: RegionSettings[];
  /** The global option's origin name and hosted zone, for this region's latency record. */
  readonly global?: GlobalSettings;
}

/** A stack in one region whose zones are not looked up (synth stays offline): an imported
 * VPC's zones, else the region's first two, chosen by CloudFormation when it deploys. */
class RegionStack extends Stack {
  private readonly zones: string[];

  constructor(scope: Construct, id: string, region: RegionSettings, props: StackProps) {
    super(scope, id, props);
    this.zones = region.vpc?.availabilityZones ?? [0, 1].map((n) => Fn.select(n, Fn.getAzs()));
  }

  override get availabilityZones(): string[] {
    return this.zones;
  }
}

/** A region with everything: the only stack of the regional and private options, the first
 * region of the global option. */
export class HomeStack extends RegionStack {
  constructor(scope: Construct, id: string, props: HomeStackProps) {
    super(scope, id, props.region, props);
    const { settings, region } = props;
    const edgeRegions = props.edgeRegions ?? [];
    const b = base(this, settings, region);

    const credentialKey = new kms.Key(this, 'CredentialKey', {
      description: 'Tollgate: wraps the data key of every provider credential',
      enableKeyRotation: true,
      multiRegion: edgeRegions.length > 0,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    new CfnOutput(this, 'CredentialKeyId', { value: credentialKey.keyId });

    const replicas = edgeRegions.map((r) => r.region);
    const adminToken = new secretsmanager.Secret(this, 'AdminToken', {
      secretName: `${settings.name}/admin-token`,
      description: 'Tollgate bootstrap admin token',
      encryptionKey: b.storageKey,
      generateSecretString: { excludePunctuation: true, passwordLength: 48 },
    });
    acknowledge(adminToken, 'SMG4', 'The bootstrap admin token: rotate it by issuing admin tokens through the admin API and restarting the control plane with a new value (deploy/README.md).');
    const passwords = {
      controlPlane: natsPassword(this, 'NatsControlPlane', `${settings.name}/nats/control-plane`, b.storageKey),
      edge: natsPassword(this, 'NatsEdge', `${settings.name}/nats/edge`, b.storageKey),
      aggregator: natsPassword(this, 'NatsAggregator', `${settings.name}/nats/aggregator`, b.storageKey),
      // Edge regions' leaf nodes read their replica.
      leaf: natsPassword(this, 'NatsLeaf', `${settings.name}/nats/leaf`, b.storageKey, replicas),
    };
    const policyDb = postgres(this, 'PolicyDatabase', b, settings, 'tollgate');
    const ledgerDb = postgres(this, 'LedgerDatabase', b, settings, 'tollgate_usage');

    const nats = settings.externalNatsUrl
      ? externalNats(this, b.vpc, settings.externalNatsUrl)
      : new NatsCluster(this, 'Nats', {
        vpc: b.vpc,
        cluster: b.cluster,
        image: settings.natsImage,
        key: b.storageKey,
        logGroup: b.logGroup,
        namespace: NAMESPACE,
        passwords,
        leafCidrs: edgeRegions.map((r) => r.leafCidr!),
      });
    if (nats instanceof NatsCluster) new CfnOutput(this, 'NatsLeafEndpoint', { value: nats.leafEndpoint });

    const context: RoleContext = {
      ...shared(settings, b),
      natsUrl: nats.url,
      natsSecurityGroup: nats.clientSecurityGroup,
      credentialKey,
      credentialKeyId: credentialKey.keyId,
      signingKeys: existingSecret(this, 'SigningKeys', settings.signingKeysSecret),
      serviceTokens: settings.serviceTokensSecret ? existingSecret(this, 'ServiceTokens', settings.serviceTokensSecret) : undefined,
      controlPlaneUrl: `http://control-plane.${NAMESPACE}:50051`,
    };
    const control = controlPlane(this, context, { database: policyDb, adminToken, natsPassword: passwords.controlPlane });
    const usage = aggregator(this, context, { database: ledgerDb, adminToken, natsPassword: passwords.aggregator });
    const edge = edges(this, context, { natsPassword: passwords.edge, region: region.region });
    // Edges and the aggregator fetch snapshots from the control plane; nothing else reaches it.
    control.securityGroup.addIngressRule(edge.securityGroup, ec2.Port.tcp(50051), 'edges fetch snapshots');
    control.securityGroup.addIngressRule(usage.securityGroup, ec2.Port.tcp(50051), 'the aggregator fetches snapshots');
    for (const cidr of settings.adminCidrs) {
      control.securityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(50051), `the admin API from ${cidr}`);
      usage.securityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(50052), `the usage API from ${cidr}`);
      usage.securityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(4001), `CSV export from ${cidr}`);
    }

    const ingress = new Ingress(this, 'Ingress', {
      vpc: b.vpc,
      access: props.access,
      certificateArn: region.certificateArn,
      edges: edge.service,
      edgeSecurityGroup: edge.securityGroup,
      sizing: settings.sizing,
      accessLogs: b.accessLogs,
    });
    new CfnOutput(this, 'LoadBalancer', { value: ingress.loadBalancer.loadBalancerDnsName });
    if (props.global) latencyRecord(this, props.global, region, ingress);
    new Alarms(this, 'Alarms', { logGroup: b.logGroup, email: settings.alarmEmail, key: b.storageKey });
  }
}

/** A NATS JetStream the operator runs (a cluster on EC2, Synadia Cloud): the stack runs none,
 * and the servers' users take the passwords the stack generated (`<name>/nats/<role>`). */
function externalNats(scope: Construct, vpc: ec2.IVpc, url: string) {
  const clientSecurityGroup = new ec2.SecurityGroup(scope, 'NatsClients', {
    vpc,
    description: 'Tollgate roles that connect to the external NATS',
    allowAllOutbound: true,
  });
  return { url, clientSecurityGroup };
}

/** The region's entry in the global option's latency-routed origin name. */
function latencyRecord(scope: Construct, global: GlobalSettings, region: RegionSettings, ingress: Ingress) {
  const zone = route53.HostedZone.fromHostedZoneAttributes(scope, 'Zone', {
    hostedZoneId: global.hostedZoneId,
    zoneName: global.hostedZoneName,
  });
  new route53.ARecord(scope, 'Origin', {
    zone,
    recordName: global.originDomain,
    target: route53.RecordTarget.fromAlias(new targets.LoadBalancerTarget(ingress.loadBalancer)),
    region: region.region,
    setIdentifier: region.region,
  });
}

export interface EdgeRegionStackProps extends StackProps {
  readonly settings: Settings;
  readonly global: GlobalSettings;
  readonly region: RegionSettings;
  /** The home region's leaf endpoint (its NatsLeafEndpoint output). */
  readonly hub: string;
}

/** An edge-only region of the global option: edges and leaf nodes, policy and usage through the
 * home region's NATS. Its edges follow the policy stream only (no snapshots across regions). */
export class EdgeRegionStack extends RegionStack {
  constructor(scope: Construct, id: string, props: EdgeRegionStackProps) {
    super(scope, id, props.region, props);
    const { settings, region, global } = props;
    const b = base(this, settings, region);
    const home = global.regions[0].region;
    // The home key's replica: the same key id, so the envelopes name it as they are.
    const replica = new kms.CfnReplicaKey(this, 'CredentialKey', {
      primaryKeyArn: `arn:${this.partition}:kms:${home}:${this.account}:key/${global.credentialKeyId}`,
      description: 'Tollgate: replica of the credential key',
      keyPolicy: {
        Version: '2012-10-17',
        Statement: [{
          Sid: 'AccountAdministers',
          Effect: 'Allow',
          Principal: { AWS: `arn:${this.partition}:iam::${this.account}:root` },
          Action: 'kms:*',
          Resource: '*',
        }],
      },
    });
    replica.applyRemovalPolicy(RemovalPolicy.RETAIN);
    const credentialKey = kms.Key.fromKeyArn(this, 'CredentialKeyReplica', replica.attrArn);

    const edgePassword = natsPassword(this, 'NatsEdge', `${settings.name}/nats/edge-${region.region}`, b.storageKey);
    const leaves = new NatsLeaves(this, 'Nats', {
      vpc: b.vpc,
      cluster: b.cluster,
      image: settings.natsImage,
      logGroup: b.logGroup,
      hub: props.hub,
      leafPassword: existingSecret(this, 'NatsLeafReplica', `${settings.name}/nats/leaf`),
      edgePassword,
      namespace: NAMESPACE,
    });
    const context: RoleContext = {
      ...shared(settings, b),
      natsUrl: leaves.url,
      natsSecurityGroup: leaves.clientSecurityGroup,
      credentialKey,
      credentialKeyId: global.credentialKeyId,
      // The operator replicates the signing-key secret here (deploy/README.md).
      signingKeys: existingSecret(this, 'SigningKeys', settings.signingKeysSecret),
    };
    const edge = edges(this, context, { natsPassword: edgePassword, region: region.region });
    const ingress = new Ingress(this, 'Ingress', {
      vpc: b.vpc,
      access: { kind: 'global', cloudFrontPrefixListId: region.cloudFrontPrefixListId! },
      certificateArn: region.certificateArn,
      edges: edge.service,
      edgeSecurityGroup: edge.securityGroup,
      sizing: settings.sizing,
      accessLogs: b.accessLogs,
    });
    latencyRecord(this, global, region, ingress);
    new Alarms(this, 'Alarms', { logGroup: b.logGroup, email: settings.alarmEmail, key: b.storageKey });
  }
}

export interface CdnStackProps extends StackProps {
  readonly global: GlobalSettings;
}

/** The global option's front door, in us-east-1: CloudFront with AWS WAF (and Shield Standard,
 * which every distribution has), the callers' name in Route 53. Nothing is cached. */
export class CdnStack extends Stack {
  constructor(scope: Construct, id: string, props: CdnStackProps) {
    super(scope, id, props);
    const { global } = props;
    const acl = new wafv2.CfnWebACL(this, 'Firewall', {
      scope: 'CLOUDFRONT',
      defaultAction: { allow: {} },
      visibilityConfig: { cloudWatchMetricsEnabled: true, metricName: 'tollgate-global', sampledRequestsEnabled: true },
      rules: managedRules(),
    });
    const logs = new s3.Bucket(this, 'AccessLogs', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      // CloudFront's standard logs are written with an ACL.
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ expiration: Duration.days(90), noncurrentVersionExpiration: Duration.days(30) }],
    });
    acknowledge(logs, 'S1', REASONS.logBucket);
    skipCheckov(logs, 'CKV_AWS_18', REASONS.logBucket);
    const distribution = new cloudfront.Distribution(this, 'Distribution', {
      comment: 'Tollgate',
      domainNames: [global.domain],
      certificate: acm.Certificate.fromCertificateArn(this, 'Certificate', global.cloudFrontCertificateArn),
      minimumProtocolVersion: cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
      httpVersion: cloudfront.HttpVersion.HTTP2_AND_3,
      webAclId: acl.attrArn,
      enableLogging: true,
      logBucket: logs,
      defaultBehavior: {
        origin: new origins.HttpOrigin(global.originDomain, {
          protocolPolicy: cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
          originSslProtocols: [cloudfront.OriginSslPolicy.TLS_V1_2],
          // The longest CloudFront allows without a quota increase: a non-streamed answer
          // that takes longer times out here (deploy/README.md).
          readTimeout: Duration.seconds(60),
          keepaliveTimeout: Duration.seconds(60),
        }),
        viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
        allowedMethods: cloudfront.AllowedMethods.ALLOW_ALL,
        cachePolicy: cloudfront.CachePolicy.CACHING_DISABLED,
        originRequestPolicy: cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
        compress: false,
      },
    });
    acknowledge(distribution, 'CFR1', 'A gateway for the organisation\'s own applications: where they may call from is decided by keys and WAF rules, not by country.');
    const zone = route53.HostedZone.fromHostedZoneAttributes(this, 'Zone', {
      hostedZoneId: global.hostedZoneId,
      zoneName: global.hostedZoneName,
    });
    const target = route53.RecordTarget.fromAlias(new targets.CloudFrontTarget(distribution));
    new route53.ARecord(this, 'Callers', { zone, recordName: global.domain, target });
    new route53.AaaaRecord(this, 'CallersV6', { zone, recordName: global.domain, target });
  }
}
