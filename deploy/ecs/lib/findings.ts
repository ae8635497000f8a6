// What the checkers may not flag, each at the resource it concerns and with its reason:
// cdk-nag (AwsSolutions) runs on every stack as a validation plugin and fails synth on any finding
// not acknowledged here; checkov (deploy/validate) reads its skips from the templates' resource
// metadata, so that a skip without a reason cannot exist.

import { App, CfnResource, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { IConstruct } from 'constructs';

/** Runs the AwsSolutions pack on every stack of `app`. */
export function checkWithNag(app: App) {
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
}

/** Acknowledges the AwsSolutions finding `rule` on `construct`, for `reason`. */
export function acknowledge(construct: IConstruct, rule: string, reason: string) {
  Validations.of(construct).acknowledge({ id: `AwsSolutions-${rule}`, reason });
}

/** Skips the checkov check `id` on the resource of `construct`, for `reason`. */
export function skipCheckov(construct: IConstruct, id: string, reason: string) {
  const resource = (construct instanceof CfnResource ? construct : construct.node.defaultChild) as CfnResource;
  const existing = (resource.getMetadata('checkov') as { skip: { id: string; comment: string }[] } | undefined)?.skip ?? [];
  resource.addMetadata('checkov', { skip: [...existing, { id, comment: reason }] });
}

/** The reasons shared by several sites. */
export const REASONS = {
  environment:
    'Only settings that are not secret are plain environment values (addresses, names, ports, the NATS config that names its passwords as variables); every secret is an ECS secret from Secrets Manager, and tests/deploy_manifests.rs fails on a secret-looking plain name.',
  rotation:
    'Generated once and read by NATS and the roles at start; rotating means a new value and a rolling restart (deploy/README.md), which an automatic rotation Lambda cannot do in step with the NATS cluster.',
  logBucket:
    'This bucket receives access logs; logging its own accesses would need another bucket for the same purpose.',
  ecrToken:
    'ecr:GetAuthorizationToken has no resource-level permission; pulls are limited to the one repository by the statement beside it.',
};
