"""A small evaluation harness: tasks registered by name, a runner, predictions files.

The conventions follow the two harnesses most multimodal papers use. From **lmms-eval** the
task: data, a prompt per item (``doc_to_text``, with a model-specific suffix), a target
(``doc_to_target``), a per-item scorer (``process_results``) and an aggregation, registered by
name. From **VLMEvalKit** the split between *inference* (the model's predictions, saved to a
file) and *evaluation* (scoring a predictions file, possibly much later or with another judge),
so a score can be recomputed without rerunning the model.

A :class:`Model` is any ``generate``-style function wrapped with its prompt habits
(:mod:`utils.evaluation.models` wraps BLIP-2 and LLaVA); a :class:`Task` knows its items and
how to score one answer; :func:`run` asks, scores and returns a :class:`Result` that can be saved
(:meth:`Result.save`) and read back (:func:`load_predictions`, :func:`score_predictions`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from utils import runtime
from utils.evaluation.stats import Interval, bootstrap_interval
from utils.shapes import BACKGROUND, Scene

STYLES = ("short", "choice", "caption", "long")  # how a model should be asked: one word, a letter, a caption, free text
IMAGE_CONDITIONS = ("image", "blank", "none")  # MMStar's question: does the answer need the picture?


class EvaluationError(ValueError):
    """A task, a model or a predictions file that cannot be scored; the message says what to fix."""


@dataclass(frozen=True)
class Item:
    """One benchmark question. ``image`` is a PIL image, or None for a text-only question."""

    id: str
    question: str
    target: Any
    image: Any = None
    scene: Scene | None = None
    kind: str = ""


@dataclass(frozen=True)
class Task:
    """A benchmark: ``items`` to ask in ``style``, and ``score(answer, item) -> float`` for one answer.

    ``summarise(result)`` (optional) turns the per-item scores into the benchmark's own numbers
    (POPE's F1, MMBench's CircularEval ...); the default is the mean score.
    """

    name: str
    items: Sequence[Item]
    score: Callable[[str, Item], float]
    style: str = "short"
    max_new_tokens: int = 6
    summarise: Callable[[Result], dict[str, float]] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # what the scorer was built from (e.g. the questions)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise EvaluationError(f"task {self.name!r}: unknown style {self.style!r}; choose one of {', '.join(STYLES)}")
        ids = [it.id for it in self.items]
        if not ids:
            raise EvaluationError(f"task {self.name!r} has no items")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise EvaluationError(f"task {self.name!r}: the item id {dup!r} is used twice; ids must be unique")


@dataclass(frozen=True)
class Model:
    """A model as the harness sees it: ``answer(images, questions, style, max_new_tokens) -> answers``.

    ``images[i]`` may be None (ask without a picture); the wrapper adds its own prompt format.
    """

    name: str
    answer: Callable[[list[Any], list[str], str, int], list[str]]


@dataclass
class Result:
    task: str
    model: str
    ids: list[str]
    predictions: list[str]
    scores: list[float]
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores)

    def interval(self, level: float = 0.95, seed: int = 0, clusters: Sequence[str] | None = None) -> Interval:
        """The bootstrap interval of :attr:`score` (over questions, or over ``clusters`` of them)."""
        return bootstrap_interval(self.scores, level, seed=seed, clusters=clusters)

    def save(self, path: Path | str) -> Path:
        """Write the predictions (and scores) as JSON: {"task", "model", "predictions": [{"id", "answer"}], ...}."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": i, "answer": p, "score": s} for i, p, s in zip(self.ids, self.predictions, self.scores)]
        path.write_text(json.dumps({"task": self.task, "model": self.model, "predictions": rows,
                                    "summary": self.summary}, indent=1), encoding="utf-8")
        return path


# --- the registry ------------------------------------------------------------------------------
TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        known = ", ".join(sorted(TASKS)) or "none yet (build them with utils.evaluation.shapes_bench.register_all())"
        raise EvaluationError(f"no task named {name!r}; registered: {known}")
    return TASKS[name]


# --- running -------------------------------------------------------------------------------------
def without_image(task: Task, condition: str) -> Task:
    """The task asked with the real picture ("image"), a blank canvas ("blank") or no picture ("none")."""
    if condition not in IMAGE_CONDITIONS:
        raise EvaluationError(f"unknown image condition {condition!r}; choose one of {', '.join(IMAGE_CONDITIONS)}")
    if condition == "image":
        return task
    from PIL import Image

    def swap(item: Item) -> Item:
        blank = Image.new("RGB", item.image.size, BACKGROUND) if item.image is not None else None
        return replace(item, image=blank if condition == "blank" else None)

    return replace(task, name=f"{task.name}[{condition}]", items=[swap(it) for it in task.items])


def score_all(task: Task, model_name: str, ids: Sequence[str], predictions: Sequence[str]) -> Result:
    items = {it.id: it for it in task.items}
    scores = [float(task.score(p, items[i])) for i, p in zip(ids, predictions)]
    result = Result(task.name, model_name, list(ids), list(predictions), scores)
    result.summary = task.summarise(result) if task.summarise else {"score": result.score}
    return result


def run(task: Task, model: Model, *, batch_size: int = 256, limit: int | None = None,
        out_dir: Path | str | None = None) -> Result:
    """Ask ``model`` every item of ``task`` (the first ``limit``), score the answers, and save them
    to ``out_dir/<model>/<task>.json`` when ``out_dir`` is given. A progress bar shows in full mode."""
    items = list(task.items)[:limit]
    answers: list[str] = []
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc=f"{model.name}: {task.name}", unit="batch",
                      disable=runtime.MODE == "tiny" or len(starts) < 2):
        chunk = items[start:start + batch_size]
        got = model.answer([it.image for it in chunk], [it.question for it in chunk], task.style, task.max_new_tokens)
        if len(got) != len(chunk):
            raise EvaluationError(f"{model.name} returned {len(got)} answers for {len(chunk)} questions")
        answers += [g if isinstance(g, str) else "" for g in got]
    result = score_all(task, model.name, [it.id for it in items], answers)
    if out_dir is not None:
        result.save(Path(out_dir) / model.name / f"{task.name}.json")
    return result


# --- predictions files -----------------------------------------------------------------------------
def load_predictions(path: Path | str, task: Task, *, allow_empty: bool = False) -> dict[str, str]:
    """A predictions file's ``{id: answer}``, checked against ``task``.

    Refused, with the reason: a file that is not JSON or lacks a "predictions" list; rows without
    a string "id" and "answer"; an id twice; ids the task does not have; ids of the task the file
    lacks; empty answers (a model that said nothing is scored wrong only if ``allow_empty``).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path} does not exist: run the model first (harness.run(..., out_dir=...))") from None
    except json.JSONDecodeError as err:
        raise EvaluationError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                              "was the file cut short while it was being written?") from None
    rows = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise EvaluationError(f"{path} has no \"predictions\" list; expected "
                              '{"task": ..., "model": ..., "predictions": [{"id": ..., "answer": ...}, ...]}')
    if isinstance(data.get("task"), str) and data["task"] != task.name:
        raise EvaluationError(f"{path} holds predictions for task {data['task']!r}, not {task.name!r}")
    out: dict[str, str] = {}
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("answer"), str):
            raise EvaluationError(f"{path}: prediction {n} is {row!r}; each needs a string \"id\" and a string \"answer\"")
        if row["id"] in out:
            raise EvaluationError(f"{path}: the id {row['id']!r} appears twice (predictions {n} and an earlier one)")
        out[row["id"]] = row["answer"]
    expected = [it.id for it in task.items]
    unknown = [i for i in out if i not in set(expected)]
    missing = [i for i in expected if i not in out]
    if unknown:
        raise EvaluationError(f"{path}: {len(unknown)} ids are not questions of {task.name!r} (first: {unknown[:3]}); "
                              "is it the predictions file of another task or another version of it?")
    if missing:
        raise EvaluationError(f"{path}: {len(missing)} of the {len(expected)} questions of {task.name!r} have no "
                              f"prediction (first: {missing[:3]}); rerun the model on them")
    empty = [i for i, a in out.items() if not a.strip()]
    if empty and not allow_empty:
        raise EvaluationError(f"{path}: {len(empty)} answers are empty (first: {empty[:3]}); if the model really said "
                              "nothing, pass allow_empty=True to score them as wrong")
    return out


def score_predictions(path: Path | str, task: Task, *, allow_empty: bool = False) -> Result:
    """Score a saved predictions file against ``task`` (VLMEvalKit's evaluation step)."""
    predictions = load_predictions(path, task, allow_empty=allow_empty)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    ids = [it.id for it in task.items]
    return score_all(task, str(data.get("model", "unknown")), ids, [predictions[i] for i in ids])
