// A stock Express 4 backend for mtlsc's trap and differential tests.
//
// node app.js PORT ROUTES_JSON   (or env MTLSC_BACKEND_PORT / MTLSC_BACKEND_ROUTES)
// ROUTES_JSON lists route specs in mtlsc's location form: "= /healthz" (exact), "/partner/"
// (prefix ending in "/"), "/static" (segment prefix), "/" (everything). Each gets one handler,
// registered the way an Express developer writes it, with Express's DEFAULT settings
// (case-insensitive, non-strict routing): Express's own path rules decide which handler runs.
// Handlers are registered most specific first (exact, then longer prefixes), as developers do,
// because Express runs the first route that matches.
'use strict';

const express = require('express');

const CATCH_ALL = 'catch-all';

function canonical(spec) {
  spec = spec.trim();
  if (spec.startsWith('=')) return '= ' + spec.slice(1).trim();
  return spec.startsWith('^~') ? spec.slice(2).trim() : spec;
}

function expressPaths(spec) {
  if (spec === CATCH_ALL || spec === '/') return ['*'];
  if (spec.startsWith('= ')) return [spec.slice(2)];
  if (spec.endsWith('/')) return [spec + '*'];
  return [spec, spec + '/*']; // a segment: /static, /static/...
}

function specificity(spec) {
  if (spec === CATCH_ALL) return [3, 0];
  if (spec.startsWith('= ')) return [0, -spec.length];
  return [spec === '/' ? 2 : 1, -spec.length];
}

function main(argv) {
  const port = Number(argv[2] || process.env.MTLSC_BACKEND_PORT);
  const specs = JSON.parse(argv[3] || process.env.MTLSC_BACKEND_ROUTES || '[]').map(canonical);
  if (!specs.includes('/')) specs.push(CATCH_ALL);
  specs.sort((a, b) => {
    const [x, y] = [specificity(a), specificity(b)];
    return x[0] - y[0] || x[1] - y[1];
  });
  const app = express();
  for (const spec of specs) {
    app.all(expressPaths(spec), (req, res) => {
      const headers = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
      res.json({ framework: 'express', handler: spec, target: req.originalUrl, path: req.path, headers });
    });
  }
  app.listen(port, '127.0.0.1');
}

main(process.argv);
