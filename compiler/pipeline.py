"""Pipelines: flat named lists of passes, with fixed-point groups, written as text for the CLI and
reproducers ("dce,fold_constants,fixpoint(simplify,cse,dce)") and kept as presets -O0 ... -O3."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Union

from .errors import OptionError


@dataclass(frozen=True)
class PassStep:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class FixedPoint:
    """Run `steps` again and again until none of them changes the graph; at most `max_iterations`
    rounds in a row may change it without making it smaller than it has been."""

    steps: tuple["Step", ...]
    max_iterations: int = 8

    def __str__(self) -> str:
        inner = ",".join(str(s) for s in self.steps)
        suffix = f":{self.max_iterations}" if self.max_iterations != 8 else ""
        return f"fixpoint{suffix}({inner})"


Step = Union[PassStep, FixedPoint]


@dataclass
class Pipeline:
    steps: list[Step] = field(default_factory=list)

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps)

    def pass_names(self) -> list[str]:
        names: list[str] = []
        for step in self.steps:
            names.extend(_names_of(step))
        return names

    @classmethod
    def parse(cls, text: str) -> "Pipeline":
        """Parse "a,b,fixpoint(c,d)" (also "fixpoint:4(...)" for an iteration cap)."""
        tokens = re.findall(r"fixpoint(?::\d+)?\(|\)|,|[^,()]+", text.replace(" ", ""))
        steps, rest = _parse_steps(tokens, text)
        if rest:
            raise OptionError(f"unbalanced parentheses in pipeline {text!r}")
        return cls(steps)

    def without(self, names: Iterable[str]) -> tuple["Pipeline", list[str]]:
        """A copy with the named passes removed; returns it and the names actually dropped."""
        names = set(names)
        dropped: list[str] = []

        def keep(step: Step) -> Step | None:
            if isinstance(step, PassStep):
                if step.name in names:
                    dropped.append(step.name)
                    return None
                return step
            inner = tuple(s for s in (keep(s) for s in step.steps) if s is not None)
            return FixedPoint(inner, step.max_iterations) if inner else None

        return Pipeline([s for s in (keep(s) for s in self.steps) if s is not None]), dropped


def _names_of(step: Step) -> list[str]:
    if isinstance(step, PassStep):
        return [step.name]
    names: list[str] = []
    for inner in step.steps:
        names.extend(_names_of(inner))
    return names


def _parse_steps(tokens: list[str], text: str) -> tuple[list[Step], list[str]]:
    steps: list[Step] = []
    while tokens:
        token = tokens.pop(0)
        if token == ",":
            continue
        if token == ")":
            return steps, [")"] + tokens
        if token.startswith("fixpoint"):
            cap = int(token[9:-1]) if ":" in token else 8
            inner, tokens = _parse_steps(tokens, text)
            if not tokens or tokens[0] != ")":
                raise OptionError(f"missing ')' in pipeline {text!r}")
            tokens = tokens[1:]
            steps.append(FixedPoint(tuple(inner), cap))
        else:
            steps.append(PassStep(token))
    return steps, []


_PRESETS: dict[tuple[int, str | None], str] = {}


def register_preset(level: int, pipeline: str, backend: str | None = None) -> None:
    """Declare the pipeline of `-O<level>` (for one backend, or for all when backend is None)."""
    _PRESETS[(level, backend)] = pipeline


def preset(level: int, backend: str | None = None) -> Pipeline:
    """The pipeline for `-O<level>` and `backend` (backend-specific preset first)."""
    from .plugins import load_plugins

    load_plugins()
    if level not in (0, 1, 2, 3):
        raise OptionError(f"optimization level must be 0 to 3, not {level}")
    text = _PRESETS.get((level, backend), _PRESETS.get((level, None)))
    if text is None:
        return Pipeline([])
    return Pipeline.parse(text)


def build_pipeline(
    opt_level: int,
    backend: str | None,
    passes: str | None = None,
    disable: Iterable[str] = (),
) -> tuple[Pipeline, list[str]]:
    """The preset for (level, backend) edited by `passes` and `disable`; also the log lines that
    say what was changed. `passes` replaces the preset, or extends it when every entry starts
    with '+'."""
    pipeline = preset(opt_level, backend)
    log: list[str] = []
    if passes:
        entries = [p for p in passes.split(",") if p]
        if entries and all(e.startswith("+") for e in entries):
            extra = Pipeline.parse(",".join(e[1:] for e in entries))
            pipeline = Pipeline(pipeline.steps + extra.steps)
            log.append(f"appended to -O{opt_level}: {extra}")
        else:
            pipeline = Pipeline.parse(passes)
            log.append(f"pipeline replaced by --passes: {pipeline}")
    disable = [d for d in disable if d]
    if disable:
        pipeline, dropped = pipeline.without(disable)
        for name in disable:
            if name in dropped:
                log.append(f"skipped pass {name} (disabled)")
            else:
                log.append(f"--disable {name}: no such pass in the pipeline")
    return pipeline, log
