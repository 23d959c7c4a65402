// Layered layout in the browser, for collapsed views (the full stage graphs come laid out from
// Python, compiler/viz/layout.py; this is the same algorithm): longest-path layers balanced
// toward the side with more edges, dummy nodes on long edges, barycenter sweeps, and x by
// ordered least-squares placement.

const LAYOUT = { gap: 24, dummyWidth: 8, maxSpan: 24, budget: 4, orderSweeps: 4, placeSweeps: 4 };

function adjacencyLists(count, from, to) {
  const lists = Array.from({ length: count }, () => []);
  for (let i = 0; i < from.length; i++) lists[from[i]].push(to[i]);
  return lists;
}

function assignLayers(count, sources, targets) {
  const preds = adjacencyLists(count, targets, sources);
  const succs = adjacencyLists(count, sources, targets);
  const layer = new Array(count).fill(0);
  for (let v = 0; v < count; v++) for (const p of preds[v]) layer[v] = Math.max(layer[v], layer[p] + 1);
  for (let v = count - 1; v >= 0; v--) {
    if (succs[v].length && succs[v].length >= preds[v].length) {
      let low = Infinity;
      for (const s of succs[v]) low = Math.min(low, layer[s]);
      layer[v] = low - 1;
    }
  }
  for (let v = 0; v < count; v++) for (const p of preds[v]) layer[v] = Math.max(layer[v], layer[p] + 1);
  let min = Infinity;
  for (const value of layer) min = Math.min(min, value);
  return layer.map((value) => value - (count ? min : 0));
}

function insertDummies(layer, sources, targets, widths) {
  const count = layer.length;
  const chainLayer = layer.slice(), chainWidth = Array.from(widths);
  const from = [], to = [], paths = new Map();
  const budget = LAYOUT.budget * count;
  for (let i = 0; i < sources.length; i++) {
    const s = sources[i], t = targets[i], span = layer[t] - layer[s];
    if (span <= 1 || span > LAYOUT.maxSpan || chainLayer.length - count + span - 1 > budget) {
      if (span === 1) { from.push(s); to.push(t); }
      continue;
    }
    let previous = s;
    const path = [];
    for (let step = 1; step < span; step++) {
      const dummy = chainLayer.length;
      chainLayer.push(layer[s] + step);
      chainWidth.push(LAYOUT.dummyWidth);
      from.push(previous); to.push(dummy); path.push(dummy);
      previous = dummy;
    }
    from.push(previous); to.push(t);
    paths.set(s + ',' + t, path);
  }
  const total = chainLayer.length;
  return { layer: chainLayer, width: chainWidth, paths, preds: adjacencyLists(total, to, from), succs: adjacencyLists(total, from, to) };
}

function initialOrder(chain, previousX) {
  const total = chain.layer.length;
  const hasParent = new Array(total).fill(false);
  for (let v = 0; v < total; v++) for (const s of chain.succs[v]) hasParent[s] = true;
  const rank = new Array(total).fill(-1);
  let counter = 0;
  const roots = [];
  for (let v = 0; v < total; v++) if (!hasParent[v]) roots.push(v);
  for (let v = 0; v < total; v++) roots.push(v);
  for (const root of roots) {
    const stack = [root];
    while (stack.length) {
      const v = stack.pop();
      if (rank[v] >= 0) continue;
      rank[v] = counter++;
      for (let i = chain.succs[v].length - 1; i >= 0; i--) stack.push(chain.succs[v][i]);
    }
  }
  const key = rank.map((value, v) => (previousX && v < previousX.length && Number.isFinite(previousX[v]) ? previousX[v] * 1e6 : 1e15 + value));
  const layerCount = chain.layer.reduce((a, b) => Math.max(a, b), -1) + 1;
  const order = Array.from({ length: layerCount }, () => []);
  const ids = Array.from({ length: total }, (_, v) => v).sort((a, b) => key[a] - key[b]);
  for (const v of ids) order[chain.layer[v]].push(v);
  return order;
}

function sweepOrder(chain, order, downward) {
  const position = new Array(chain.layer.length).fill(0);
  for (const nodes of order) nodes.forEach((v, slot) => { position[v] = slot; });
  const neighbours = downward ? chain.preds : chain.succs;
  const start = downward ? 1 : order.length - 2, stop = downward ? order.length : -1, step = downward ? 1 : -1;
  for (let index = start; index !== stop; index += step) {
    const nodes = order[index];
    if (nodes.length < 2) continue;
    const keys = nodes.map((v, slot) => {
      const near = neighbours[v];
      let sum = 0;
      for (const n of near) sum += position[n];
      return [near.length ? sum / near.length : slot, slot];
    });
    keys.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    order[index] = keys.map(([, slot]) => nodes[slot]);
    order[index].forEach((v, slot) => { position[v] = slot; });
  }
}

function isotonic(values) {
  const means = [], sizes = [];
  for (const value of values) {
    means.push(value); sizes.push(1);
    while (means.length > 1 && means[means.length - 2] > means[means.length - 1]) {
      const b = means.pop(), nb = sizes.pop(), a = means.pop(), na = sizes.pop();
      means.push((a * na + b * nb) / (na + nb)); sizes.push(na + nb);
    }
  }
  const result = [];
  means.forEach((mean, i) => { for (let k = 0; k < sizes[i]; k++) result.push(mean); });
  return result;
}

function placeLayer(nodes, x, width, neighbours) {
  const desired = nodes.map((v) => {
    const near = neighbours[v];
    if (!near.length) return x[v];
    let sum = 0;
    for (const n of near) sum += x[n];
    return sum / near.length;
  });
  if (nodes.length === 1) { x[nodes[0]] = desired[0]; return; }
  const gaps = [0];
  for (let i = 1; i < nodes.length; i++) gaps.push(gaps[i - 1] + (width[nodes[i - 1]] + width[nodes[i]]) / 2 + LAYOUT.gap);
  const solved = isotonic(desired.map((d, i) => d - gaps[i]));
  nodes.forEach((v, i) => { x[v] = solved[i] + gaps[i]; });
}

function placeNodes(chain, order) {
  const x = new Array(chain.layer.length).fill(0);
  for (const nodes of order) {
    let cursor = 0;
    for (const v of nodes) { x[v] = cursor + chain.width[v] / 2; cursor += chain.width[v] + LAYOUT.gap; }
    for (const v of nodes) x[v] -= cursor / 2;
  }
  const both = chain.preds.map((p, v) => p.concat(chain.succs[v]));
  for (let sweep = 0; sweep < LAYOUT.placeSweeps; sweep++) {
    const last = sweep === LAYOUT.placeSweeps - 1;
    for (const downward of [true, false]) {
      const neighbours = last ? both : (downward ? chain.preds : chain.succs);
      if (downward) for (let i = 0; i < order.length; i++) placeLayer(order[i], x, chain.width, neighbours);
      else for (let i = order.length - 1; i >= 0; i--) placeLayer(order[i], x, chain.width, neighbours);
    }
  }
  return x;
}

// widths: per node; edges: [source, target] pairs with nodes numbered in topological order
// (an edge pointing back is ignored). Returns {x, layer, routes: Map("s,t" -> [bend x...])}.
function layeredLayout(widths, edges, previousX) {
  const count = widths.length;
  const seen = new Set(), sources = [], targets = [];
  for (const [s, t] of edges) {
    if (!(s < t) || s < 0 || t >= count) continue;
    const key = s * count + t;
    if (seen.has(key)) continue;
    seen.add(key); sources.push(s); targets.push(t);
  }
  if (!count) return { x: [], layer: [], routes: new Map() };
  const layer = assignLayers(count, sources, targets);
  const chain = insertDummies(layer, sources, targets, widths);
  const order = initialOrder(chain, previousX);
  for (let i = 0; i < LAYOUT.orderSweeps; i++) { sweepOrder(chain, order, true); sweepOrder(chain, order, false); }
  const x = placeNodes(chain, order);
  const routes = new Map();
  for (const [key, path] of chain.paths) routes.set(key, path.map((d) => x[d]));
  return { x: x.slice(0, count), layer, routes };
}
