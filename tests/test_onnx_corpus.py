"""Round trip of onnx's whole test corpus through the IR: import, verify, export, check, run.

For every model of the kinds node, simple, pytorch-converted and pytorch-operator: the exported
model passes onnx.checker (full_check) wherever the original does, and gives the same outputs as
the original under onnxruntime wherever onnxruntime runs the original."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.backend.test.loader as corpus
import onnxruntime as ort
import pytest

from compiler.onnx_io import export_model, import_model
from compiler.verify import verify

KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator")


@dataclass
class Tally:
    total: int = 0
    imported: int = 0
    checker_applicable: int = 0
    checker_passed: int = 0
    ort_applicable: int = 0
    ort_matched: int = 0
    failures: list[str] = field(default_factory=list)


def _model_of(case) -> onnx.ModelProto:
    if case.model is not None:
        return case.model
    return onnx.load(os.path.join(case.model_dir, "model.onnx"))


def _inputs_of(case, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    if case.data_sets:
        feeds = []
        names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        for inputs, _outputs in case.data_sets:
            feeds.append(dict(zip(names, inputs)))
        return feeds
    feeds = []
    for folder in sorted(os.listdir(case.model_dir)):
        if not folder.startswith("test_data_set"):
            continue
        path = os.path.join(case.model_dir, folder)
        arrays = {}
        for index in range(len(model.graph.input)):
            file = os.path.join(path, f"input_{index}.pb")
            if os.path.exists(file):
                tensor = onnx.TensorProto()
                with open(file, "rb") as handle:
                    tensor.ParseFromString(handle.read())
                arrays[tensor.name or model.graph.input[index].name] = onnx.numpy_helper.to_array(tensor)
        feeds.append(arrays)
    return feeds


def _session(model: onnx.ModelProto):
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _passes_checker(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:
        return False


def _same(expected, actual) -> bool:
    if len(expected) != len(actual):
        return False
    for want, got in zip(expected, actual):
        if isinstance(want, list):
            if not isinstance(got, list) or not _same(want, got):
                return False
            continue
        if want is None or got is None:
            if want is not got:
                return False
            continue
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape or want.dtype != got.dtype:
            return False
        if want.dtype.kind in "fc":
            if not np.array_equal(want, got, equal_nan=True):
                return False
        elif not np.array_equal(want, got):
            return False
    return True


def _round_trip(case, tally: Tally) -> None:
    model = _model_of(case)
    tally.total += 1
    graph = import_model(model)
    verify(graph)
    exported = export_model(graph)
    tally.imported += 1
    if _passes_checker(model):
        tally.checker_applicable += 1
        try:
            onnx.checker.check_model(exported, full_check=True)
            tally.checker_passed += 1
        except Exception as error:
            tally.failures.append(f"{case.name}: checker: {str(error).splitlines()[0]}")
    try:
        original_session = _session(model)
    except Exception:
        return  # onnxruntime cannot run the original; nothing to compare
    feeds_list = _inputs_of(case, model)
    try:
        expected = [original_session.run(None, feeds) for feeds in feeds_list]
    except Exception:
        return
    tally.ort_applicable += 1
    try:
        exported_session = _session(exported)
        actual = [exported_session.run(None, feeds) for feeds in feeds_list]
    except Exception as error:
        tally.failures.append(f"{case.name}: onnxruntime on exported model: {str(error).splitlines()[0][:200]}")
        return
    if all(_same(e, a) for e, a in zip(expected, actual)):
        tally.ort_matched += 1
    else:
        tally.failures.append(f"{case.name}: outputs differ from the original under onnxruntime")


@pytest.mark.parametrize("kind", KINDS)
def test_corpus_round_trip(kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = corpus.load_model_tests(kind=kind)
    tally = Tally()
    for case in cases:
        try:
            _round_trip(case, tally)
        except Exception as error:  # import/verify/export must never fail on the corpus
            tally.failures.append(f"{case.name}: {type(error).__name__}: {error}")
    print(
        f"\n[corpus {kind}] models {tally.total}, imported+exported {tally.imported}, "
        f"checker {tally.checker_passed}/{tally.checker_applicable}, "
        f"onnxruntime identical {tally.ort_matched}/{tally.ort_applicable}"
    )
    assert not tally.failures, "\n".join(tally.failures[:20])
    assert tally.total == len(cases) and tally.imported == tally.total
    assert tally.checker_passed == tally.checker_applicable
    assert tally.ort_matched == tally.ort_applicable
