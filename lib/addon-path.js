'use strict';

// Where the native addon was loaded from, so that a worker can load the same
// file directly instead of running binding.js's platform detection again:
// the primary finds it after loading, the worker's bootstrap sets it from its
// configuration before anything requires ./native.
module.exports = { value: undefined };
