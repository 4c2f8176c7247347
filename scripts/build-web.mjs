// Copies the pinned browser bundles from node_modules into web/assets/vendor/ so the pages
// load them from chatd itself (no CDN). Run after `npm ci` (npm runs it as postinstall).
import { copyFileSync, mkdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const vendor = join(root, 'web', 'assets', 'vendor');
const bundles = [
  ['node_modules/@stomp/stompjs/bundles/stomp.umd.min.js', 'stomp.umd.min.js'],
  ['node_modules/sockjs-client/dist/sockjs.min.js', 'sockjs.min.js'],
];

mkdirSync(vendor, { recursive: true });
for (const [from, to] of bundles) {
  const src = join(root, from);
  if (!existsSync(src)) {
    console.error(`build-web: ${from} is missing; run \`npm ci\` at the repository root first`);
    process.exit(1);
  }
  copyFileSync(src, join(vendor, to));
  console.log(`build-web: ${from} -> web/assets/vendor/${to}`);
}
