// The report's data in the browser: stages rebuilt from their deltas, diffs between any two
// stages (by stable node uid), name-scope groups, per-node section data, and the drawable
// "views" (boxes and edges) of a stage, expanded or with some scopes collapsed.

const COMPARED = ['op', 'domain', 'inputs', 'outputs', 'attributes'];
const PER_NODE_SECTIONS = ['quantization', 'pruning', 'asic', 'tensorrt'];
const REPEATED = /^(.*?)[._\-]?(\d+)$/;

function nodeWidth(label) {
  return Math.round(Math.min(220, Math.max(72, 7.2 * label.length + 28)));
}

class Model {
  constructor(payload) {
    this.payload = payload;
    this.meta = payload.meta || {};
    this.passes = payload.passes || [];
    this.stages = payload.stages || [];
    this.nodes = payload.nodes || [];
    this.sections = payload.sections || {};
    this.geometry = payload.geometry || { layer_height: 64, node_height: 34 };
    this.records = [];
    this.signatures = new Map();
    this.viewCache = new Map();
    this.buildRecords();
    this.sectionIndex = this.indexSections();
  }

  buildRecords() {
    let order = [];
    let values = new Map();
    this.stages.forEach((stage, index) => {
      if (stage.same_as !== null && stage.same_as !== undefined) {
        this.records[index] = this.records[stage.same_as];
        return;
      }
      const removed = new Set(stage.remove);
      order = order.filter((vid) => !removed.has(vid)).concat(stage.add);
      values = new Map(values);
      for (const name of stage.values_drop) values.delete(name);
      for (const [name, entry] of Object.entries(stage.values_set)) values.set(name, entry);
      const uidToVid = new Map();
      order.forEach((vid) => uidToVid.set(this.nodes[vid].uid, vid));
      this.records[index] = { index, ids: order, inputs: stage.inputs, outputs: stage.outputs, values, layout: stage.layout, uidToVid, doc: stage.doc };
    });
  }

  indexSections() {
    const index = new Map();
    for (const section of PER_NODE_SECTIONS) {
      const data = this.sections[section];
      if (!data || typeof data !== 'object') continue;
      for (const key of ['layers', 'blocking', 'refused']) {
        for (const row of data[key] || []) {
          if (!row || typeof row !== 'object' || row.node === undefined) continue;
          const name = String(row.node);
          if (!index.has(name)) index.set(name, {});
          const entry = index.get(name);
          (entry[section] = entry[section] || []).push(Object.assign({ _list: key }, row));
        }
      }
    }
    return index;
  }

  record(stageIndex) { return this.records[stageIndex]; }

  stageOfPass(passIndex) { return this.passes[passIndex].stage; }

  signature(vid) {
    let text = this.signatures.get(vid);
    if (text === undefined) {
      const node = this.nodes[vid];
      text = JSON.stringify(COMPARED.map((key) => node[key] === undefined ? null : node[key]));
      this.signatures.set(vid, text);
    }
    return text;
  }

  // uids added (only in b), removed (only in a) and changed (content differs) from a to b.
  diff(a, b) {
    const ra = this.records[a], rb = this.records[b];
    const added = new Set(), removed = new Set(), changed = new Set();
    if (ra === rb) return { added, removed, changed };
    for (const [uid, vid] of rb.uidToVid) {
      const old = ra.uidToVid.get(uid);
      if (old === undefined) added.add(uid);
      else if (old !== vid && this.signature(old) !== this.signature(vid)) changed.add(uid);
    }
    for (const uid of ra.uidToVid.keys()) if (!rb.uidToVid.has(uid)) removed.add(uid);
    return { added, removed, changed };
  }

  changedFields(oldVid, newVid) {
    const a = this.nodes[oldVid], b = this.nodes[newVid];
    return COMPARED.filter((key) => JSON.stringify(a[key]) !== JSON.stringify(b[key]));
  }

  // Stages in which a node uid exists, with the version it has there.
  history(uid) {
    const rows = [];
    let previous;
    this.stages.forEach((stage, index) => {
      const vid = this.records[index].uidToVid.get(uid);
      if (vid !== previous) rows.push({ stage: index, vid });
      previous = vid;
    });
    return rows;
  }

  // Scope path -> number of nodes under it, for the scopes of one stage.
  groups(stageIndex) {
    const counts = new Map();
    for (const vid of this.records[stageIndex].ids) {
      const scope = this.nodes[vid].scope;
      if (!scope) continue;
      const parts = scope.split('/');
      for (let depth = 1; depth <= parts.length; depth++) {
        const path = parts.slice(0, depth).join('/');
        counts.set(path, (counts.get(path) || 0) + 1);
      }
    }
    return counts;
  }

  // Outermost scopes that are one of a family of numbered siblings ("layer.0", "layer.1", ...).
  repeatedBlocks(stageIndex) {
    const groups = this.groups(stageIndex);
    const families = new Map();
    for (const path of groups.keys()) {
      const cut = path.lastIndexOf('/');
      const parent = cut < 0 ? '' : path.slice(0, cut);
      const match = REPEATED.exec(path.slice(cut + 1));
      if (!match || !match[1]) continue;
      const family = parent + '\u0000' + match[1];
      if (!families.has(family)) families.set(family, []);
      families.get(family).push(path);
    }
    const blocks = new Set();
    for (const members of families.values()) if (members.length > 1) for (const path of members) if (groups.get(path) > 1) blocks.add(path);
    for (const path of [...blocks]) {
      for (let cut = path.lastIndexOf('/'); cut > 0; cut = path.lastIndexOf('/', cut - 1)) {
        if (blocks.has(path.slice(0, cut))) { blocks.delete(path); break; }
      }
    }
    return blocks;
  }

  scopesAtDepth(stageIndex, depth) {
    const result = new Set();
    for (const [path, count] of this.groups(stageIndex)) if (count > 1 && path.split('/').length === depth) result.add(path);
    return result;
  }

  view(stageIndex, collapsed) {
    const record = this.records[stageIndex];
    const key = record.index + '|' + [...collapsed].sort().join('\u0001');
    let view = this.viewCache.get(key);
    if (!view) {
      const expanded = expandedView(this, record);
      view = collapsed.size ? collapsedView(this, record, expanded, collapsed) : expanded;
      this.viewCache.set(key, view);
      if (this.viewCache.size > 24) this.viewCache.delete(this.viewCache.keys().next().value);
    }
    return view;
  }
}

function makeItem(kind, label, sub, x, layer, geometry, extra) {
  const w = nodeWidth(label);
  return Object.assign({ kind, label, sub, x: x - w / 2, y: layer * geometry.layer_height, w, h: geometry.node_height, layer }, extra);
}

function expandedView(model, record) {
  const geometry = model.geometry, layout = record.layout;
  const items = [], byUid = new Map(), producer = new Map();
  const count = record.ids.length;
  record.ids.forEach((vid, slot) => {
    const node = model.nodes[vid];
    const item = makeItem('node', node.op || '?', node.name || '', layout.x[slot], layout.layer[slot], geometry, { vid, uid: node.uid, node });
    item.w = node.w || item.w;
    item.x = layout.x[slot] - item.w / 2;
    byUid.set(node.uid, items.length);
    items.push(item);
  });
  record.inputs.forEach((name, i) => {
    producer.set(name, items.length);
    items.push(makeItem('input', name, 'input', layout.x[count + i], layout.layer[count + i], geometry, { value: name }));
  });
  items.slice(0, count).forEach((item, slot) => {
    for (const name of item.node.outputs || []) if (name) producer.set(name, slot);
  });
  const edges = [];
  const routes = new Map();
  for (const route of layout.routes) routes.set(route[0] + ',' + route[1], route.slice(2));
  const connect = (source, target, value) => {
    if (source === undefined) return;
    edges.push({ s: source, t: target, value, points: edgePoints(items[source], items[target], routes.get(source + ',' + target), geometry) });
  };
  items.slice(0, count).forEach((item, slot) => {
    for (const name of item.node.inputs || []) connect(producer.get(name), slot, name);
  });
  record.outputs.forEach((name, i) => {
    const slot = count + record.inputs.length + i;
    items.push(makeItem('output', name, 'output', layout.x[slot], layout.layer[slot], geometry, { value: name }));
    connect(producer.get(name), items.length - 1, name);
  });
  return finishView({ stage: record.index, items, edges, byUid, collapsed: false });
}

function edgePoints(source, target, bends, geometry) {
  const points = [[source.x + source.w / 2, source.y + source.h]];
  if (bends) bends.forEach((bx, i) => points.push([bx, (source.layer + 1 + i) * geometry.layer_height + geometry.node_height / 2]));
  points.push([target.x + target.w / 2, target.y]);
  return points;
}

function outermostCollapsed(scope, collapsed) {
  if (!scope) return null;
  const parts = scope.split('/');
  for (let depth = 1; depth <= parts.length; depth++) {
    const path = parts.slice(0, depth).join('/');
    if (collapsed.has(path)) return path;
  }
  return null;
}

function collapsedView(model, record, expanded, collapsed) {
  const geometry = model.geometry;
  const representative = new Array(expanded.items.length);
  const boxes = [], groupIndex = new Map();
  expanded.items.forEach((item, i) => {
    const path = item.kind === 'node' ? outermostCollapsed(item.node.scope, collapsed) : null;
    if (path === null) { representative[i] = boxes.length; boxes.push({ item, members: [i] }); return; }
    if (!groupIndex.has(path)) { groupIndex.set(path, boxes.length); boxes.push({ path, members: [] }); }
    representative[i] = groupIndex.get(path);
    boxes[groupIndex.get(path)].members.push(i);
  });
  const rank = boxes.map((box) => Math.min(...box.members.map((i) => expanded.items[i].layer * 1e6 + expanded.items[i].x)));
  const order = boxes.map((_, i) => i).sort((a, b) => rank[a] - rank[b]);
  const position = new Array(boxes.length);
  order.forEach((box, i) => { position[box] = i; });
  const widths = order.map((b) => boxes[b].item ? boxes[b].item.w : nodeWidth(groupLabel(boxes[b].path)));
  const seed = order.map((b) => boxes[b].members.reduce((sum, i) => sum + expanded.items[i].x + expanded.items[i].w / 2, 0) / boxes[b].members.length);
  const pairs = [];
  for (const edge of expanded.edges) pairs.push([position[representative[edge.s]], position[representative[edge.t]], edge.value]);
  const layout = layeredLayout(widths, pairs.map(([s, t]) => [s, t]), seed);
  const items = [], byUid = new Map();
  order.forEach((b, i) => {
    const box = boxes[b];
    if (box.item) {
      const item = Object.assign({}, box.item, { x: layout.x[i] - box.item.w / 2, y: layout.layer[i] * geometry.layer_height, layer: layout.layer[i] });
      if (item.kind === 'node') byUid.set(item.uid, items.length);
      items.push(item);
    } else {
      const uids = box.members.map((m) => expanded.items[m].uid);
      const item = makeItem('group', groupLabel(box.path), box.members.length + ' nodes', layout.x[i], layout.layer[i], geometry, { path: box.path, uids });
      uids.forEach((uid) => byUid.set(uid, items.length));
      items.push(item);
    }
  });
  const seen = new Set(), edges = [];
  for (const [s, t, value] of pairs) {
    if (s === t || seen.has(s + ',' + t)) continue;
    seen.add(s + ',' + t);
    edges.push({ s, t, value, points: edgePoints(items[s], items[t], layout.routes.get(s + ',' + t), geometry) });
  }
  return finishView({ stage: record.index, items, edges, byUid, collapsed: true });
}

function groupLabel(path) {
  const cut = path.lastIndexOf('/');
  return '▸ ' + (cut < 0 ? path : path.slice(cut + 1));
}

function finishView(view) {
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const item of view.items) {
    minX = Math.min(minX, item.x); minY = Math.min(minY, item.y);
    maxX = Math.max(maxX, item.x + item.w); maxY = Math.max(maxY, item.y + item.h);
  }
  for (const edge of view.edges) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of edge.points) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
    edge.box = [x0, y0, x1, y1];
  }
  view.bounds = view.items.length ? [minX, minY, maxX, maxY] : [0, 0, 100, 100];
  view.grid = buildGrid(view.items);
  return view;
}

const GRID_CELL = 256;

function buildGrid(items) {
  const grid = new Map();
  items.forEach((item, i) => {
    const x0 = Math.floor(item.x / GRID_CELL), x1 = Math.floor((item.x + item.w) / GRID_CELL);
    const y0 = Math.floor(item.y / GRID_CELL), y1 = Math.floor((item.y + item.h) / GRID_CELL);
    for (let gx = x0; gx <= x1; gx++) for (let gy = y0; gy <= y1; gy++) {
      const key = gx + ',' + gy;
      if (!grid.has(key)) grid.set(key, []);
      grid.get(key).push(i);
    }
  });
  return grid;
}

function hitTest(view, x, y) {
  const cell = view.grid.get(Math.floor(x / GRID_CELL) + ',' + Math.floor(y / GRID_CELL)) || [];
  for (const i of cell) {
    const item = view.items[i];
    if (x >= item.x && x <= item.x + item.w && y >= item.y && y <= item.y + item.h) return i;
  }
  return -1;
}
