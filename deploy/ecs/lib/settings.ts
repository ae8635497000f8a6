// The deployment's settings: one typed object read from a JSON file (deploy/ecs/tollgate.json
// by default, TOLLGATE_CDK_SETTINGS to name another), checked before anything is built so that
// a careless edit fails `cdk synth` with a message instead of producing a broken template.

import * as fs from 'fs';

/** An existing VPC, named by id with its subnets: no lookup, so synth stays offline. */
export interface ImportedVpc {
  readonly vpcId: string;
  readonly vpcCidr: string;
  readonly availabilityZones: string[];
  readonly privateSubnetIds: string[];
  readonly privateSubnetRouteTableIds: string[];
  /** Needed only by options whose load balancer faces the internet. */
  readonly publicSubnetIds?: string[];
}

/** How big each role runs. */
export interface Sizing {
  readonly edgeCpu: number;
  readonly edgeMemoryMiB: number;
  readonly edgeMinTasks: number;
  readonly edgeMaxTasks: number;
  /** Requests per edge task per second the autoscaler aims at (the ALB request-count target). */
  readonly edgeRequestsPerTask: number;
  readonly controlPlaneTasks: number;
  readonly aggregatorTasks: number;
  readonly databaseMinAcu: number;
  readonly databaseMaxAcu: number;
}

/** One region of a deployment. The first region of an option holds the databases, NATS and the
 * control plane; the others run edges only, joined to its NATS through leaf nodes. */
export interface RegionSettings {
  readonly region: string;
  /** ACM certificate (in this region) the region's load balancer serves. */
  readonly certificateArn: string;
  /** A new VPC with this range, or `vpc` to use an existing one. */
  readonly vpcCidr?: string;
  readonly vpc?: ImportedVpc;
  /** Global option only: the region's CloudFront origin-facing managed prefix list. */
  readonly cloudFrontPrefixListId?: string;
  /** Global option, edge regions only: the VPC range its leaf nodes connect from. */
  readonly leafCidr?: string;
}

export interface GlobalSettings {
  /** The name callers use, served by CloudFront. */
  readonly domain: string;
  readonly hostedZoneId: string;
  readonly hostedZoneName: string;
  /** ACM certificate in us-east-1 for `domain` (CloudFront only takes certificates there). */
  readonly cloudFrontCertificateArn: string;
  /** The name CloudFront reaches the regions by: a latency record per region, each region's
   * load balancer certificate covering it. */
  readonly originDomain: string;
  /** The credential key's id (`mrk-…`, the home stack's CredentialKeyId output): edge regions
   * replicate it, so that their edges open credentials without calling another region. */
  readonly credentialKeyId: string;
  /** host:port of the home region's NATS leaf listener (the home stack's NatsLeafEndpoint
   * output), reached from the edge regions over VPC peering or a transit gateway. */
  readonly natsLeafEndpoint: string;
  /** The first region holds the databases, NATS and the control plane. */
  readonly regions: RegionSettings[];
}

export interface RegionalSettings {
  readonly region: RegionSettings;
}

export interface PrivateSettings {
  readonly region: RegionSettings;
  /** The networks allowed to call the gateway, one by one. */
  readonly inboundCidrs: string[];
}

export interface Settings {
  readonly account: string;
  /** Prefix of every stack's name. */
  readonly name: string;
  /** The ECR repository (same name in every region: replicate it) holding the tollgate image
   * (deploy/Dockerfile), and the tag to run. */
  readonly imageRepository: string;
  readonly imageTag: string;
  readonly natsImage: string;
  /** A NATS JetStream you run yourself (`nats://host:4222`, `tls://…`) instead of the stack's
   * three-node cluster on Fargate. */
  readonly externalNatsUrl?: string;
  readonly cloudwatchAgentImage: string;
  /** Bedrock models the edges may invoke (model ids; `*` may end an id, never be one). */
  readonly bedrockModels: string[];
  /** SageMaker endpoints the edges may invoke, by name. */
  readonly sagemakerEndpoints: string[];
  /** Secrets Manager secret (created by the operator, see deploy/README.md) holding the policy
   * and status signing keys from `tollgate keygen`. */
  readonly signingKeysSecret: string;
  /** Secrets Manager secret holding the edge and aggregator service tokens; unset for the first
   * deployment, when no control plane has issued them yet (edges then follow the stream only). */
  readonly serviceTokensSecret?: string;
  /** The networks operators and finance reach the admin API (50051) and the usage API (50052,
   * CSV export on 4001) from; nothing else outside the roles reaches them. */
  readonly adminCidrs: string[];
  /** Where alarms are sent. */
  readonly alarmEmail: string;
  readonly sizing: Sizing;
  readonly global?: GlobalSettings;
  readonly regional?: RegionalSettings;
  readonly private?: PrivateSettings;
}

/** Reads and checks the settings file. */
export function load(path: string): Settings {
  const settings = JSON.parse(fs.readFileSync(path, 'utf8')) as Settings;
  const problems = check(settings);
  if (problems.length > 0) {
    throw new Error(`${path}:\n  ${problems.join('\n  ')}`);
  }
  return settings;
}

const CIDR = /^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/;
const MODEL_ID = /^[a-z0-9][a-z0-9.:-]*\*?$/;

/** Each CIDR of `field` that is not one named network. */
function namedNetworks(field: string, cidrs: string[]): string[] {
  return cidrs.flatMap((cidr) => {
    if (!CIDR.test(cidr)) return [`${field}: "${cidr}" is not a CIDR`];
    if (cidr.endsWith('/0')) return [`${field}: ${cidr} is everyone, not a named network`];
    if (['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'].includes(cidr)) {
      return [`${field}: ${cidr} is a whole private range; name the networks`];
    }
    return [];
  });
}

/** Every problem of the settings, each a sentence an operator can act on. */
export function check(s: Settings): string[] {
  const problems: string[] = [];
  if (!/^\d{12}$/.test(s.account)) problems.push(`account must be 12 digits, not "${s.account}"`);
  for (const id of s.bedrockModels) {
    if (!MODEL_ID.test(id)) {
      problems.push(`bedrockModels: "${id}" is not a model id (a trailing * is allowed, a bare * is not)`);
    }
  }
  for (const name of s.sagemakerEndpoints) {
    if (!/^[a-zA-Z0-9](-*[a-zA-Z0-9])*$/.test(name)) {
      problems.push(`sagemakerEndpoints: "${name}" is not an endpoint name`);
    }
  }
  if (s.externalNatsUrl !== undefined && !/^(nats|tls):\/\/[^\s/]+$/.test(s.externalNatsUrl)) {
    problems.push(`externalNatsUrl: "${s.externalNatsUrl}" is not nats://host:port or tls://host:port`);
  }
  if (s.sizing.edgeMinTasks < 2) problems.push('sizing.edgeMinTasks must be at least 2');
  if (s.sizing.edgeMaxTasks < s.sizing.edgeMinTasks) {
    problems.push('sizing.edgeMaxTasks must be at least sizing.edgeMinTasks');
  }
  const regions: RegionSettings[] = [
    ...(s.global?.regions ?? []),
    ...(s.regional ? [s.regional.region] : []),
    ...(s.private ? [s.private.region] : []),
  ];
  for (const r of regions) {
    if (!r.vpc && !r.vpcCidr) problems.push(`${r.region}: give vpcCidr (a new VPC) or vpc (an existing one)`);
    if (r.vpcCidr && !CIDR.test(r.vpcCidr)) problems.push(`${r.region}: vpcCidr "${r.vpcCidr}" is not a CIDR`);
  }
  if (s.global) {
    if (s.global.regions.length === 0) problems.push('global.regions: name at least one region');
    s.global.regions.forEach((r, n) => {
      if (!r.cloudFrontPrefixListId) problems.push(`global.regions ${r.region}: cloudFrontPrefixListId is required`);
      if (n > 0 && !(r.leafCidr && CIDR.test(r.leafCidr))) {
        problems.push(`global.regions ${r.region}: leafCidr (the range its leaf nodes connect from) is required`);
      }
    });
    if (s.global.regions.length > 1) {
      if (!/^mrk-[0-9a-f]{32}$/.test(s.global.credentialKeyId)) {
        problems.push('global.credentialKeyId: the home stack\'s CredentialKeyId output (mrk-…), needed by edge regions');
      }
      if (!/^[a-zA-Z0-9.-]+:\d+$/.test(s.global.natsLeafEndpoint)) {
        problems.push('global.natsLeafEndpoint: the home stack\'s NatsLeafEndpoint output (host:port), needed by edge regions');
      }
    }
  }
  problems.push(...namedNetworks('adminCidrs', s.adminCidrs));
  if (s.private) {
    if (s.private.inboundCidrs.length === 0) problems.push('private.inboundCidrs: name the calling networks');
    problems.push(...namedNetworks('private.inboundCidrs', s.private.inboundCidrs));
  }
  return problems;
}
