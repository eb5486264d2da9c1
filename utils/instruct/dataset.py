"""Data sets: generate records for many images, keep the rejected ones with their reasons, and describe them."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from utils.instruct.context import ImageContext
from utils.instruct.facts import FactChecker
from utils.instruct.llm import ReplyFormatError
from utils.instruct.records import (
    RESPONSE_TYPES, Generator, check_response_type, make_record, record_turns, record_type, strip_image,
    validate_record,
)
from utils.instruct.rules import rule_based_turns

# --- data sets ---------------------------------------------------------------------------------

def generate_dataset(
    contexts: Sequence[ImageContext],
    types: Sequence[str] = RESPONSE_TYPES,
    seed: int = 0,
    generator: str | Generator = "rules",
    *,
    cycle_types: bool = False,
    checker: type[FactChecker] = FactChecker,
    checker_options: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Any, list[str]]]]:
    """Records for every context and response type, validated and fact-checked.

    Each context gets every type in ``types`` (or, with ``cycle_types``, context i gets
    ``types[i % len(types)]`` only). ``generator`` is ``"rules"`` (:func:`rule_based_turns`)
    or any ``generator(context, response_type, rng) -> turns``, such as :func:`llm_generator`.
    Every record draws from its own ``random.Random`` seeded by ``seed`` and its id, so the same
    seed gives the same records in any order. Returns ``(records, rejected)``, where rejected
    holds ``(record, reasons)``, or ``(record_id, reasons)`` when no record could be built (a
    malformed reply); each reason starts with its category ('count: ...', 'format: ...').
    """
    if isinstance(types, str):
        raise TypeError(f"types must be a list of response types, got the string {types!r}; use [{types!r}]")
    if not types:
        raise ValueError(f"types is empty; choose from {RESPONSE_TYPES}")
    for t in types:
        check_response_type(t)
    if generator == "rules":
        generator = rule_based_turns
    elif not callable(generator):
        raise TypeError(f"generator must be 'rules' or a callable (context, response_type, rng) -> turns, got {generator!r}")
    records: list[dict[str, Any]] = []
    rejected: list[tuple[Any, list[str]]] = []
    used: Counter[str] = Counter()
    for i, context in enumerate(contexts):
        if not isinstance(context, ImageContext):
            raise TypeError(f"contexts[{i}] is a {type(context).__name__}; build it with ImageContext.from_scene or from_coco")
        for response_type in ([types[i % len(types)]] if cycle_types else types):
            record_id = f"{context.stem}-{response_type}"
            used[record_id] += 1
            if used[record_id] > 1:
                record_id += f"-{used[record_id]}"
            try:
                turns = generator(context, response_type, random.Random(f"{seed}/{record_id}"))
            except ReplyFormatError as error:
                rejected.append((record_id, [f"format: {error}"]))
                continue
            record = make_record(record_id, context.image, turns)
            problems = validate_record(record)
            problems += checker(context, **(checker_options or {})).check_record(record)
            if problems:
                rejected.append((record, problems))
            else:
                records.append(record)
    return records, rejected


def _words(text: str) -> int:
    return len(strip_image(text).split())


def _mean_median(values: Sequence[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.median(values)) if values else (0.0, 0.0)


@dataclass(frozen=True)
class DatasetStats:
    """Summary of a generated data set; ``print(stats)`` shows it as a small table.

    A turn is one question with its answer (a human and a gpt entry).
    """

    records: dict[str, int]  # per response type, plus "all"
    turns: dict[str, float]  # mean turns per record, per type and "all"
    question_words: dict[str, tuple[float, float]]  # (mean, median) words per question
    answer_words: dict[str, tuple[float, float]]  # (mean, median) words per answer
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)  # rejection category -> records rejected for it

    @property
    def rejection_rate(self) -> float:
        total = self.records.get("all", 0) + self.rejected
        return self.rejected / total if total else 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One dict per type (and 'all'), for ``pandas.DataFrame(stats.rows())``."""
        return [{"type": t, "records": self.records[t], "turns/record": round(self.turns[t], 2),
                 "question words (mean)": round(self.question_words[t][0], 1),
                 "answer words (mean)": round(self.answer_words[t][0], 1),
                 "answer words (median)": self.answer_words[t][1]} for t in self.records]

    def table(self) -> str:
        lines = [f"{'type':<18}{'records':>8}{'turns/rec':>10}{'q words':>9}{'a words mean':>14}{'a words median':>16}"]
        for t in self.records:
            lines.append(f"{t:<18}{self.records[t]:>8}{self.turns[t]:>10.2f}{self.question_words[t][0]:>9.1f}"
                         f"{self.answer_words[t][0]:>14.1f}{self.answer_words[t][1]:>16.1f}")
        lines.append(f"rejected: {self.rejected} of {self.records.get('all', 0) + self.rejected} ({self.rejection_rate:.1%})")
        lines += [f"  {reason:<16}{count:>6}" for reason, count in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def dataset_stats(records: Sequence[Mapping[str, Any]], rejected: Sequence[tuple[Any, Sequence[str]]] = ()) -> DatasetStats:
    """Counts per response type, turns per record, question and answer lengths, rejections by reason."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_type.setdefault(record_type(r), []).append(r)
    order = [t for t in (*RESPONSE_TYPES, "vqa", "caption", "other") if t in by_type]
    groups = {t: by_type[t] for t in order}
    groups["all"] = list(records)
    counts, turns, q_words, a_words = {}, {}, {}, {}
    for t, group in groups.items():
        pairs = [turn for r in group for turn in record_turns(r)]
        counts[t] = len(group)
        turns[t] = len(pairs) / len(group) if group else 0.0
        q_words[t] = _mean_median([_words(q) for q, _ in pairs])
        a_words[t] = _mean_median([_words(a) for _, a in pairs])
    reasons: Counter[str] = Counter()
    for _, problems in rejected:
        reasons.update({p.split(":", 1)[0].strip() for p in problems})  # a record counts once per category
    return DatasetStats(counts, turns, q_words, a_words, len(rejected), dict(reasons))
