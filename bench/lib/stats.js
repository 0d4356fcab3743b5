'use strict';

// Small statistics and a markdown table for the benchmark summaries.

function median(values) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

const fmt = (n) => (Number.isFinite(n) ? Math.round(n).toString() : '-');

// rows: { kind, runs, median, min, max, errors, failed }; ratios are taken
// against the row whose kind is `reference`.
function formatTable(rows, reference) {
  const ref = rows.find((r) => r.kind === reference && r.runs);
  const lines = [
    `| variant | runs | median req/s | min | max | spread | errors | vs ${reference} |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    if (!r.runs) {
      lines.push(`| ${r.kind} | 0 | failed | - | - | - | - | - |`);
      continue;
    }
    const spread = r.runs > 1 ? `${(((r.max - r.min) / r.median) * 100).toFixed(1)}%` : '-';
    const ratio = ref ? (r.median / ref.median).toFixed(2) : '-';
    lines.push(
      `| ${r.kind} | ${r.runs} | ${fmt(r.median)} | ${fmt(r.min)} | ${fmt(r.max)} | ${spread} | ${r.errors} | ${ratio} |`
    );
  }
  const failed = rows.filter((r) => r.failed);
  if (failed.length) {
    lines.push('');
    for (const r of failed) lines.push(`${r.kind} failed: ${r.failed}`);
  }
  return lines.join('\n');
}

module.exports = { median, formatTable };
