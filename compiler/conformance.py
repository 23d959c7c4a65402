"""ONNX node conformance: every node test case the installed onnx ships, compiled through
compiler.compile(model, backend="cpu", opt_level=0), run and compared like onnx's backend runner.

    python -m compiler.conformance [--ops A,B] [--cases REGEX] [--jobs N] [--failures] [--json OUT]

prints the pass count and a per-op table; with --check it exits non-zero when a case outside the
expected-failure list fails or a listed case passes."""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

EXPECTED_FAILURES_PATH = Path(__file__).with_name("conformance_expected_failures.txt")
CASE_TIMEOUT_SECONDS = 120
_CASES: dict[str, Any] | None = None


@dataclass
class CaseResult:
    """The outcome of one node test case: status is "pass", "fail" (wrong numbers) or "error"."""

    name: str
    op: str
    status: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def load_cases() -> dict[str, Any]:
    """name -> onnx TestCase for every node case of the installed onnx (loaded once per process)."""
    global _CASES
    if _CASES is None:
        from onnx.backend.test.loader import load_model_tests

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CASES = {case.name: case for case in load_model_tests(kind="node")}
    return _CASES


def case_op(case: Any, cases: dict[str, Any] | None = None) -> str:
    """The op a case tests: its single op type, or for an expanded function body the op of the
    case it expands."""
    base = re.sub(r"_expanded(_ver\d+)?$", "", case.name)
    if base != case.name and cases is not None and base in cases:
        return case_op(cases[base])
    op_types = [node.op_type for node in case.model.graph.node]
    distinct = [op for op in dict.fromkeys(op_types) if op != "Constant"] or op_types
    return distinct[-1] if distinct else "?"


def select_cases(ops: Sequence[str] = (), pattern: str | None = None) -> list[str]:
    """Names of the cases whose op is in `ops` (all when empty) and whose name matches `pattern`."""
    cases = load_cases()
    wanted = set(ops)
    regex = re.compile(pattern) if pattern else None
    names = []
    for name, case in cases.items():
        if wanted and case_op(case, cases) not in wanted:
            continue
        if regex and not regex.search(name):
            continue
        names.append(name)
    return sorted(names)


def run_case(name: str) -> CaseResult:
    """Compile and run one case; numerical mismatches and exceptions become a failed result."""
    cases = load_cases()
    case = cases[name]
    op = case_op(case, cases)
    start = time.perf_counter()
    try:
        with _deadline(CASE_TIMEOUT_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _compile_and_compare(case)
        status, detail = "pass", ""
    except AssertionError as error:
        status, detail = "fail", _one_line(error)
    except Exception as error:  # noqa: BLE001  (any failure of the backend is a result here)
        status, detail = "error", f"{type(error).__name__}: {_one_line(error)}"
    return CaseResult(name, op, status, detail, time.perf_counter() - start)


def _compile_and_compare(case: Any) -> None:
    import compiler

    compiled = compiler.compile(case.model, backend="cpu", opt_level=0)
    for inputs, expected in case.data_sets:
        outputs = compiled(*[as_numpy(value) for value in inputs])
        assert_similar_outputs([as_numpy(value) for value in expected], list(outputs), case.rtol, case.atol)


def as_numpy(value: Any) -> Any:
    """A case's stored value (numpy, TensorProto, SequenceProto, OptionalProto) as numpy/lists."""
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, onnx.SequenceProto):
        return [as_numpy(item) for item in numpy_helper.to_list(value)]
    if isinstance(value, onnx.OptionalProto):
        return as_numpy(numpy_helper.to_optional(value))
    if isinstance(value, (list, tuple)):
        return [as_numpy(item) for item in value]
    return value


def assert_similar_outputs(expected: Sequence[Any], outputs: Sequence[Any], rtol: float, atol: float) -> None:
    """onnx's backend-runner comparison: same count, shapes and dtypes; allclose within rtol/atol."""
    np.testing.assert_equal(len(outputs), len(expected))
    for index, (reference, output) in enumerate(zip(expected, outputs)):
        if isinstance(reference, (list, tuple)):
            assert isinstance(output, (list, tuple)), f"output {index} should be a sequence, got {type(output).__name__}"
            assert_similar_outputs(list(reference), list(output), rtol, atol)
            continue
        if reference is None or output is None:
            assert reference is None and output is None, f"output {index}: expected {reference!r}, got {output!r}"
            continue
        output = np.asarray(output)
        reference = np.asarray(reference)
        np.testing.assert_array_equal(output.shape, reference.shape, err_msg=f"output {index} has incorrect shape")
        if reference.dtype == object:
            np.testing.assert_array_equal(output, reference)
            continue
        np.testing.assert_equal(output.dtype, reference.dtype)
        tolerance = rtol
        if output.dtype.name == "bfloat16":
            tolerance = max(rtol, 2**-6)
        if output.dtype.kind not in "biufc":
            output, reference = output.astype(np.float32), reference.astype(np.float32)
        np.testing.assert_allclose(output, reference, rtol=tolerance, atol=atol)


class _deadline:
    """Raise TimeoutError after `seconds` (SIGALRM; a no-op off the main thread)."""

    def __init__(self, seconds: int):
        self.seconds = seconds
        self.armed = False

    def __enter__(self) -> None:
        try:
            signal.signal(signal.SIGALRM, self._expire)
            signal.alarm(self.seconds)
            self.armed = True
        except (ValueError, AttributeError):
            self.armed = False

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.alarm(0)

    def _expire(self, *_: Any) -> None:
        raise TimeoutError(f"case ran longer than {self.seconds} s")


def _one_line(error: BaseException) -> str:
    text = re.sub(r" at 0x[0-9a-f]+", "", " ".join(str(error).split()))
    return text[:300]


def run_cases(names: Sequence[str], jobs: int = 1) -> list[CaseResult]:
    """Run cases in this process (jobs=1) or in `jobs` forked worker processes."""
    os.environ.setdefault("KILN_NO_CACHE", "1")
    if jobs <= 1:
        return [run_case(name) for name in names]
    load_cases()  # loaded before forking so every worker shares it
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs, maxtasksperchild=100) as pool:
        return list(pool.imap(run_case, names, chunksize=4))


def read_expected_failures(path: Path = EXPECTED_FAILURES_PATH) -> dict[str, str]:
    """case name -> reason, from lines `case_name  reason` (blank lines and # comments skipped)."""
    if not path.exists():
        return {}
    expected: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        expected[name.strip()] = reason.strip()
    return expected


def unexpected(results: Iterable[CaseResult], expected: dict[str, str]) -> tuple[list[CaseResult], list[CaseResult]]:
    """(failures not in the list, listed cases that now pass)."""
    results = list(results)
    new_failures = [r for r in results if not r.passed and r.name not in expected]
    new_passes = [r for r in results if r.passed and r.name in expected]
    return new_failures, new_passes


def write_expected_failures(results: Sequence[CaseResult], reason_files: Sequence[str], path: Path) -> int:
    """Write the failing cases as `case  reason` lines; a reason given in one of `reason_files`
    (lines `case<TAB>reason`) wins over the runner's own error text. Returns the count."""
    reasons: dict[str, str] = {}
    for reason_file in reason_files:
        for line in Path(reason_file).read_text().splitlines():
            name, _, reason = line.strip().partition("\t")
            if name and reason and not name.startswith("#"):
                reasons[name] = " ".join(reason.split())
    failing = sorted((r for r in results if not r.passed), key=lambda r: r.name)
    lines = ["# ONNX node cases expected to fail on --backend cpu (python -m compiler.conformance --check)",
             *(f"{r.name}  {reasons.get(r.name) or f'{r.status}: {r.detail}'}" for r in failing)]
    from compiler.onnx_io import write_bytes_atomic

    write_bytes_atomic(str(path), "\n".join(lines) + "\n")
    return len(failing)


def op_table(results: Sequence[CaseResult]) -> str:
    """One line per op: cases, passed, failed, and the pass ratio; worst ops first."""
    by_op: dict[str, list[CaseResult]] = collections.defaultdict(list)
    for result in results:
        by_op[result.op].append(result)
    rows = sorted(by_op.items(), key=lambda item: (sum(r.passed for r in item[1]) / len(item[1]), item[0]))
    lines = [f"{'op':<34}{'cases':>6}{'pass':>6}{'fail':>6}"]
    for op, group in rows:
        passed = sum(r.passed for r in group)
        lines.append(f"{op:<34}{len(group):>6}{passed:>6}{len(group) - passed:>6}")
    return "\n".join(lines)


def summary(results: Sequence[CaseResult]) -> str:
    passed = sum(r.passed for r in results)
    total = len(results)
    ratio = 100.0 * passed / total if total else 0.0
    return f"passed {passed}/{total} node cases ({ratio:.1f}%)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compiler.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default="", help="comma-separated op types (default: all)")
    parser.add_argument("--cases", default=None, help="regular expression on case names")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    parser.add_argument("--json", default=None, help="write per-case results to this JSON file")
    parser.add_argument("--write-expected", nargs="*", default=None, metavar="REASONS",
                        help="rewrite the expected-failure list from this run (reasons from these files win)")
    parser.add_argument("--check", action="store_true", help="exit 1 on a failure outside the expected-failure list or a listed pass")
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    names = select_cases(ops, args.cases)
    start = time.perf_counter()
    results = run_cases(names, args.jobs)
    elapsed = time.perf_counter() - start
    print(op_table(results))
    if args.failures:
        for result in results:
            if not result.passed:
                print(f"{result.name}\t{result.status}\t{result.detail}")
    print(f"{summary(results)} in {elapsed:.0f} s")
    if args.json:
        from compiler.onnx_io import write_bytes_atomic

        write_bytes_atomic(args.json, json.dumps([asdict(r) for r in results], indent=1).encode())
    if args.write_expected is not None:
        count = write_expected_failures(results, args.write_expected, EXPECTED_FAILURES_PATH)
        print(f"wrote {count} expected failures to {EXPECTED_FAILURES_PATH}")
    if args.check:
        new_failures, new_passes = unexpected(results, read_expected_failures())
        for result in new_failures:
            print(f"unexpected failure: {result.name}: {result.detail}")
        for result in new_passes:
            print(f"unexpected pass (remove it from the list): {result.name}")
        return 1 if new_failures or new_passes else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
