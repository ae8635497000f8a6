// The CDK app: every stack of every access option the settings describe. Synth is offline (no
// context lookups); deploy/render writes each template to deploy/rendered/ecs/.

import { App } from 'aws-cdk-lib';
import * as path from 'path';
import { checkWithNag } from '../lib/findings';
import { load } from '../lib/settings';
import { CdnStack, EdgeRegionStack, HomeStack } from '../lib/stacks';

const settings = load(process.env.TOLLGATE_CDK_SETTINGS ?? path.join(__dirname, '..', '..', 'tollgate.json'));
const app = new App();
const env = (region: string) => ({ account: settings.account, region });
const name = settings.name;

if (settings.global) {
  const global = settings.global;
  const [home, ...edgeRegions] = global.regions;
  new HomeStack(app, `${name}-global-${home.region}`, {
    env: env(home.region),
    settings,
    region: home,
    access: { kind: 'global', cloudFrontPrefixListId: home.cloudFrontPrefixListId! },
    edgeRegions,
    global,
  });
  for (const region of edgeRegions) {
    new EdgeRegionStack(app, `${name}-global-${region.region}`, {
      env: env(region.region),
      settings,
      global,
      region,
      hub: global.natsLeafEndpoint,
    });
  }
  new CdnStack(app, `${name}-global-cdn`, { env: env('us-east-1'), global });
}
if (settings.regional) {
  new HomeStack(app, `${name}-regional`, {
    env: env(settings.regional.region.region),
    settings,
    region: settings.regional.region,
    access: { kind: 'regional' },
  });
}
if (settings.private) {
  new HomeStack(app, `${name}-private`, {
    env: env(settings.private.region.region),
    settings,
    region: settings.private.region,
    access: { kind: 'private', inboundCidrs: settings.private.inboundCidrs },
  });
}

checkWithNag(app);
