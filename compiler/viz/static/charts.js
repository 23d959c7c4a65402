// Small SVG charts built with DOM calls (labels are text nodes): horizontal bars with an
// optional reference tick (e.g. the previous stage's count) and a value caption.

function barChart(rows, options) {
  const opts = Object.assign({ width: 330, bar: 14, gap: 4, label: 120, unit: '', color: '#5b8def' }, options || {});
  const wrapper = el('div', 'chart');
  if (opts.title) wrapper.appendChild(el('div', 'chart-title', opts.title));
  if (!rows.length) { wrapper.appendChild(el('div', 'muted', opts.empty || 'no data')); return wrapper; }
  const max = Math.max(1e-12, ...rows.map((row) => Math.max(Math.abs(row.value), Math.abs(row.reference || 0))));
  const plot = opts.width - opts.label - 64;
  const height = rows.length * (opts.bar + opts.gap) + 4;
  const chart = svg('svg', { width: opts.width, height, viewBox: `0 0 ${opts.width} ${height}`, role: 'img' });
  rows.forEach((row, i) => {
    const y = i * (opts.bar + opts.gap) + 2;
    const label = svg('text', { x: opts.label - 6, y: y + opts.bar - 3, 'text-anchor': 'end', class: 'chart-label' });
    label.textContent = row.label.length > 22 ? '…' + row.label.slice(-21) : row.label;
    const title = svg('title');
    title.textContent = row.title || row.label;
    label.appendChild(title);
    const width = Math.max(1, (Math.abs(row.value) / max) * plot);
    const bar = svg('rect', { x: opts.label, y, width, height: opts.bar, rx: 2, fill: row.color || opts.color });
    bar.appendChild(title.cloneNode(true));
    const caption = svg('text', { x: opts.label + width + 4, y: y + opts.bar - 3, class: 'chart-value' });
    caption.textContent = row.caption !== undefined ? row.caption : formatNumber(row.value) + opts.unit;
    append(chart, label, bar, caption);
    if (row.reference !== undefined && row.reference !== null) {
      const rx = opts.label + (Math.abs(row.reference) / max) * plot;
      chart.appendChild(svg('line', { x1: rx, x2: rx, y1: y - 1, y2: y + opts.bar + 1, class: 'chart-reference' }));
    }
    if (opts.onClick) { bar.classList.add('clickable'); bar.addEventListener('click', () => opts.onClick(row)); }
  });
  wrapper.appendChild(chart);
  return wrapper;
}

// Colour from green (good) to red (bad) for a quantization SQNR in dB.
function sqnrColor(db) {
  if (typeof db !== 'number') return '#999';
  const t = Math.max(0, Math.min(1, (db - 10) / 30));
  return `hsl(${Math.round(t * 120)}, 62%, 48%)`;
}
