"""Visualizer at scale: builds the 10,441-node stacked-blocks model (tests/viz_support.py), runs
-O2 with snapshots, times the Python side (layered layout per stage, packing, writing the page)
and the browser side in headless Chromium (open, full and close-up redraws, stage switch, search,
collapse, pan frames), and writes bench/results/viz_10k.json.

    python bench/viz_scale.py [--blocks 360] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

BROWSER_PROBE = """async () => {
  const app = kilnViz.app, canvas = app.canvasB;
  const time = (work) => { const t = performance.now(); work(); return performance.now() - t; };
  const frames = async (count, step) => {
    const times = [];
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      step(i); canvas.draw();
      await new Promise((resolve) => requestAnimationFrame(resolve));
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    return { median: times[times.length >> 1], max: times[times.length - 1] };
  };
  const result = { boxes: canvas.view.items.length, edges: canvas.view.edges.length };
  canvas.fit(false);
  result.draw_whole_graph_ms = time(() => canvas.draw());
  result.pan_whole_graph_frames_ms = await frames(30, () => { canvas.camera.x += 3; });
  canvas.centerOn(Math.floor(canvas.view.items.length / 2), 0.9);
  result.draw_readable_zoom_ms = time(() => canvas.draw());
  result.pan_readable_zoom_frames_ms = await frames(30, () => { canvas.camera.y -= 20; });
  result.zoom_frames_ms = await frames(30, (i) => canvas.zoom(i < 15 ? 0.8 : 1.25, 400, 300));
  result.select_stage_ms = time(() => { app.selectStage(0); canvas.draw(); });
  result.select_stage_back_ms = time(() => { app.selectStage(app.lastChangedStage()); canvas.draw(); });
  result.search_ms = time(() => { kilnViz.search('softmax'); canvas.draw(); });
  result.search_matches = app.dom.searchCount.textContent;
  result.collapse_repeated_blocks_ms = time(() => { app.setCollapseMode('blocks'); canvas.draw(); });
  result.collapsed_boxes = canvas.view.items.length;
  result.expand_ms = time(() => { app.setCollapseMode('none'); canvas.draw(); });
  return result;
}"""


def python_side(blocks: int, folder: pathlib.Path) -> tuple[dict, pathlib.Path]:
    import compiler
    import viz_support
    from compiler.viz import write_report
    from compiler.viz.pack import pack_report

    os.environ["KILN_VERIFY"] = "0"
    model = viz_support.stacked_blocks_model(blocks)
    started = time.perf_counter()
    compiled = compiler.compile(model, backend="onnx", opt_level=2, keep_snapshots=True)
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    payload = pack_report(compiled.report)
    pack_seconds = time.perf_counter() - started
    path = folder / "viz_10k.html"
    started = time.perf_counter()
    write_report(compiled.report, str(path))
    write_seconds = time.perf_counter() - started
    return {
        "nodes_input": len(model.graph.node),
        "nodes_output": compiled.report.after["nodes"],
        "passes": len(compiled.report.passes),
        "distinct_stages": sum(1 for stage in payload["stages"] if stage["same_as"] is None),
        "compile_with_snapshots_s": round(compile_seconds, 3),
        "layout_s_per_distinct_stage": [stage["layout_seconds"] for stage in payload["stages"] if stage["same_as"] is None],
        "pack_s": round(pack_seconds, 3),
        "write_html_s": round(write_seconds, 3),
        "html_bytes": path.stat().st_size,
    }, path


def browser_side(path: pathlib.Path, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        started = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_function("document.body.dataset.ready === 'true'", timeout=120000)
        open_seconds = time.perf_counter() - started
        result = {"open_s": round(open_seconds, 3), "decode_and_first_view_ms": page.evaluate("kilnViz.loadMilliseconds"),
                  "chromium": browser.version}
        result.update(page.evaluate(BROWSER_PROBE))
        browser.close()
    return {key: (round(value, 2) if isinstance(value, float) else value) for key, value in result.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=360)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "viz_10k.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        python_numbers, path = python_side(args.blocks, pathlib.Path(folder))
        browser_numbers = browser_side(path, args.chromium)
    record = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}",
              "python": python_numbers, "browser": browser_numbers}
    text = json.dumps(record, indent=1)
    pathlib.Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
