// ESM resolve hook of rcluster/register for Node versions without
// module.registerHooks() (Node 20): `import cluster from 'node:cluster'`
// (or 'cluster') resolves to rcluster's index.mjs, except inside rcluster.

import { fileURLToPath } from 'node:url';
import path from 'node:path';

let target = null;
let own = null;

export function initialize(data) {
  target = data.target;
  own = data.own;
}

function isOwn(parentURL) {
  if (typeof parentURL !== 'string' || !parentURL.startsWith(own)) return false;
  try {
    const file = fileURLToPath(parentURL);
    const root = fileURLToPath(own);
    return parentURL === target || file === path.join(root, 'index.js') ||
      file.startsWith(path.join(root, 'lib') + path.sep);
  } catch {
    return false;
  }
}

export async function resolve(specifier, context, nextResolve) {
  if ((specifier === 'cluster' || specifier === 'node:cluster') && !isOwn(context.parentURL)) {
    return { url: target, format: 'module', shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
