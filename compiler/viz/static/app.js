// The page: header (search, fit, compare, collapse), pass timeline, one or two graph panes
// (stage B = the selected stage; stage A = the stage it is compared with), and side tabs.

class App {
  constructor(model, root) {
    this.model = model;
    const stage = this.lastChangedStage();
    // follow: pane A shows the stage before the selected one (removed nodes marked there).
    this.state = { stage, compare: stage > 0 ? stage - 1 : null, follow: true, collapsed: new Set(), collapseMode: 'none',
      hideUnchanged: false, selection: null, query: '', tab: 'inspector', linked: true };
    this.buildDom(root);
    const moved = (canvas) => this.linkPanes(canvas);
    this.canvasA = new GraphCanvas(this.dom.canvasA, { click: (i) => this.clickItem('a', i), open: (i) => this.openItem('a', i), moved });
    this.canvasB = new GraphCanvas(this.dom.canvasB, { click: (i) => this.clickItem('b', i), open: (i) => this.openItem('b', i), moved });
    buildTimeline(this, this.dom.timeline);
    this.render({ fit: true });
  }

  lastChangedStage() {
    for (let i = this.model.stages.length - 1; i > 0; i--) if (this.model.stages[i].same_as === null) return i;
    return 0;
  }

  buildDom(root) {
    const dom = this.dom = {};
    const header = el('header', 'topbar');
    const meta = this.model.meta;
    const title = el('div', 'title');
    append(title, el('strong', null, 'graphkiln'), ' ', el('span', 'model-name', meta.model));
    const before = (meta.before || {}).nodes, after = (meta.after || {}).nodes;
    const summary = el('span', 'summary', [meta.backend && 'backend ' + meta.backend, meta.opt_level !== null && meta.opt_level !== undefined && '-O' + meta.opt_level,
      before !== undefined && before + ' → ' + after + ' nodes', this.model.passes.length + ' passes', formatSeconds(meta.total_seconds)].filter(Boolean).join(' · '));
    dom.search = el('input', 'search');
    dom.search.id = 'search';
    dom.search.type = 'search';
    dom.search.placeholder = 'Search node name or op type  (/)';
    dom.searchCount = el('span', 'search-count');
    dom.results = el('ul', 'search-results hidden');
    dom.results.id = 'search-results';
    const searchBox = append(el('div', 'search-box'), dom.search, dom.searchCount, dom.results);
    dom.fit = el('button', 'button', 'Fit');
    dom.fit.id = 'fit';
    dom.compare = el('select', 'compare-select');
    dom.compare.id = 'compare-stage';
    dom.collapse = el('select', 'collapse-select');
    dom.collapse.id = 'collapse-mode';
    for (const [value, text] of [['none', 'Expanded'], ['blocks', 'Collapse repeated blocks'], ['1', 'Collapse scopes, depth 1'], ['2', 'Collapse scopes, depth 2'], ['3', 'Collapse scopes, depth 3']]) {
      const option = el('option', null, text); option.value = value; dom.collapse.appendChild(option);
    }
    dom.link = el('input'); dom.link.type = 'checkbox'; dom.link.id = 'link-panes'; dom.link.checked = true;
    const linkLabel = append(el('label', 'compare-label'), dom.link, ' link panes');
    linkLabel.title = 'pan and zoom both panes together';
    append(header, title, summary, searchBox, el('label', 'compare-label', 'Compare with'), dom.compare, linkLabel, dom.collapse, dom.fit);
    const timeline = el('aside', 'timeline');
    dom.hide = el('input'); dom.hide.type = 'checkbox'; dom.hide.id = 'hide-unchanged';
    const hideLabel = append(el('label', 'hide-label'), dom.hide, ' hide passes that changed nothing');
    dom.timeline = el('ol', 'pass-list'); dom.timeline.id = 'pass-list';
    append(timeline, el('div', 'panel-title', 'Passes'), hideLabel, dom.timeline);
    const views = el('main', 'views');
    dom.paneA = this.buildPane('a'); dom.paneB = this.buildPane('b');
    append(views, dom.paneA.box, dom.paneB.box);
    dom.canvasA = dom.paneA.canvas; dom.canvasB = dom.paneB.canvas;
    const side = el('aside', 'side');
    const tabs = el('nav', 'tabs');
    dom.tabs = {}; dom.panels = {};
    for (const [key, text] of [['inspector', 'Inspector'], ['changes', 'Changes'], ['charts', 'Charts']]) {
      const tab = el('button', 'tab', text); tab.dataset.tab = key; tab.id = 'tab-' + key;
      tab.addEventListener('click', () => { this.state.tab = key; this.renderPanels(); });
      dom.tabs[key] = tab; tabs.appendChild(tab);
      const panel = el('div', 'tab-panel'); panel.id = key; dom.panels[key] = panel;
    }
    append(side, tabs, dom.panels.inspector, dom.panels.changes, dom.panels.charts);
    dom.status = el('footer', 'status');
    append(root, header, timeline, views, side, dom.status);
    this.bindControls();
  }

  buildPane(key) {
    const box = el('section', 'pane pane-' + key + (key === 'a' ? ' hidden' : ''));
    const title = el('div', 'pane-title');
    const canvas = el('canvas', 'graph');
    canvas.id = 'graph-' + key;
    const legend = el('div', 'legend');
    for (const [name, text] of [['added', 'added'], ['changed', 'changed'], ['removed', 'removed'], ['fused', 'fused'], ['match', 'search match']]) {
      const swatch = el('span', 'swatch ' + name);
      append(legend, append(el('span', 'legend-item'), swatch, text));
    }
    append(box, title, canvas, legend);
    return { box, title, canvas };
  }

  bindControls() {
    const dom = this.dom;
    dom.fit.addEventListener('click', () => { this.canvasB.fit(); if (this.state.compare !== null) this.canvasA.fit(); });
    dom.hide.addEventListener('change', () => { this.state.hideUnchanged = dom.hide.checked; this.render({}); });
    dom.link.addEventListener('change', () => { this.state.linked = dom.link.checked; });
    dom.compare.addEventListener('change', () => {
      const value = dom.compare.value;
      if (value === 'previous') this.followPrevious(); else this.setCompare(value === '' ? null : Number(value));
    });
    dom.collapse.addEventListener('change', () => this.setCollapseMode(dom.collapse.value));
    dom.search.addEventListener('input', () => this.search(dom.search.value));
    dom.search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') { event.preventDefault(); this.nextMatch(); }
      if (event.key === 'Escape') { dom.search.value = ''; this.search(''); }
    });
    document.addEventListener('keydown', (event) => {
      if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
      if (event.key === '/') { event.preventDefault(); dom.search.focus(); }
      if (event.key === 'f') this.canvasB.fit();
      if (event.key === 'Escape') { this.state.selection = null; this.render({}); }
    });
    this.fillCompareOptions();
    this.showCompare(this.state.compare);
  }

  fillCompareOptions() {
    const select = this.dom.compare;
    clear(select);
    const none = el('option', null, '— (single view)'); none.value = ''; select.appendChild(none);
    const previous = el('option', null, 'the stage before (before | after)'); previous.value = 'previous'; select.appendChild(previous);
    this.model.stages.forEach((stage, index) => {
      const option = el('option', null, index + ': ' + stage.label + (stage.same_as !== null ? ' (no change)' : ''));
      option.value = String(index);
      select.appendChild(option);
    });
  }

  baseStage() {
    if (this.state.compare !== null) return this.state.compare;
    return this.state.stage > 0 ? this.state.stage - 1 : null;
  }

  pickStage(stage, event) {
    if (event && event.shiftKey) this.setCompare(stage); else { this.selectStage(stage); this.focusChanges(); }
  }

  // Bring the topmost change of the shown diff into view: an added or changed node in pane B,
  // else a removed node in pane A (the linked pane follows).
  focusChanges() {
    const diff = this.currentDiff;
    if (!diff || this.state.selection) return;
    const topmost = (canvas, uids) => {
      let best = -1;
      for (const uid of uids) {
        const index = canvas.view.byUid.get(uid);
        if (index !== undefined && (best < 0 || canvas.view.items[index].y < canvas.view.items[best].y)) best = index;
      }
      return best;
    };
    const inB = topmost(this.canvasB, [...diff.added, ...diff.changed]);
    if (inB >= 0) { this.centerBoth(this.canvasB, inB, 0.6); return; }
    if (this.state.compare === null) return;
    const inA = topmost(this.canvasA, diff.removed);
    if (inA >= 0) { this.canvasA.centerOn(inA, 0.6); this.linkPanes(this.canvasA); }
  }

  selectStage(stage) {
    this.state.stage = stage;
    if (this.state.follow) this.showCompare(stage > 0 ? stage - 1 : null);
    this.render({});
  }

  setCompare(stage) {
    this.state.follow = false;
    this.showCompare(stage);
    this.render({ fitA: true });
  }

  followPrevious() {
    this.state.follow = true;
    this.showCompare(this.state.stage > 0 ? this.state.stage - 1 : null);
    this.render({ fitA: true });
  }

  showCompare(stage) {
    this.state.compare = stage;
    if (stage === null && this.state.selection && this.state.selection.pane === 'a') this.state.selection.pane = 'b';
    this.dom.compare.value = this.state.follow ? 'previous' : stage === null ? '' : String(stage);
    this.dom.paneA.box.classList.toggle('hidden', stage === null);
  }

  setCollapseMode(mode) {
    const model = this.model, stage = this.state.stage;
    this.state.collapseMode = mode;
    this.dom.collapse.value = mode;
    this.state.collapsed = mode === 'none' ? new Set() : mode === 'blocks' ? model.repeatedBlocks(stage) : mode === 'custom' ? this.state.collapsed : model.scopesAtDepth(stage, Number(mode));
    this.render({ fit: true, fitA: true });
  }

  collapse(path) {
    this.state.collapsed = new Set([...this.state.collapsed].filter((p) => !p.startsWith(path + '/')).concat([path]));
    this.state.collapseMode = 'custom';
    this.state.selection = { pane: 'b', path };
    this.render({ fit: false });
    const index = this.canvasB.view.items.findIndex((item) => item.kind === 'group' && item.path === path);
    if (index >= 0) this.canvasB.centerOn(index, 0.8);
  }

  expand(path) {
    this.state.collapsed = new Set([...this.state.collapsed].filter((p) => p !== path));
    this.state.collapseMode = this.state.collapsed.size ? 'custom' : 'none';
    this.state.selection = null;
    this.render({});
  }

  linkPanes(moved) {
    if (!this.state.linked || this.state.compare === null) return;
    (moved === this.canvasA ? this.canvasB : this.canvasA).follow(moved);
  }

  // Centre both panes on a node (the other pane only where it holds the same node).
  centerBoth(canvas, index, scale) {
    canvas.centerOn(index, scale);
    if (!this.state.linked || this.state.compare === null) return;
    const other = canvas === this.canvasA ? this.canvasB : this.canvasA;
    const item = canvas.view.items[index];
    const twin = item && item.uid !== undefined ? other.view.byUid.get(item.uid) : undefined;
    if (twin !== undefined) { other.camera.scale = canvas.camera.scale; other.centerOn(twin, canvas.camera.scale); }
  }

  statusOf(uid, pane) {
    const diff = this.currentDiff;
    if (!diff) return null;
    if (pane === 'a') return diff.removed.has(uid) ? 'removed' : diff.changed.has(uid) ? 'changed' : null;
    return diff.added.has(uid) ? 'added' : diff.changed.has(uid) ? 'changed' : null;
  }

  clickItem(pane, index) {
    if (pane === 'a' && this.state.compare === null) return;  // pane A is hidden
    const canvas = pane === 'a' ? this.canvasA : this.canvasB;
    if (index < 0) { this.state.selection = null; this.render({}); return; }
    const item = canvas.view.items[index];
    if (item.kind === 'group') this.state.selection = { pane, path: item.path };
    else if (item.kind === 'node') this.state.selection = { pane, uid: item.uid };
    else this.state.selection = null;
    this.state.tab = 'inspector';
    this.render({});
  }

  openItem(pane, index) {
    const canvas = pane === 'a' ? this.canvasA : this.canvasB;
    const item = canvas.view.items[index];
    if (item.kind === 'group') this.expand(item.path); else canvas.centerOn(index, 1.2);
  }

  selectNode(uid, pane, center) {
    const stage = pane === 'a' ? this.state.compare : this.state.stage;
    if (pane === 'a' && stage === null) {
      const base = this.baseStage();
      if (base === null) return;
      this.state.follow = false;
      this.showCompare(base);
    }
    this.state.selection = { pane, uid };
    this.state.tab = 'inspector';
    this.render({});
    if (center) {
      const canvas = pane === 'a' ? this.canvasA : this.canvasB;
      const index = canvas.view.byUid.get(uid);
      if (index !== undefined) this.centerBoth(canvas, index, 0.9);
    }
  }

  selectNodeByName(name) {
    for (const pane of ['b', 'a']) {
      const stage = pane === 'a' ? this.state.compare : this.state.stage;
      if (stage === null) continue;
      for (const [uid, vid] of this.model.records[stage].uidToVid) if (this.model.nodes[vid].name === name) { this.selectNode(uid, pane, true); return true; }
    }
    return false;
  }

  // Show an original node a fused node came from: in pane A at the latest earlier stage holding it.
  showOriginal(name) {
    for (let stage = this.state.stage - 1; stage >= 0; stage--) {
      for (const [uid, vid] of this.model.records[stage].uidToVid) {
        if (this.model.nodes[vid].name !== name) continue;
        this.state.follow = false;
        this.showCompare(stage);
        this.render({ fitA: true });
        const index = this.canvasA.view.byUid.get(uid);
        if (index !== undefined) this.canvasA.centerOn(index, 0.9);
        return;
      }
    }
  }

  search(query) {
    this.state.query = query.trim().toLowerCase();
    this.matchCursor = -1;
    this.render({});
  }

  matchesIn(view) {
    const query = this.state.query, result = [];
    if (!query) return result;
    view.items.forEach((item, i) => {
      const text = item.kind === 'node' ? (item.node.name + '\u0000' + item.node.op).toLowerCase() : (item.label + '\u0000' + (item.path || '')).toLowerCase();
      if (text.includes(query)) result.push(i);
    });
    return result;
  }

  nextMatch() {
    const matches = this.matchesIn(this.canvasB.view);
    if (!matches.length) return;
    this.matchCursor = (this.matchCursor + 1) % matches.length;
    this.focusItem(matches[this.matchCursor]);
  }

  focusItem(index) {
    const item = this.canvasB.view.items[index];
    if (item.kind === 'node') this.state.selection = { pane: 'b', uid: item.uid };
    else if (item.kind === 'group') this.state.selection = { pane: 'b', path: item.path };
    this.state.tab = 'inspector';
    this.render({});
    this.centerBoth(this.canvasB, index, 0.9);
  }

  render(options) {
    const { stage, compare, collapsed } = this.state;
    const viewB = this.model.view(stage, collapsed);
    if (this.canvasB.view !== viewB) this.canvasB.setView(viewB, !options.fit && this.canvasB.view !== null);
    const base = this.baseStage();
    this.currentDiff = base === null ? null : this.model.diff(base, stage);
    this.markPane(this.canvasB, 'b');
    if (compare !== null) {
      const viewA = this.model.view(compare, collapsed);
      if (this.canvasA.view !== viewA) this.canvasA.setView(viewA, !options.fitA && this.canvasA.view !== null);
      this.markPane(this.canvasA, 'a');
      this.canvasA.redraw();
    }
    this.canvasB.redraw();
    this.renderTitles();
    updateTimeline(this, this.dom.timeline);
    this.renderSearch(viewB);
    this.renderPanels();
  }

  markPane(canvas, pane) {
    const view = canvas.view, diff = this.currentDiff;
    canvas.marks = new Map();
    if (diff) {
      view.items.forEach((item, i) => {
        const uids = item.kind === 'node' ? [item.uid] : item.kind === 'group' ? item.uids : [];
        for (const uid of uids) {
          const status = this.statusOf(uid, pane);
          if (status) { canvas.marks.set(i, status); if (item.kind === 'node') break; }
        }
      });
    }
    const selection = this.state.selection;
    canvas.selected = -1;
    if (selection && selection.uid !== undefined) {
      const index = view.byUid.get(selection.uid);
      if (index !== undefined) canvas.selected = index;
      const stage = selection.pane === 'a' ? this.state.compare : this.state.stage;
      const vid = stage === null ? undefined : this.model.records[stage].uidToVid.get(selection.uid);
      const fused = vid === undefined ? null : this.model.nodes[vid].fused_from;
      if (fused && pane === 'a') {
        const names = new Set(fused);
        view.items.forEach((item, i) => { if (item.kind === 'node' && names.has(item.node.name)) canvas.marks.set(i, 'related'); });
      }
    } else if (selection && selection.path !== undefined) {
      canvas.selected = view.items.findIndex((item) => item.kind === 'group' && item.path === selection.path);
    }
    canvas.matches = new Set(this.matchesIn(view));
  }

  renderTitles() {
    const { stage, compare } = this.state;
    const describe = (index) => 'stage ' + index + ': ' + (index === 0 ? 'input graph' : 'after ' + this.model.stages[index].label) +
      ' · ' + this.model.records[index].ids.length + ' nodes';
    this.dom.paneB.title.textContent = (compare !== null ? 'B · ' : '') + describe(stage);
    if (compare !== null) this.dom.paneA.title.textContent = 'A · ' + describe(compare);
    const view = this.canvasB.view;
    this.dom.status.textContent = (view.collapsed ? 'collapsed view · ' : '') + view.items.length + ' boxes, ' + view.edges.length +
      ' edges · drag to pan · wheel to zoom · double-click a group to expand · F fit · / search · shift+click a pass to compare';
  }

  renderSearch(view) {
    const results = this.dom.results;
    clear(results);
    if (!this.state.query) { results.classList.add('hidden'); this.dom.searchCount.textContent = ''; return; }
    const matches = this.matchesIn(view);
    this.dom.searchCount.textContent = matches.length + ' match' + (matches.length === 1 ? '' : 'es');
    results.classList.toggle('hidden', matches.length === 0 || document.activeElement !== this.dom.search);
    for (const index of matches.slice(0, 50)) {
      const item = view.items[index];
      const row = el('li', 'search-result');
      append(row, el('span', 'op', item.kind === 'node' ? item.node.op : item.label), ' ', el('span', 'name', item.kind === 'node' ? item.node.name : item.path || item.sub));
      row.addEventListener('mousedown', (event) => { event.preventDefault(); results.classList.add('hidden'); this.focusItem(index); });
      results.appendChild(row);
    }
  }

  renderPanels() {
    for (const [key, tab] of Object.entries(this.dom.tabs)) {
      tab.classList.toggle('active', key === this.state.tab);
      this.dom.panels[key].classList.toggle('hidden', key !== this.state.tab);
    }
    if (this.state.tab === 'inspector') renderInspector(this, this.dom.panels.inspector);
    if (this.state.tab === 'changes') renderChanges(this, this.dom.panels.changes);
    if (this.state.tab === 'charts') renderCharts(this, this.dom.panels.charts);
  }
}

async function start() {
  const started = performance.now();
  const root = el('div', 'app');
  root.id = 'app';
  document.body.appendChild(root);
  try {
    const payload = await decodePayload(document.getElementById('kiln-payload').textContent);
    const model = new Model(payload);
    const app = new App(model, root);
    window.kilnViz = {
      app,
      loadMilliseconds: performance.now() - started,
      selectStage: (stage) => app.selectStage(stage),
      compare: (stage) => app.setCompare(stage),
      search: (text) => { app.dom.search.value = text; app.search(text); },
      nodePoint: (name, pane) => {
        const canvas = pane === 'a' ? app.canvasA : app.canvasB;
        const index = canvas.view.items.findIndex((item) => item.kind === 'node' ? item.node.name === name : item.path === name);
        return index < 0 ? null : canvas.screenPoint(index);
      },
      focusName: (name) => {
        const index = app.canvasB.view.items.findIndex((item) => item.kind === 'node' && item.node.name === name);
        if (index >= 0) app.centerBoth(app.canvasB, index, 1);
        return index >= 0;
      },
    };
    document.body.dataset.ready = 'true';
  } catch (error) {
    root.appendChild(el('pre', 'error', 'Could not open this report: ' + error));
    document.body.dataset.ready = 'error';
    throw error;
  }
}

start();
