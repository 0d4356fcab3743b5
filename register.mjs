// `node --import rcluster/register app.mjs`: the same hook as
// `node -r rcluster/register` (see register.js), for people who preload ESM.
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./register.js');
