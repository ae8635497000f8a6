// Tollgate's three roles as Fargate services: one image, the role as its command, every setting
// an environment value and every secret an ECS secret (never a plain value). Health checks ask
// the role's real endpoint through `tollgate health` (the image has no shell and no curl).

import { Duration, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { acknowledge, REASONS } from './findings';
import { Settings } from './settings';

export const EDGE_PORT = 4000;
const ADMIN_PORT = 50051;
const USAGE_PORT = 50052;
const USAGE_HTTP_PORT = 4001;

/** What every role's container shares. */
export interface RoleContext {
  readonly settings: Settings;
  /** The tollgate image, from the region's ECR repository (the execution role may pull it). */
  readonly image: ecs.ContainerImage;
  readonly cluster: ecs.Cluster;
  readonly logGroup: logs.ILogGroup;
  /** Encrypts the region's logs. */
  readonly storageKey: kms.IKey;
  readonly natsUrl: string;
  readonly natsSecurityGroup: ec2.ISecurityGroup;
  /** The KMS key that wraps provider credentials' data keys. */
  readonly credentialKey: kms.IKey;
  /** Its key id, the same in every region (a multi-Region key): the control plane records it
   * in each credential's envelope and edges find the key by it. */
  readonly credentialKeyId: string;
  /** `policy_public_key`, `policy_signing_key`, `status_public_key`, `status_signing_key`. */
  readonly signingKeys: secretsmanager.ISecret;
  /** `edge_token`, `aggregator_token`, when the operator has issued them. */
  readonly serviceTokens?: secretsmanager.ISecret;
  /** `http://control-plane.<namespace>:50051`, in the home region only. */
  readonly controlPlaneUrl?: string;
}

function field(secret: secretsmanager.ISecret, name: string): ecs.Secret {
  return ecs.Secret.fromSecretsManager(secret, name);
}

function task(scope: Construct, id: string, cpu: number, memoryMiB: number): ecs.FargateTaskDefinition {
  const definition = new ecs.FargateTaskDefinition(scope, id, {
    cpu,
    memoryLimitMiB: memoryMiB,
    runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.ARM64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
  });
  acknowledge(definition, 'ECS2', REASONS.environment);
  acknowledge(definition.obtainExecutionRole(), 'IAM5[Resource::*]', REASONS.ecrToken);
  return definition;
}

/** The tollgate container for `role`, with its health check and the settings every role reads. */
function tollgate(
  context: RoleContext,
  definition: ecs.FargateTaskDefinition,
  role: 'edge' | 'control-plane' | 'aggregator',
  natsUser: string,
  natsPassword: secretsmanager.ISecret,
  environment: Record<string, string>,
  secrets: Record<string, ecs.Secret>,
  ports: number[],
): ecs.ContainerDefinition {
  return definition.addContainer('tollgate', {
    image: context.image,
    command: [role],
    readonlyRootFilesystem: true,
    user: '65532:65532',
    environment: {
      TOLLGATE_ROLE: role,
      TOLLGATE_LOG_FORMAT: 'json',
      TOLLGATE_UI_ADDR: 'off',
      NATS_URL: context.natsUrl,
      NATS_USER: natsUser,
      // Every stream on all three JetStream nodes of the home region.
      TOLLGATE_BUS_REPLICAS: '3',
      ...environment,
    },
    secrets: {
      NATS_PASSWORD: ecs.Secret.fromSecretsManager(natsPassword),
      ...secrets,
    },
    portMappings: ports.map((containerPort) => ({ containerPort })),
    healthCheck: {
      command: ['CMD', '/usr/local/bin/tollgate', 'health'],
      interval: Duration.seconds(10),
      timeout: Duration.seconds(3),
      retries: 3,
      startPeriod: Duration.seconds(30),
    },
    // SIGTERM: stop accepting, finish streams, flush buffered usage (deploy/README.md).
    stopTimeout: Duration.seconds(60),
    logging: ecs.LogDrivers.awsLogs({ logGroup: context.logGroup, streamPrefix: role }),
  });
}

/** The PostgreSQL connection of a role: `DATABASE_URL=postgres://` and the libpq variables,
 * the user and password from the cluster's generated secret. */
function database(cluster: rds.DatabaseCluster, name: string) {
  const secret = cluster.secret!;
  return {
    environment: {
      DATABASE_URL: 'postgres://',
      PGHOST: cluster.clusterEndpoint.hostname,
      PGPORT: '5432',
      PGDATABASE: name,
      PGSSLMODE: 'require',
    },
    secrets: { PGUSER: field(secret, 'username'), PGPASSWORD: field(secret, 'password') },
  };
}

function service(scope: Construct, id: string, context: RoleContext, definition: ecs.FargateTaskDefinition, count: number, name: string, extra: ec2.ISecurityGroup[]) {
  const group = new ec2.SecurityGroup(scope, `${id}Tasks`, {
    vpc: context.cluster.vpc,
    description: `Tollgate ${name} tasks`,
    allowAllOutbound: true,
  });
  const fargate = new ecs.FargateService(scope, id, {
    cluster: context.cluster,
    taskDefinition: definition,
    desiredCount: count,
    minHealthyPercent: 100,
    maxHealthyPercent: 200,
    securityGroups: [group, context.natsSecurityGroup, ...extra],
    vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
    cloudMapOptions: { name },
    circuitBreaker: { rollback: true },
  });
  return { service: fargate, securityGroup: group };
}

/** What the control plane and the aggregator each get: their database, the bootstrap admin
 * token, their NATS password. */
export interface DatabaseRoleProps {
  readonly database: rds.DatabaseCluster;
  readonly adminToken: secretsmanager.ISecret;
  readonly natsPassword: secretsmanager.ISecret;
}

/** The policy log's writer and the admin API. */
export function controlPlane(scope: Construct, context: RoleContext, props: DatabaseRoleProps) {
  const definition = task(scope, 'ControlPlaneTask', 512, 1024);
  const db = database(props.database, 'tollgate');
  tollgate(context, definition, 'control-plane', 'control-plane', props.natsPassword, {
    TOLLGATE_ADMIN_ADDR: `0.0.0.0:${ADMIN_PORT}`,
    TOLLGATE_KMS_KEY_ID: context.credentialKeyId,
    ...db.environment,
  }, {
    TOLLGATE_ADMIN_TOKEN: ecs.Secret.fromSecretsManager(props.adminToken),
    TOLLGATE_POLICY_SIGNING_KEY: field(context.signingKeys, 'policy_signing_key'),
    TOLLGATE_STATUS_PUBLIC_KEY: field(context.signingKeys, 'status_public_key'),
    ...db.secrets,
  }, [ADMIN_PORT]);
  // It seals credentials (Encrypt) and re-wraps them when the key rotates (Decrypt).
  context.credentialKey.grant(definition.taskRole, 'kms:Encrypt', 'kms:Decrypt');
  const made = service(scope, 'ControlPlane', context, definition, context.settings.sizing.controlPlaneTasks, 'control-plane', []);
  props.database.connections.allowDefaultPortFrom(made.securityGroup, 'the control plane');
  return made;
}

/** The usage ledger, budgets, alerts and rollups. */
export function aggregator(scope: Construct, context: RoleContext, props: DatabaseRoleProps) {
  const definition = task(scope, 'AggregatorTask', 512, 1024);
  const db = database(props.database, 'tollgate_usage');
  tollgate(context, definition, 'aggregator', 'aggregator', props.natsPassword, {
    TOLLGATE_USAGE_ADDR: `0.0.0.0:${USAGE_PORT}`,
    TOLLGATE_USAGE_HTTP_ADDR: `0.0.0.0:${USAGE_HTTP_PORT}`,
    ...db.environment,
    ...snapshotEnvironment(context),
  }, {
    TOLLGATE_ADMIN_TOKEN: ecs.Secret.fromSecretsManager(props.adminToken),
    TOLLGATE_STATUS_SIGNING_KEY: field(context.signingKeys, 'status_signing_key'),
    TOLLGATE_POLICY_PUBLIC_KEY: field(context.signingKeys, 'policy_public_key'),
    ...(context.serviceTokens ? { TOLLGATE_EDGE_TOKEN: field(context.serviceTokens, 'aggregator_token') } : {}),
    ...db.secrets,
  }, [USAGE_PORT, USAGE_HTTP_PORT]);
  const made = service(scope, 'Aggregator', context, definition, context.settings.sizing.aggregatorTasks, 'aggregator', []);
  props.database.connections.allowDefaultPortFrom(made.securityGroup, 'the aggregator');
  return made;
}

/** Where edges and the aggregator fetch snapshots: only with a service token to fetch them. */
function snapshotEnvironment(context: RoleContext): Record<string, string> {
  return context.serviceTokens && context.controlPlaneUrl ? { TOLLGATE_CONTROL_PLANE_URL: context.controlPlaneUrl } : {};
}

export interface EdgeProps {
  readonly natsPassword: secretsmanager.ISecret;
  readonly region: string;
}

/** The edges, with a CloudWatch agent beside each that turns `/metrics` into CloudWatch metrics
 * (staleness, dropped usage) through embedded-metric-format log lines. */
export function edges(scope: Construct, context: RoleContext, props: EdgeProps) {
  const sizing = context.settings.sizing;
  const definition = task(scope, 'EdgeTask', sizing.edgeCpu, sizing.edgeMemoryMiB);
  const container = tollgate(context, definition, 'edge', 'edge', props.natsPassword, {
    TOLLGATE_EDGE_ADDR: `0.0.0.0:${EDGE_PORT}`,
    TOLLGATE_REGION: props.region,
    TOLLGATE_KMS_KEY_ID: context.credentialKeyId,
    ...snapshotEnvironment(context),
  }, {
    TOLLGATE_POLICY_PUBLIC_KEY: field(context.signingKeys, 'policy_public_key'),
    ...(context.serviceTokens ? { TOLLGATE_EDGE_TOKEN: field(context.serviceTokens, 'edge_token') } : {}),
  }, [EDGE_PORT]);
  context.credentialKey.grant(definition.taskRole, 'kms:Decrypt');
  invokeModels(definition.taskRole, context.settings);
  metricsAgent(scope, definition, context, container);
  return service(scope, 'Edge', context, definition, sizing.edgeMinTasks, 'edge', []);
}

/** Exactly the models and endpoints the settings name, with the invoke actions only. */
function invokeModels(role: iam.IRole, settings: Settings) {
  const stack = Stack.of(role);
  if (settings.bedrockModels.length > 0) {
    const resources = settings.bedrockModels.flatMap((id) => bedrockResources(stack, id));
    role.addToPrincipalPolicy(new iam.PolicyStatement({
      sid: 'InvokeNamedBedrockModels',
      actions: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
      resources,
    }));
    for (const resource of resources.filter((arn) => arn.includes('*'))) {
      acknowledge(role, `IAM5[Resource::${resource}]`, 'A model the settings name (bedrockModels): its versions or the regions a cross-region profile routes to, and no other model.');
    }
  }
  if (settings.sagemakerEndpoints.length > 0) {
    role.addToPrincipalPolicy(new iam.PolicyStatement({
      sid: 'InvokeNamedSageMakerEndpoints',
      actions: ['sagemaker:InvokeEndpoint', 'sagemaker:InvokeEndpointWithResponseStream'],
      resources: settings.sagemakerEndpoints.map(
        (name) => `arn:${stack.partition}:sagemaker:${stack.region}:${stack.account}:endpoint/${name.toLowerCase()}`,
      ),
    }));
  }
}

const GEOGRAPHIES = /^(us|eu|apac|us-gov|global)\./;

/** What invoking the Bedrock model or inference profile `id` needs: a model in this region, or
 * a cross-region profile (`us.…`, `eu.…`, `global.…`) and its model in the regions it routes to. */
function bedrockResources(stack: Stack, id: string): string[] {
  const bedrock = `arn:${stack.partition}:bedrock`;
  if (!GEOGRAPHIES.test(id)) return [`${bedrock}:${stack.region}::foundation-model/${id}`];
  return [
    `${bedrock}:${stack.region}:${stack.account}:inference-profile/${id}`,
    `${bedrock}:*::foundation-model/${id.replace(GEOGRAPHIES, '')}`,
  ];
}

/** A CloudWatch agent sidecar scraping the edge's `/metrics` into the `Tollgate` namespace. It
 * writes embedded-metric-format lines to its own log group, so its role needs no
 * `cloudwatch:PutMetricData` on every resource. */
function metricsAgent(scope: Construct, definition: ecs.FargateTaskDefinition, context: RoleContext, edge: ecs.ContainerDefinition) {
  const group = new logs.LogGroup(scope, 'EdgeMetrics', {
    retention: logs.RetentionDays.ONE_MONTH,
    encryptionKey: context.storageKey,
  });
  const prometheus = [
    'global: {scrape_interval: 30s, scrape_timeout: 10s}',
    'scrape_configs:',
    '  - job_name: tollgate',
    `    static_configs: [{targets: ["127.0.0.1:${EDGE_PORT}"], labels: {Service: edge}}]`,
  ].join('\n');
  const agent = {
    logs: {
      metrics_collected: {
        prometheus: {
          log_group_name: group.logGroupName,
          prometheus_config_path: 'env:PROMETHEUS_CONFIG_CONTENT',
          emf_processor: {
            metric_namespace: 'Tollgate',
            metric_declaration: [{
              source_labels: ['job'],
              label_matcher: '^tollgate$',
              dimensions: [['Service']],
              metric_selectors: [
                '^tollgate_policy_staleness_seconds$',
                '^tollgate_usage_events_dropped_total$',
                '^tollgate_usage_events_buffered$',
              ],
            }],
          },
        },
      },
    },
  };
  const sidecar = definition.addContainer('metrics', {
    image: ecs.ContainerImage.fromRegistry(context.settings.cloudwatchAgentImage),
    essential: false,
    readonlyRootFilesystem: false,
    user: '0:0',
    environment: {
      CW_CONFIG_CONTENT: JSON.stringify(agent),
      PROMETHEUS_CONFIG_CONTENT: prometheus,
    },
    memoryReservationMiB: 64,
    logging: ecs.LogDrivers.awsLogs({ logGroup: context.logGroup, streamPrefix: 'metrics' }),
  });
  sidecar.addContainerDependencies({ container: edge, condition: ecs.ContainerDependencyCondition.START });
  group.grantWrite(definition.taskRole);
  definition.taskRole.addToPrincipalPolicy(new iam.PolicyStatement({
    sid: 'DescribeOwnMetricsLogGroup',
    actions: ['logs:DescribeLogStreams'],
    resources: [group.logGroupArn],
  }));
}
