"""The visualizer in a real browser: headless Chromium (Debian's package, driven by Playwright)
opens reports from disk, selects a pass, searches a node, opens the inspector, compares and
collapses, takes a screenshot, runs no injected script, and stays responsive at 10,000 nodes."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import pytest

import compiler
from compiler.cli import main
from compiler.viz import write_report

import viz_support
from conftest import SAMPLES

pytestmark = pytest.mark.browser

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """Debian's chromium (scripts/install_browser.sh installs it), or another Chrome on PATH."""
    override = os.environ.get("KILN_CHROMIUM")
    if override and os.access(override, os.X_OK):
        return override
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/snap/bin/chromium"):
        if os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (run scripts/install_browser.sh, or set KILN_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


class PageProbe:
    """A page that records console errors, page errors, dialogs and CSP violations."""

    def __init__(self, browser, width: int = 1500, height: int = 900):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dialog)
        self.page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));"
        )

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: pathlib.Path, timeout_ms: int = 30000) -> float:
        started = time.perf_counter()
        self.page.goto(path.as_uri())
        self.page.wait_for_function("document.body.dataset.ready", timeout=timeout_ms)
        assert self.page.evaluate("document.body.dataset.ready") == "true", self.errors
        return time.perf_counter() - started

    def close(self) -> None:
        self.page.close()


def test_transformer_report_select_search_inspect_screenshot(browser, tmp_path) -> None:
    compiled = compiler.compile(str(SAMPLES / "transformer_torchscript.onnx"), backend="onnx", opt_level=3, keep_snapshots=True)
    # report sections as the quantization pass and the ASIC simulator write them (sections contract)
    compiled.report.sections["quantization"] = {"mode": "int8", "profile": "default", "layers": [
        {"node": "/q_proj/MatMul", "tensor": "onnx::MatMul_153", "kind": "weight", "scale": 0.00098, "zero_point": 0, "sqnr_db": 41.25, "max_abs_error": 0.00049},
        {"node": "/k_proj/MatMul", "tensor": "onnx::MatMul_154", "kind": "weight", "scale": 0.00101, "zero_point": 0, "sqnr_db": 17.5, "max_abs_error": 0.0061}]}
    compiled.report.sections["asic"] = {"config": {}, "total": {}, "layers": [
        {"node": "/q_proj/MatMul", "op": "MatMul", "kind": "array", "cycles": 4096, "utilization": 0.5}]}
    report = tmp_path / "transformer.html"
    write_report(compiled.report, str(report))
    probe = PageProbe(browser)
    page = probe.page
    try:
        probe.open(report)
        # select a pass that changed the graph: pane B shows the graph after it, pane A the one before
        row = page.locator("#pass-list li.pass-row.modified").first
        label = row.locator(".pass-label").inner_text()
        row.click()
        assert "active" in row.get_attribute("class")
        stage = int(row.get_attribute("data-stage"))
        assert page.locator(".pane-b .pane-title").inner_text().startswith(f"B · stage {stage}: after {label}")
        assert page.locator(".pane-a .pane-title").inner_text().startswith(f"A · stage {stage - 1}:")
        counts = page.evaluate(f"(() => {{ const d = kilnViz.app.model.diff({stage - 1}, {stage});"
                               "return [d.added.size, d.removed.size, d.changed.size]; })()")
        marks = page.evaluate("[[...kilnViz.app.canvasB.marks.values()], [...kilnViz.app.canvasA.marks.values()]]")
        assert marks[0].count("added") == counts[0] and marks[1].count("removed") == counts[1] and sum(counts) > 0
        assert marks[0].count("changed") == counts[2]
        nodes = page.evaluate(f"kilnViz.app.model.records[{stage}].ids.length")
        boxes = page.evaluate("kilnViz.app.canvasB.view.items.filter((item) => item.kind === 'node').length")
        assert boxes == nodes and nodes > 50
        # passes that changed nothing can be hidden
        unchanged = page.locator("#pass-list li.pass-row.unchanged").count()
        assert unchanged > 0
        page.check("#hide-unchanged")
        assert page.locator("#pass-list li.pass-row.unchanged.hidden").count() == unchanged
        assert page.locator("#pass-list li.pass-row.modified.hidden").count() == 0
        page.uncheck("#hide-unchanged")
        # zoom at the pointer with the wheel, then fit
        box = page.locator("#graph-b").bounding_box()
        scale = page.evaluate("kilnViz.app.canvasB.camera.scale")
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 400)
        page.wait_for_timeout(50)
        assert page.evaluate("kilnViz.app.canvasB.camera.scale") < scale * 0.7
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2 + 60, steps=4)
        page.mouse.up()
        # the panes are linked: the node nearest pane B's centre sits at the same place in pane A
        linked = page.evaluate("""(() => {
            const a = kilnViz.app.canvasA, b = kilnViz.app.canvasB, [cx, cy] = b.toWorld(b.canvas.clientWidth / 2, b.canvas.clientHeight / 2);
            const near = b.view.items.filter((item) => item.kind === 'node' && a.view.byUid.has(item.uid))
                .sort((p, q) => Math.hypot(p.x + p.w / 2 - cx, p.y - cy) - Math.hypot(q.x + q.w / 2 - cx, q.y - cy))[0];
            const pa = a.screenPoint(a.view.byUid.get(near.uid)), pb = b.screenPoint(b.view.byUid.get(near.uid));
            const ra = a.canvas.getBoundingClientRect(), rb = b.canvas.getBoundingClientRect();
            return [a.camera.scale === b.camera.scale, Math.round(pa.x - ra.left - pb.x + rb.left), Math.round(pa.y - pb.y)];
        })()""")
        assert linked == [True, 0, 0]
        page.click("#fit")
        # search by op type: results list, Enter jumps to the first match and opens the inspector
        page.fill("#search", "softmax")
        assert page.locator("#search-results li").count() == 1
        assert page.locator(".search-count").inner_text() == "1 match"
        page.press("#search", "Enter")
        assert page.locator("#inspector .inspector-title .op").inner_text() == "Softmax"
        assert page.locator("#inspector .node-name").inner_text() == "/Softmax"
        assert "float[" in page.locator("#inspector table.values").first.inner_text()
        page.fill("#search", "")
        # click a node on the canvas: the inspector shows its weight statistics and scope
        point = page.evaluate("kilnViz.nodePoint('/q_proj/MatMul')")
        page.evaluate("kilnViz.focusName('/q_proj/MatMul')")
        page.wait_for_timeout(50)
        point = page.evaluate("kilnViz.nodePoint('/q_proj/MatMul')")
        page.mouse.click(point["x"], point["y"])
        inspector = page.locator("#inspector").inner_text()
        assert page.locator("#inspector .node-name").inner_text() == "/q_proj/MatMul"
        assert "weight " in inspector and "sparsity" in inspector and "float[64,64]" in inspector.replace(" ", "")
        assert page.locator("#inspector .chip").all_inner_texts() == ["q_proj"]
        quantization = page.locator("#inspector .section-quantization").inner_text()
        assert "sqnr_db\t41.25" in quantization and "scale\t9.800e-4" in quantization and "kind\tweight" in quantization
        assert "cycles\t4,096" in page.locator("#inspector .section-asic").inner_text()
        page.screenshot(path=str(tmp_path / "viz.png"))
        assert (tmp_path / "viz.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # charts: op histogram of the stage and time per pass
        page.click("#tab-charts")
        titles = page.locator("#charts .chart-title").all_inner_texts()
        assert titles[0].startswith(f"Op types at stage {stage}") and "Time per pass" in titles
        assert "Quantization SQNR per layer (int8, higher is better)" in titles and "Simulator cycles per layer" in titles
        assert "41.3 dB" in page.locator("#charts").text_content() and "17.5 dB" in page.locator("#charts").text_content()
        assert "MatMul" in page.locator("#charts svg").first.text_content()
        # side by side with the input graph, then collapse the name scopes
        page.select_option("#compare-stage", "0")
        assert page.locator(".pane-a .pane-title").inner_text().startswith("A · stage 0: input graph")
        page.select_option("#collapse-mode", "1")
        groups = page.evaluate("kilnViz.app.canvasB.view.items.filter((item) => item.kind === 'group').map((item) => item.path).sort()")
        assert {"norm1", "norm2", "q_proj", "k_proj", "v_proj"} <= set(groups)
        assert page.evaluate("kilnViz.app.canvasB.view.items.length") < boxes
        assert probe.errors == [] and probe.dialogs == []
    finally:
        probe.close()


def test_hostile_strings_run_no_script_in_chromium(browser, tmp_path) -> None:
    compiled = compiler.compile(viz_support.hostile_model(), backend="onnx", keep_snapshots=True, passes=viz_support.BASE_PIPELINE)
    report = tmp_path / "hostile.html"
    write_report(compiled.report, str(report))
    probe = PageProbe(browser)
    page = probe.page
    try:
        probe.open(report)
        # show every stage and inspect every node of every stage, then every side tab
        stages = page.evaluate("kilnViz.app.model.stages.length")
        shown = []
        for stage in range(stages):
            page.evaluate(f"kilnViz.selectStage({stage})")
            for uid in page.evaluate(f"[...kilnViz.app.model.records[{stage}].uidToVid.keys()]"):
                page.evaluate(f"kilnViz.app.selectNode({uid}, 'b', true)")
                shown.append(page.locator("#inspector").inner_text())
            for tab in ("changes", "charts", "inspector"):
                page.click(f"#tab-{tab}")
        page.fill("#search", "<script>")
        page.press("#search", "Enter")
        page.wait_for_timeout(100)
        text = "\n".join(shown)
        # the payloads are on the page as text ...
        assert viz_support.SCRIPT_PAYLOAD in text and viz_support.IMG_PAYLOAD in text and viz_support.SVG_PAYLOAD in text
        assert f"Op{viz_support.SCRIPT_PAYLOAD}" in text
        # ... and nothing of them ran or was even tried
        assert page.evaluate("window.__kilnXss") is None
        assert probe.dialogs == []
        assert page.evaluate("window.__violations") == []
        assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
        assert page.evaluate("document.scripts.length") == 3
        assert probe.errors == []
    finally:
        probe.close()


MONKEY = """(() => {
  const app = kilnViz.app, modes = ['none', 'blocks', '1', '2', '3'];
  let seed = 7;
  const pick = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  for (let step = 0; step < 300; step++) {
    const action = pick(9), stages = app.model.stages.length;
    if (action === 0) app.selectStage(pick(stages));
    else if (action === 1) app.setCompare(pick(3) === 0 ? null : pick(stages));
    else if (action === 2) app.followPrevious();
    else if (action === 3) app.setCollapseMode(modes[pick(5)]);
    else if (action === 4) { const pane = pick(2) ? 'b' : 'a', canvas = pane === 'a' ? app.canvasA : app.canvasB;
      if (canvas.view && canvas.view.items.length) app.clickItem(pane, pick(canvas.view.items.length)); }
    else if (action === 5) { if (app.canvasB.view.items.length) app.openItem('b', pick(app.canvasB.view.items.length)); }
    else if (action === 6) { kilnViz.search(['mat', 'add', '', 'gemm', 'layers.1'][pick(5)]); app.nextMatch(); }
    else if (action === 7) { app.state.tab = ['inspector', 'changes', 'charts'][pick(3)]; app.renderPanels(); }
    else { const links = document.querySelectorAll('#inspector .link, #changes .link'); if (links.length) links[pick(links.length)].click(); }
    app.canvasA.draw(); app.canvasB.draw();
  }
  return 'done';
})()"""


def test_fused_node_provenance_and_random_use(browser, tmp_path) -> None:
    with viz_support.gemm_fusion_pass() as fusion:
        compiled = compiler.compile(viz_support.stacked_blocks_model(2), backend="onnx", keep_snapshots=True,
                                    passes=f"{viz_support.BASE_PIPELINE},{fusion}")
    report = tmp_path / "fused.html"
    write_report(compiled.report, str(report))
    probe = PageProbe(browser)
    page = probe.page
    try:
        probe.open(report)
        page.locator(f"#pass-list li.pass-row[data-pass='{fusion}']").click()
        assert page.locator("#pass-list li.active .pass-badges").inner_text().split() == ["+6", "−12", "~8"]
        page.fill("#search", "gemm")
        assert page.locator(".search-count").inner_text() == "6 matches"
        page.press("#search", "Enter")
        inspector = page.locator("#inspector")
        assert inspector.locator(".inspector-title").inner_text().split() == ["Gemm", "added", "fused"]
        originals = inspector.locator(".fused-list li").all_inner_texts()
        assert originals == ["/layers.0/attn/o/Add", "/layers.0/attn/o/MatMul"]
        assert "viz_test_matmul_add_to_gemm" in inspector.inner_text()
        # pane A (the stage before) marks the original nodes; both were removed by the fusion
        related = page.evaluate("kilnViz.app.canvasA.view.items.filter((item, i) => kilnViz.app.canvasA.marks.get(i) === 'related')"
                                ".map((item) => item.node.name).sort()")
        assert related == sorted(originals)
        inspector.locator(".fused-list li").first.click()
        assert page.locator(".pane-a .pane-title").inner_text().startswith("A · stage")
        assert page.evaluate(MONKEY) == "done"
        assert probe.errors == [] and probe.dialogs == []
    finally:
        probe.close()


def test_10k_node_report_loads_and_stays_responsive(browser, tmp_path, monkeypatch) -> None:
    """10,441 nodes, two stages: the page decodes and draws it in seconds and redraws in a
    frame or a few (bench/viz_scale.py records the numbers)."""
    monkeypatch.setenv("KILN_VERIFY", "0")
    compiled = compiler.compile(viz_support.stacked_blocks_model(360), backend="onnx", keep_snapshots=True, passes="fold_constants")
    report = tmp_path / "big.html"
    write_report(compiled.report, str(report))
    probe = PageProbe(browser)
    page = probe.page
    try:
        seconds = probe.open(report, timeout_ms=60000)
        timings = page.evaluate(
            """(() => {
                const app = kilnViz.app, canvas = app.canvasB, time = (work) => { const t = performance.now(); work(); return performance.now() - t; };
                canvas.fit(false);
                const whole = time(() => canvas.draw());
                canvas.centerOn(5000, 1.0);
                const close = time(() => canvas.draw());
                const stage = time(() => { app.selectStage(0); canvas.draw(); });
                const search = time(() => { kilnViz.search('softmax'); canvas.draw(); });
                return { whole, close, stage, search, matches: app.dom.searchCount.textContent, boxes: canvas.view.items.length };
            })()"""
        )
        print(f"10k nodes in Chromium: open {seconds:.2f} s, {timings}")
        assert timings["boxes"] == 10441 + 2 and timings["matches"] == "360 matches", timings
        # generous bounds for a loaded 2-core CI machine; measured here: 16-74 ms, 4-31 ms, 11-20 ms, 13-64 ms
        assert seconds < 30 and timings["whole"] < 2000 and timings["close"] < 500, (seconds, timings)
        assert timings["stage"] < 5000 and timings["search"] < 2000, timings
        assert probe.errors == [], probe.errors
    finally:
        probe.close()
