// The VPC a region runs in: a new one (two zones, public subnets for the load balancer and the
// NAT gateways, private subnets for every task and database, flow logs on) or an existing one
// named by id, imported without a lookup so that synth stays offline.

import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { RemovalPolicy } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { RegionSettings } from './settings';

/** The region's VPC, new or imported. */
export function vpcFor(scope: Construct, region: RegionSettings, natGateways: number, logKey: kms.IKey): ec2.IVpc {
  if (region.vpc) {
    return ec2.Vpc.fromVpcAttributes(scope, 'Vpc', {
      vpcId: region.vpc.vpcId,
      vpcCidrBlock: region.vpc.vpcCidr,
      availabilityZones: region.vpc.availabilityZones,
      privateSubnetIds: region.vpc.privateSubnetIds,
      privateSubnetRouteTableIds: region.vpc.privateSubnetRouteTableIds,
      publicSubnetIds: region.vpc.publicSubnetIds,
    });
  }
  const flowLogs = new logs.LogGroup(scope, 'VpcFlowLogs', {
    retention: logs.RetentionDays.ONE_MONTH,
    encryptionKey: logKey,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  return new ec2.Vpc(scope, 'Vpc', {
    ipAddresses: ec2.IpAddresses.cidr(region.vpcCidr ?? '10.0.0.0/16'),
    // The stack names its zones (RegionStack): no lookup.
    maxAzs: 2,
    natGateways,
    subnetConfiguration: [
      { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24, mapPublicIpOnLaunch: false },
      { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
    ],
    flowLogs: {
      all: { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs), trafficType: ec2.FlowLogTrafficType.ALL },
    },
  });
}
