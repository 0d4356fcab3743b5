#!/usr/bin/env node
'use strict';

// `rcluster [options] app.js [app arguments...]`: see lib/cli.js, or --help.
require('../lib/cli').main(process.argv.slice(2));
