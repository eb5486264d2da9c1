"""Chapter 0's exercise checkers: a spatial relation from two boxes, the blind-answer floor, weights in GiB."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from utils.checks.core import Verdict, Wrong, expect, run_check


def check_relation_from_boxes(relation_from_boxes: Callable, quiet: bool = False) -> Verdict:
    """Exercise 0.1: where is box ``a`` relative to box ``b`` -- left, right, above or below?"""
    from utils.shapes import RELATION_WORD, make_scene, relation

    def test() -> None:
        checked = 0
        for i in range(200):
            scene = make_scene(i, seed=123, min_objects=2, max_objects=3)
            for a in scene.objects:
                for b in scene.objects:
                    if a is b:
                        continue
                    answer = relation_from_boxes(a.box, b.box)
                    truth = RELATION_WORD[relation(a, b)]
                    expect(answer in ("left", "right", "above", "below"),
                           f"return one of 'left', 'right', 'above', 'below'; got {answer!r}")
                    if answer != truth:
                        box_a = tuple(round(v, 2) for v in a.box)
                        box_b = tuple(round(v, 2) for v in b.box)
                        hint = "y grows downwards in images, so a smaller y is higher up" if {answer, truth} == {"above", "below"} \
                            else "compare box centres, along the axis where they are further apart"
                        raise Wrong(f"for a={box_a}, b={box_b} you said {answer!r} but a is {truth!r} of b; {hint}")
                    checked += 1
        expect(checked > 0, "no pairs were checked")

    return run_check("0.1 (relation_from_boxes)", test, quiet=quiet)


# --- Exercise 0.2: the floor an image-blind answerer sets ----------------------------------------

def _blind_accuracy(fit_scenes, test_scenes, by_kind: bool = False) -> dict[str, float]:
    """The checker's own count: the most common training answer per question text (or per kind),
    scored on ``test_scenes``; a text never seen in training counts as wrong."""
    from collections import Counter, defaultdict

    key = (lambda q: q.kind) if by_kind else (lambda q: q.text)
    answers: dict[str, Counter] = defaultdict(Counter)
    for scene in fit_scenes:
        for q in scene.questions:
            answers[key(q)][q.answer] += 1
    best = {k: counts.most_common(1)[0][0] for k, counts in answers.items()}
    right, asked = Counter(), Counter()
    for scene in test_scenes:
        for q in scene.questions:
            asked[q.kind] += 1
            right[q.kind] += best.get(key(q)) == q.answer
    return {kind: right[kind] / asked[kind] for kind in asked}


@lru_cache(maxsize=1)
def _blind_split() -> tuple[tuple, tuple]:
    """The checker's fixed split, made once: on it no question text has two answers tied for most
    common, so every correct rule gives these exact counts."""
    from utils.shapes import ShapesWorld

    return tuple(ShapesWorld(1200, seed=24, split="train").scenes), tuple(ShapesWorld(400, seed=24, split="test").scenes)


def check_blind_baseline(blind_baseline: Callable, quiet: bool = False) -> Verdict:
    """Exercise 0.2: accuracy per question kind of answering each question text with its most
    common training answer, without looking at the image."""
    from utils.shapes import QUESTION_KINDS

    def test() -> None:
        train, test_ = _blind_split()
        got = blind_baseline(list(train), list(test_))
        expect(isinstance(got, dict), f"return a dict {{kind: accuracy}}, got {type(got).__name__}")
        missing = [k for k in QUESTION_KINDS if k not in got]
        expect(not missing, f"the dict has no entry for {missing}; there should be one per question kind, "
                            f"{', '.join(QUESTION_KINDS)} (the `kind` field of each Question)")
        extra = [k for k in got if k not in QUESTION_KINDS]
        expect(not extra, f"unexpected keys {extra}: key the result by Question.kind")
        values = {}
        for kind in QUESTION_KINDS:
            value = got[kind]
            value = value.item() if hasattr(value, "item") else value
            expect(isinstance(value, (int, float)), f"the accuracy for {kind!r} should be a number, got {value!r}")
            expect(0 <= value <= 1, f"the accuracy for {kind!r} is {value}: return a share between 0 and 1, "
                                    "not a percentage")
            values[kind] = float(value)
        want = _blind_accuracy(train, test_)

        def same(reference: dict[str, float]) -> bool:
            return all(abs(values[k] - reference[k]) < 1e-9 for k in QUESTION_KINDS)

        if same(want):
            return
        table = ", ".join(f"{k} {values[k]:.3f} (expected {want[k]:.3f})" for k in QUESTION_KINDS)
        if same(_blind_accuracy(train, test_, by_kind=True)):
            hint = ("you took the most common answer of each *kind*; take it per question *text*: "
                    "'Is the circle small or large?' and 'Is the square small or large?' may have different "
                    "habits, and a blind model can learn them")
        elif same(_blind_accuracy(train, train)):
            hint = "you scored on the training scenes; fit the answers on train_scenes, score on test_scenes"
        elif same(_blind_accuracy(test_, test_)):
            hint = ("you counted the answers on the test scenes: that peeks at the test set; count on "
                    "train_scenes only, then score on test_scenes")
        elif any(values[k] == 0 < want[k] for k in QUESTION_KINDS):
            hint = ("some kinds score 0: compare your answer with q.answer exactly as given (same case, no spaces "
                    "added or removed), and look answers up by q.text exactly as given")
        else:
            hint = ("for each question text, count its answers over the training scenes; answer every test "
                    "question with its text's most common answer; score per kind as right / asked")
        raise Wrong(f"{table}. {hint}")

    return run_check("0.2 (blind_baseline)", test, quiet=quiet)


# --- Exercise 0.3: will it fit? --------------------------------------------------------------------

def check_weight_gib(weight_gib: Callable, quiet: bool = False) -> Verdict:
    """Exercise 0.3: the memory of n parameters stored at ``bits`` bits each, in GiB (2**30 bytes)."""

    def test() -> None:
        cases = [(2**30, 8), (2**31, 16), (7_063_427_072, 16), (1_000_000_000, 4), (123_456_789, 32), (6_476_267_520, 4.5)]
        for n, bits in cases:
            got = weight_gib(n, bits)
            got = got.item() if hasattr(got, "item") else got
            expect(isinstance(got, (int, float)), f"return a number of GiB, got {type(got).__name__}")
            want = n * bits / 8 / 2**30
            if abs(got - want) <= 1e-9 * want:
                continue
            if abs(got - n * bits / 8 / 1e9) <= 1e-9 * want:
                hint = "1 GiB = 2**30 bytes, not 1e9 (that is a GB; a GiB is about 7% larger)"
            elif abs(got - n * bits / 2**30) <= 1e-9 * want or abs(got - n * bits / 1e9) <= 1e-9 * want:
                hint = "bits, not bytes: a parameter of `bits` bits takes bits / 8 bytes"
            elif abs(got - n * bits / 8 / 2**20) <= 1e-9 * want or abs(got - n * bits / 8) <= 1e-9 * want:
                hint = "return GiB: divide the bytes by 2**30 (2**20 gives MiB)"
            else:
                hint = "bytes = n_parameters * bits / 8; GiB = bytes / 2**30"
            raise Wrong(f"weight_gib({n:,}, {bits}) = {got:.4g}, expected {want:.4g}. {hint}")

    return run_check("0.3 (weight_gib)", test, quiet=quiet)
