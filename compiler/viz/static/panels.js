// The side panels: pass timeline, node inspector, changes list and charts. All model strings
// go in through el()/textContent.

function passDiffCounts(app, stageIndex) {
  if (stageIndex <= 0) return null;
  const diff = app.model.diff(stageIndex - 1, stageIndex);
  return { added: diff.added.size, removed: diff.removed.size, changed: diff.changed.size };
}

function buildTimeline(app, list) {
  clear(list);
  const model = app.model;
  const maxSeconds = Math.max(1e-9, ...model.passes.map((record) => record.seconds || 0));
  const input = el('li', 'pass-row input-row');
  input.dataset.stage = '0';
  append(input, el('span', 'pass-index', '0'), el('span', 'pass-label', 'input graph'),
    el('span', 'pass-nodes', formatNumber(model.records[0].ids.length) + ' nodes'));
  input.addEventListener('click', (event) => app.pickStage(0, event));
  list.appendChild(input);
  model.passes.forEach((record, index) => {
    const row = el('li', 'pass-row' + (record.modified ? ' modified' : ' unchanged'));
    row.dataset.stage = String(record.stage);
    row.dataset.pass = record.name;
    const counts = passDiffCounts(app, record.stage);
    const head = el('div', 'pass-head');
    append(head, el('span', 'pass-index', String(index + 1)), el('span', 'pass-label', record.label));
    if (counts && (counts.added || counts.removed || counts.changed)) {
      const badges = el('span', 'pass-badges');
      if (counts.added) badges.appendChild(el('span', 'badge added', '+' + counts.added));
      if (counts.removed) badges.appendChild(el('span', 'badge removed', '−' + counts.removed));
      if (counts.changed) badges.appendChild(el('span', 'badge changed', '~' + counts.changed));
      head.appendChild(badges);
    }
    const timing = el('div', 'pass-timing');
    const bar = el('span', 'time-bar');
    bar.style.width = Math.max(2, 100 * (record.seconds || 0) / maxSeconds) + '%';
    append(timing, el('span', 'time-track', null), el('span', 'pass-time', formatSeconds(record.seconds)),
      el('span', 'pass-nodes', record.nodes_before + ' → ' + record.nodes_after + ' nodes'));
    timing.firstChild.appendChild(bar);
    row.appendChild(head);
    row.appendChild(timing);
    const counters = Object.entries(record.counters || {}).filter(([, value]) => value);
    if (counters.length) {
      const line = el('div', 'pass-counters');
      for (const [key, value] of counters) line.appendChild(el('span', 'counter', key + '=' + formatValue(value)));
      row.appendChild(line);
    }
    if (!record.modified) row.appendChild(el('div', 'pass-note', 'no change'));
    if (record.note) row.appendChild(el('div', 'pass-note', record.note));
    row.title = 'click: show the graph after ' + record.label + ' · shift+click: compare with it';
    row.addEventListener('click', (event) => app.pickStage(record.stage, event));
    list.appendChild(row);
  });
}

function updateTimeline(app, list) {
  for (const row of list.children) {
    const stage = Number(row.dataset.stage);
    row.classList.toggle('active', stage === app.state.stage);
    row.classList.toggle('compare', app.state.compare !== null && stage === app.state.compare);
    row.classList.toggle('hidden', app.state.hideUnchanged && row.classList.contains('unchanged'));
  }
}

function section(title, ...children) {
  const box = el('section', 'inspector-section');
  box.appendChild(el('h3', null, title));
  append(box, ...children);
  return box;
}

function keyValueTable(rows) {
  const table = el('table', 'kv');
  for (const [key, value] of rows) {
    if (value === undefined || value === null || value === '') continue;
    const tr = el('tr');
    append(tr, el('th', null, key), el('td', null, formatValue(value)));
    table.appendChild(tr);
  }
  return table;
}

function valueRows(app, record, names, title) {
  const table = el('table', 'values');
  const head = el('tr');
  append(head, el('th', null, title), el('th', null, 'type'));
  table.appendChild(head);
  const weights = [];
  names.forEach((name) => {
    const entry = record.values.get(name);
    const tr = el('tr');
    append(tr, el('td', 'value-name', name || '(absent)'), el('td', 'value-type', shapeText(entry)));
    table.appendChild(tr);
    if (entry && entry.weight) weights.push([name, entry.weight]);
  });
  const parts = [table];
  for (const [name, stats] of weights) {
    parts.push(el('div', 'weight-title', 'weight ' + name));
    parts.push(keyValueTable([['shape', stats.shape ? '[' + stats.shape.join(', ') + ']' : ''], ['dtype', stats.dtype], ['bytes', formatBytes(stats.bytes)],
      ['min', stats.min], ['max', stats.max], ['mean', stats.mean], ['std', stats.std],
      ['sparsity', typeof stats.sparsity === 'number' ? (100 * stats.sparsity).toFixed(2) + ' %' : undefined]]));
  }
  return parts;
}

function sectionRows(app, name) {
  const data = app.model.sectionIndex.get(name);
  if (!data) return [];
  const parts = [];
  const titles = { quantization: 'Quantization', asic: 'Simulator (ASIC)', pruning: 'Pruning', tensorrt: 'TensorRT' };
  for (const [key, rows] of Object.entries(data)) {
    for (const row of rows) {
      const fields = Object.entries(row).filter(([field]) => field !== 'node' && field !== '_list');
      const box = section(titles[key] + (row._list !== 'layers' ? ' (' + row._list + ')' : ''), keyValueTable(fields));
      box.classList.add('section-' + key);
      parts.push(box);
    }
  }
  return parts;
}

function renderInspector(app, container) {
  clear(container);
  const selection = app.state.selection;
  if (!selection) {
    container.appendChild(el('p', 'muted', 'Click a node (or search for one) to inspect it. Double-click a collapsed group to expand it.'));
    container.appendChild(stageSummary(app));
    return;
  }
  if (selection.path !== undefined) { renderGroup(app, container, selection.path, selection.pane); return; }
  const stage = selection.pane === 'a' ? app.state.compare : app.state.stage;
  const record = app.model.records[stage];
  const vid = record ? record.uidToVid.get(selection.uid) : undefined;
  if (vid === undefined) { container.appendChild(el('p', 'muted', 'This node is not in the shown stage.')); return; }
  const node = app.model.nodes[vid];
  const status = app.statusOf(selection.uid, selection.pane);
  const title = el('div', 'inspector-title');
  append(title, el('span', 'op', node.op), node.domain ? el('span', 'domain', node.domain) : null,
    status ? el('span', 'badge ' + status, status) : null,
    node.fused_from ? el('span', 'badge fused', 'fused') : null);
  container.appendChild(title);
  container.appendChild(el('div', 'node-name', node.name || '(unnamed)'));
  container.appendChild(keyValueTable([['uid', node.uid], ['scope', node.scope], ['created by rule', node.rule],
    ['doc', node.doc], ['subgraph nodes', node.subgraph_nodes]]));
  container.appendChild(scopeChips(app, node.scope));
  if (node.fused_from && node.fused_from.length) container.appendChild(fusedFrom(app, node));
  const attributes = Object.entries(node.attributes || {});
  if (attributes.length) container.appendChild(section('Attributes', keyValueTable(attributes)));
  container.appendChild(section('Inputs', ...valueRows(app, record, node.inputs || [], 'input')));
  container.appendChild(section('Outputs', ...valueRows(app, record, node.outputs || [], 'output')));
  append(container, ...sectionRows(app, node.name));
  const meta = Object.entries(node.meta || {});
  if (meta.length) container.appendChild(section('Metadata', keyValueTable(meta)));
  container.appendChild(historyList(app, node.uid));
}

function scopeChips(app, scope) {
  const box = el('div', 'scope-chips');
  if (!scope) return box;
  const parts = scope.split('/');
  parts.forEach((part, i) => {
    const path = parts.slice(0, i + 1).join('/');
    const chip = el('button', 'chip', part);
    chip.title = 'collapse scope ' + path;
    chip.addEventListener('click', () => app.collapse(path));
    box.appendChild(chip);
  });
  return box;
}

function fusedFrom(app, node) {
  const list = el('ul', 'fused-list');
  for (const name of node.fused_from) {
    const item = el('li', 'link', name);
    item.addEventListener('click', () => app.showOriginal(name));
    list.appendChild(item);
  }
  const note = el('p', 'muted', 'Original nodes (shown in pane A when comparing with an earlier stage):');
  return section('Fused from ' + node.fused_from.length + ' nodes', note, list);
}

function historyList(app, uid) {
  const list = el('ol', 'history');
  const rows = app.model.history(uid);
  rows.forEach((row, i) => {
    const stage = app.model.stages[row.stage];
    let text;
    if (row.vid === undefined) text = 'removed by ' + stage.label;
    else if (i === 0 && row.stage === 0) text = 'in the input graph';
    else if (i === 0 || rows[i - 1].vid === undefined) text = 'created by ' + stage.label;
    else text = 'changed by ' + stage.label + ' (' + app.model.changedFields(rows[i - 1].vid, row.vid).join(', ') + ')';
    const item = el('li', 'link', text);
    item.addEventListener('click', () => app.selectStage(row.vid === undefined ? Math.max(0, row.stage - 1) : row.stage));
    list.appendChild(item);
  });
  return section('History', list);
}

function renderGroup(app, container, path, pane) {
  const counts = new Map();
  const view = (pane === 'a' ? app.canvasA : app.canvasB).view;
  const item = view.items.find((candidate) => candidate.kind === 'group' && candidate.path === path);
  const uids = item ? item.uids : [];
  const record = app.model.records[pane === 'a' ? app.state.compare : app.state.stage];
  for (const uid of uids) {
    const op = app.model.nodes[record.uidToVid.get(uid)].op;
    counts.set(op, (counts.get(op) || 0) + 1);
  }
  const title = el('div', 'inspector-title');
  append(title, el('span', 'op', 'scope'), el('span', 'badge', uids.length + ' nodes'));
  const expand = el('button', 'button', 'Expand');
  expand.addEventListener('click', () => app.expand(path));
  append(container, title, el('div', 'node-name', path), expand);
  const rows = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([op, n]) => ({ label: op, value: n }));
  container.appendChild(barChart(rows, { title: 'ops in this scope' }));
}

function stageSummary(app) {
  const stage = app.state.stage;
  const record = app.model.records[stage];
  const meta = app.model.meta;
  return section('Stage ' + stage + ': ' + app.model.stages[stage].label, keyValueTable([
    ['nodes', record.ids.length], ['graph inputs', record.inputs.join(', ')], ['graph outputs', record.outputs.join(', ')],
    ['model', meta.model], ['pipeline', meta.pipeline], ['doc', record.doc]]));
}

function renderChanges(app, container) {
  clear(container);
  const before = app.baseStage();
  if (before === null) { container.appendChild(el('p', 'muted', 'The input graph: nothing to compare with.')); return; }
  const diff = app.model.diff(before, app.state.stage);
  const recordA = app.model.records[before], recordB = app.model.records[app.state.stage];
  container.appendChild(el('p', 'muted', 'From stage ' + before + ' (' + app.model.stages[before].label + ') to stage ' +
    app.state.stage + ' (' + app.model.stages[app.state.stage].label + ')'));
  const groups = [['added', diff.added, recordB, 'b'], ['removed', diff.removed, recordA, 'a'], ['changed', diff.changed, recordB, 'b']];
  for (const [kind, uids, record, pane] of groups) {
    const list = el('ul', 'change-list ' + kind);
    let shown = 0;
    for (const uid of uids) {
      if (shown++ >= 500) { list.appendChild(el('li', 'muted', '… ' + (uids.size - 500) + ' more')); break; }
      const node = app.model.nodes[record.uidToVid.get(uid)];
      const item = el('li', 'link');
      append(item, el('span', 'op', node.op), ' ', el('span', 'name', node.name || '#' + uid));
      if (kind === 'changed') item.appendChild(el('span', 'muted', ' (' + app.model.changedFields(recordA.uidToVid.get(uid), record.uidToVid.get(uid)).join(', ') + ')'));
      item.addEventListener('click', () => app.selectNode(uid, pane, true));
      list.appendChild(item);
    }
    container.appendChild(section(kind[0].toUpperCase() + kind.slice(1) + ' (' + uids.size + ')', list));
  }
}

function opHistogram(model, stage) {
  const counts = new Map();
  for (const vid of model.records[stage].ids) {
    const node = model.nodes[vid];
    const key = node.domain && node.domain !== 'ai.onnx' ? node.domain + '.' + node.op : node.op;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return counts;
}

function renderCharts(app, container) {
  clear(container);
  const model = app.model, stage = app.state.stage, before = app.baseStage();
  const now = opHistogram(model, stage), then = before === null ? new Map() : opHistogram(model, before);
  const ops = [...new Set([...now.keys(), ...then.keys()])].sort((a, b) => (now.get(b) || 0) - (now.get(a) || 0) || a.localeCompare(b));
  const rows = ops.slice(0, 40).map((op) => {
    const n = now.get(op) || 0, m = then.get(op) || 0;
    const delta = n - m;
    return { label: op, value: n, reference: before === null ? null : m, color: delta > 0 ? '#2fa862' : delta < 0 ? '#d65a5f' : '#5b8def',
      caption: String(n) + (delta ? ' (' + (delta > 0 ? '+' : '−') + Math.abs(delta) + ')' : '') };
  });
  container.appendChild(barChart(rows, { title: 'Op types at stage ' + stage + (before !== null ? ' (tick: stage ' + before + ')' : ''), label: 140 }));
  const timeRows = model.passes.filter((record) => !app.state.hideUnchanged || record.modified).map((record) => ({
    label: record.label, value: (record.seconds || 0) * 1000, caption: formatSeconds(record.seconds), stage: record.stage,
    color: record.stage === stage ? '#1f5fd6' : record.modified ? '#7aa2f7' : '#b8c2d3' }));
  container.appendChild(barChart(timeRows, { title: 'Time per pass', unit: ' ms', label: 140, onClick: (row) => app.selectStage(row.stage) }));
  const byNode = (row) => app.selectNodeByName(String(row.node));
  const quantization = model.sections.quantization;
  if (quantization && Array.isArray(quantization.layers) && quantization.layers.length) {
    const quantRows = quantization.layers.map((layer) => ({ label: String(layer.node) + (layer.kind ? ' (' + layer.kind[0] + ')' : ''), node: layer.node,
      value: typeof layer.sqnr_db === 'number' ? layer.sqnr_db : 0, color: sqnrColor(layer.sqnr_db),
      caption: typeof layer.sqnr_db === 'number' ? layer.sqnr_db.toFixed(1) + ' dB' : 'n/a',
      title: String(layer.tensor || '') + ' max abs error ' + formatValue(layer.max_abs_error) }));
    container.appendChild(barChart(quantRows, { title: 'Quantization SQNR per layer (' + (quantization.mode || '') + ', higher is better)', label: 150, onClick: byNode }));
    const errorRows = quantization.layers.filter((layer) => typeof layer.max_abs_error === 'number').map((layer) => ({
      label: String(layer.node), node: layer.node, value: layer.max_abs_error, color: '#d65a5f' }));
    if (errorRows.length) container.appendChild(barChart(errorRows, { title: 'Quantization max abs error per layer', label: 150, onClick: byNode }));
  }
  const asic = model.sections.asic;
  if (asic && Array.isArray(asic.layers) && asic.layers.length) {
    const cycleRows = asic.layers.map((layer) => ({ label: String(layer.node), node: layer.node, value: Number(layer.cycles) || 0,
      color: layer.kind === 'array' ? '#8a6cf0' : '#4fb3bf', title: 'utilization ' + formatValue(layer.utilization) }));
    container.appendChild(barChart(cycleRows, { title: 'Simulator cycles per layer', label: 150, onClick: byNode }));
  }
  const pruning = model.sections.pruning;
  if (pruning && Array.isArray(pruning.layers) && pruning.layers.length) {
    const pruneRows = pruning.layers.map((layer) => ({ label: String(layer.node), node: layer.node, value: 100 * (Number(layer.sparsity) || 0), unit: '%', caption: (100 * (Number(layer.sparsity) || 0)).toFixed(1) + ' %', color: '#c98a2b' }));
    container.appendChild(barChart(pruneRows, { title: 'Pruned sparsity per layer', label: 150, onClick: byNode }));
  }
}
