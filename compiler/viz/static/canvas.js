// Draws a view on a <canvas>: pan (drag), zoom (wheel, at the pointer), fit; only what is on
// screen is drawn, and labels only when boxes are large enough to read (level of detail).

const CATEGORIES = [
  [/^(Conv|ConvTranspose|ConvInteger|QLinearConv|DeformConv)$/, 'conv'],
  [/MatMul|Gemm|Einsum|Attention/, 'matmul'],
  [/Norm/, 'norm'],
  [/^(Relu|Gelu|Sigmoid|Tanh|Softmax|LogSoftmax|Erf|Silu|Elu|Selu|LeakyRelu|PRelu|HardSwish|HardSigmoid|Mish|Softplus|Clip)$/, 'activation'],
  [/Quantize|Dequantize|QLinear|DynamicQuantize/, 'quant'],
  [/Pool|^Reduce|^ArgM/, 'reduce'],
  [/^(Reshape|Transpose|Shape|Gather|GatherElements|GatherND|Concat|Slice|Squeeze|Unsqueeze|Flatten|Expand|Split|Identity|Constant|ConstantOfShape|Range|Tile|Pad|ScatterND|ScatterElements|Size|Resize|DepthToSpace|SpaceToDepth)$/, 'shape'],
];
const PALETTE = {
  conv: '#c7dcff', matmul: '#d9ccff', norm: '#c4ead6', activation: '#ffe6a3', quant: '#ffc9dc',
  reduce: '#c9edf2', shape: '#e1e5eb', elementwise: '#f1e6d6', fused: '#ffd2a8', group: '#dde5f3',
  input: '#b9e0c2', output: '#f1c3bc',
};
const MARK = { added: '#1a9e4b', changed: '#e09100', removed: '#d2353d', selected: '#1f5fd6', match: '#f2c200', fused: '#b55d00', related: '#8a3ffc' };

function categoryOf(item) {
  if (item.kind !== 'node') return item.kind;
  if (item.node.domain === 'ai.graphkiln') return 'fused';
  for (const [pattern, name] of CATEGORIES) if (pattern.test(item.label)) return name;
  return 'elementwise';
}

class GraphCanvas {
  constructor(canvas, handlers) {
    this.canvas = canvas;
    this.context = canvas.getContext('2d');
    this.handlers = handlers;
    this.view = null;
    this.marks = new Map();       // item index -> mark name (added/changed/removed/related)
    this.matches = new Set();     // item indexes matching the search
    this.selected = -1;
    this.camera = { scale: 1, x: 0, y: 0 };
    this.pending = false;
    this.drag = null;
    this.attachEvents();
    new ResizeObserver(() => this.resize()).observe(canvas);
  }

  setView(view, keepCamera) {
    const fresh = !this.view || !keepCamera;
    this.view = view;
    this.marks = new Map();
    this.matches = new Set();
    this.selected = -1;
    for (const item of view.items) item.category = item.category || categoryOf(item);
    this.order = view.items.map((_, i) => i).sort((a, b) => (view.items[a].category < view.items[b].category ? -1 : 1));
    if (fresh) this.fit(true); else this.redraw();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, this.canvas.clientWidth), height = Math.max(1, this.canvas.clientHeight);
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.ratio = ratio;
    if (this.needsFit) this.fit(this.needsFit === 'overview'); else this.redraw();
  }

  fit(overview) {
    if (!this.view) return;
    const width = this.canvas.clientWidth, height = this.canvas.clientHeight;
    if (!width || !height) { this.needsFit = overview ? 'overview' : true; return; }
    this.needsFit = false;
    const [x0, y0, x1, y1] = this.view.bounds;
    const margin = 24;
    const byWidth = (width - 2 * margin) / Math.max(1, x1 - x0);
    const scale = Math.min(byWidth, (height - 2 * margin) / Math.max(1, y1 - y0), 1.5);
    if (!overview || scale >= 0.5) {
      this.camera = { scale, x: (width - (x1 - x0) * scale) / 2 - x0 * scale, y: (height - (y1 - y0) * scale) / 2 - y0 * scale };
    } else if (byWidth >= 0.5) {
      // A tall network fitted whole is unreadable: show its full width, from the top.
      const s = Math.min(0.85, byWidth);
      this.camera = { scale: s, x: (width - (x1 - x0) * s) / 2 - x0 * s, y: margin - y0 * s };
    } else {
      // Too wide as well: start readable at the first graph input (F or Fit shows everything).
      const first = this.view.items.find((item) => item.kind === 'input') || this.view.items[0];
      const s = 0.85;
      this.camera = { scale: s, x: width / 2 - (first.x + first.w / 2) * s, y: margin - y0 * s };
    }
    this.redraw();
  }

  centerOn(index, scale) {
    const item = this.view.items[index];
    if (!item) return;
    const s = Math.max(this.camera.scale, scale || 0.9);
    this.camera = { scale: s, x: this.canvas.clientWidth / 2 - (item.x + item.w / 2) * s, y: this.canvas.clientHeight / 2 - (item.y + item.h / 2) * s };
    this.redraw();
  }

  zoom(factor, px, py) {
    const s = Math.min(4, Math.max(0.002, this.camera.scale * factor));
    const k = s / this.camera.scale;
    this.camera = { scale: s, x: px - (px - this.camera.x) * k, y: py - (py - this.camera.y) * k };
    this.redraw();
  }

  // The user panned or zoomed this pane (the app may move the other pane along).
  moved() { if (this.handlers.moved) this.handlers.moved(this); }

  // Pan and zoom like `other`, keeping the node nearest its centre at the same place on screen in
  // both panes (matched by uid: the two stages' layouts need not share coordinates).
  follow(other) {
    const [cx, cy] = other.toWorld(other.canvas.clientWidth / 2, other.canvas.clientHeight / 2);
    let anchor = -1, twin = -1, nearest = Infinity;
    other.view.items.forEach((item, i) => {
      if (item.uid === undefined) return;
      const match = this.view.byUid.get(item.uid);
      if (match === undefined || this.view.items[match].kind !== 'node') return;
      const dx = item.x + item.w / 2 - cx, dy = item.y + item.h / 2 - cy;
      if (dx * dx + dy * dy < nearest) { nearest = dx * dx + dy * dy; anchor = i; twin = match; }
    });
    const scale = other.camera.scale;
    if (anchor < 0) { this.camera = Object.assign({}, other.camera); this.redraw(); return; }
    const a = other.view.items[anchor], b = this.view.items[twin];
    this.camera = { scale, x: other.camera.x + (a.x + a.w / 2 - b.x - b.w / 2) * scale, y: other.camera.y + (a.y + a.h / 2 - b.y - b.h / 2) * scale };
    this.redraw();
  }

  toWorld(px, py) { return [(px - this.camera.x) / this.camera.scale, (py - this.camera.y) / this.camera.scale]; }

  // Page coordinates of an item's centre (used by tests and by "show" links).
  screenPoint(index) {
    const item = this.view.items[index];
    const rect = this.canvas.getBoundingClientRect();
    return { x: rect.left + this.camera.x + (item.x + item.w / 2) * this.camera.scale, y: rect.top + this.camera.y + (item.y + item.h / 2) * this.camera.scale };
  }

  attachEvents() {
    const canvas = this.canvas;
    canvas.addEventListener('wheel', (event) => {
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      this.zoom(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
      this.moved();
    }, { passive: false });
    canvas.addEventListener('mousedown', (event) => {
      this.drag = { x: event.clientX, y: event.clientY, cx: this.camera.x, cy: this.camera.y, moved: false };
    });
    window.addEventListener('mousemove', (event) => {
      if (!this.drag) return;
      const dx = event.clientX - this.drag.x, dy = event.clientY - this.drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) this.drag.moved = true;
      this.camera.x = this.drag.cx + dx; this.camera.y = this.drag.cy + dy;
      this.redraw();
      this.moved();
    });
    window.addEventListener('mouseup', (event) => {
      const drag = this.drag;
      this.drag = null;
      if (!drag || drag.moved || event.target !== canvas || !this.view) return;
      const rect = canvas.getBoundingClientRect();
      const [x, y] = this.toWorld(event.clientX - rect.left, event.clientY - rect.top);
      this.handlers.click(hitTest(this.view, x, y));
    });
    canvas.addEventListener('dblclick', (event) => {
      const rect = canvas.getBoundingClientRect();
      const [x, y] = this.toWorld(event.clientX - rect.left, event.clientY - rect.top);
      const index = hitTest(this.view, x, y);
      if (index >= 0) this.handlers.open(index); else this.zoom(1.6, event.clientX - rect.left, event.clientY - rect.top);
    });
  }

  redraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const ctx = this.context, ratio = this.ratio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.view) return;
    const { scale, x, y } = this.camera;
    ctx.setTransform(scale * ratio, 0, 0, scale * ratio, x * ratio, y * ratio);
    const [wx0, wy0] = this.toWorld(0, 0);
    const [wx1, wy1] = this.toWorld(this.canvas.clientWidth, this.canvas.clientHeight);
    const visible = (x0, y0, x1, y1) => x1 >= wx0 && x0 <= wx1 && y1 >= wy0 && y0 <= wy1;
    this.drawEdges(ctx, visible, scale);
    this.drawNodes(ctx, visible, scale);
  }

  drawEdges(ctx, visible, scale) {
    const highlighted = [];
    ctx.lineWidth = Math.max(1 / scale, 1.2);
    ctx.strokeStyle = '#9aa5b5';
    ctx.beginPath();
    for (const edge of this.view.edges) {
      if (!visible(...edge.box)) continue;
      if (this.selected >= 0 && (edge.s === this.selected || edge.t === this.selected)) { highlighted.push(edge); continue; }
      this.tracePath(ctx, edge.points, scale);
    }
    ctx.stroke();
    if (highlighted.length) {
      ctx.strokeStyle = MARK.selected;
      ctx.lineWidth = Math.max(2 / scale, 2);
      ctx.beginPath();
      for (const edge of highlighted) this.tracePath(ctx, edge.points, scale);
      ctx.stroke();
    }
    if (scale > 0.35) {
      ctx.fillStyle = '#7b8797';
      for (const edge of this.view.edges) {
        if (!visible(...edge.box)) continue;
        const [tx, ty] = edge.points[edge.points.length - 1];
        ctx.beginPath(); ctx.moveTo(tx, ty); ctx.lineTo(tx - 4, ty - 7); ctx.lineTo(tx + 4, ty - 7); ctx.fill();
      }
    }
  }

  tracePath(ctx, points, scale) {
    ctx.moveTo(points[0][0], points[0][1]);
    if (scale < 0.2 || points.length < 2) { for (let i = 1; i < points.length; i++) ctx.lineTo(points[i][0], points[i][1]); return; }
    for (let i = 1; i < points.length; i++) {
      const [px, py] = points[i - 1], [qx, qy] = points[i];
      const my = (py + qy) / 2;
      ctx.bezierCurveTo(px, my, qx, my, qx, qy);
    }
  }

  drawNodes(ctx, visible, scale) {
    const items = this.view.items;
    const detail = scale >= 0.45, names = scale >= 0.8;
    let fill = null;
    for (const i of this.order) {
      const item = items[i];
      if (!visible(item.x, item.y, item.x + item.w, item.y + item.h)) continue;
      const color = PALETTE[item.category] || PALETTE.elementwise;
      if (color !== fill) { ctx.fillStyle = color; fill = color; }
      if (detail) {
        this.roundRect(ctx, item, item.kind === 'input' || item.kind === 'output' ? 16 : 5);
        ctx.fill();
      } else {
        ctx.fillRect(item.x, item.y, item.w, item.h);
      }
    }
    ctx.lineWidth = Math.max(1 / scale, 1);
    for (const i of this.order) {
      const item = items[i];
      if (!visible(item.x, item.y, item.x + item.w, item.y + item.h)) continue;
      const mark = i === this.selected ? 'selected' : this.matches.has(i) ? 'match' : this.marks.get(i);
      const fused = item.kind === 'node' && (item.node.fused_from || item.node.rule);
      if (mark || detail || fused) {
        ctx.strokeStyle = mark ? MARK[mark] : fused ? MARK.fused : item.kind === 'group' ? '#5b6b85' : '#8792a2';
        ctx.lineWidth = mark ? Math.max(3 / scale, 2.5) : Math.max(1 / scale, 1);
        if (item.kind === 'group') ctx.setLineDash([6, 3]);
        this.roundRect(ctx, item, item.kind === 'input' || item.kind === 'output' ? 16 : 5);
        ctx.stroke();
        ctx.setLineDash([]);
      }
      if (detail) this.drawLabel(ctx, item, mark, names, fused);
    }
  }

  roundRect(ctx, item, radius) {
    ctx.beginPath();
    ctx.roundRect(item.x, item.y, item.w, item.h, radius);
  }

  drawLabel(ctx, item, mark, names, fused) {
    ctx.fillStyle = '#1d2633';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    const cx = item.x + item.w / 2;
    const bold = item.kind === 'node' || item.kind === 'group';
    ctx.font = (bold ? '600 ' : '') + '12px system-ui, sans-serif';
    const top = names && item.sub ? item.y + 12 : item.y + item.h / 2;
    ctx.fillText(this.fitText(ctx, item.label, item.w - 10), cx, top);
    if (names && item.sub) {
      ctx.font = '9.5px system-ui, sans-serif';
      ctx.fillStyle = '#4a5668';
      ctx.fillText(this.fitText(ctx, item.sub, item.w - 8), cx, item.y + 25);
    }
    const badge = mark === 'added' ? '+' : mark === 'changed' ? '~' : mark === 'removed' ? '−' : fused ? '⧉' : '';
    if (badge) {
      ctx.fillStyle = MARK[mark] || MARK.fused;
      ctx.beginPath(); ctx.arc(item.x + item.w - 2, item.y + 2, 7, 0, Math.PI * 2); ctx.fill();
      ctx.fillStyle = '#fff'; ctx.font = '700 11px system-ui, sans-serif';
      ctx.fillText(badge, item.x + item.w - 2, item.y + 2.5);
    }
  }

  fitText(ctx, text, width) {
    if (ctx.measureText(text).width <= width) return text;
    let low = 0, high = text.length;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (ctx.measureText('…' + text.slice(text.length - mid)).width <= width) low = mid; else high = mid - 1;
    }
    return '…' + text.slice(text.length - low);
  }
}
