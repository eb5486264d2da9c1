"""Chapter 0's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

from collections import Counter, defaultdict

from tests.solutions import load
from utils import checks

SOLUTIONS = load("00_getting_started_solutions", "blind_baseline", "weight_gib")


def centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def solution(a, b):
    (ax, ay), (bx, by) = centre(a), centre(b)
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def flipped_y(a, b):
    answer = solution(a, b)
    return {"above": "below", "below": "above"}.get(answer, answer)


def horizontal_only(a, b):
    return "left" if centre(a)[0] < centre(b)[0] else "right"


def corners_not_centres(a, b):
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def long_words(a, b):
    return {"left": "to the left of", "right": "to the right of"}.get(solution(a, b), solution(a, b))


def stub(*args):
    raise NotImplementedError


def test_relation_checker() -> None:
    assert checks.check_relation_from_boxes(solution, quiet=True).passed
    assert checks.check_relation_from_boxes(stub, quiet=True).status == checks.NOT_ATTEMPTED
    flipped = checks.check_relation_from_boxes(flipped_y, quiet=True)
    assert flipped.status == checks.WRONG and "y grows downwards" in flipped.message
    for planted in (horizontal_only, corners_not_centres, long_words):
        assert checks.check_relation_from_boxes(planted, quiet=True).status == checks.WRONG, planted.__name__


# --- Exercise 0.2: the blind baseline -----------------------------------------------------------------

def _most_common(scenes, key):
    counts = defaultdict(Counter)
    for scene in scenes:
        for q in scene.questions:
            counts[key(q)][q.answer] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


def _score(guess, scenes, key, same=lambda a, b: a == b):
    right, asked = Counter(), Counter()
    for scene in scenes:
        for q in scene.questions:
            asked[q.kind] += 1
            right[q.kind] += key(q) in guess and same(guess[key(q)], q.answer)
    return {kind: right[kind] / asked[kind] for kind in asked}


def per_kind(train, test):
    return _score(_most_common(train, lambda q: q.kind), test, lambda q: q.kind)


def scored_on_train(train, test):
    return _score(_most_common(train, lambda q: q.text), train, lambda q: q.text)


def fitted_on_test(train, test):
    return _score(_most_common(test, lambda q: q.text), test, lambda q: q.text)


def capitalised(train, test):  # "Red" never equals "red"; the digits of the count answers survive
    return _score(_most_common(train, lambda q: q.text), test, lambda q: q.text, lambda a, b: a.capitalize() == b)


def percentages(train, test):
    return {k: 100 * v for k, v in SOLUTIONS["blind_baseline"](train, test).items()}


def no_relation(train, test):
    result = SOLUTIONS["blind_baseline"](train, test)
    result.pop("relation")
    return result


def test_blind_baseline_checker() -> None:
    assert checks.check_blind_baseline(SOLUTIONS["blind_baseline"], quiet=True).passed
    assert checks.check_blind_baseline(stub, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {per_kind: "per question *text*", scored_on_train: "you scored on the training scenes",
             fitted_on_test: "peeks at the test set", capitalised: "same case",
             percentages: "not a percentage", no_relation: "no entry for ['relation']"}
    for planted, hint in hints.items():
        verdict = checks.check_blind_baseline(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


# --- Exercise 0.3: weights in GiB ------------------------------------------------------------------------

def test_weight_gib_checker() -> None:
    assert checks.check_weight_gib(SOLUTIONS["weight_gib"], quiet=True).passed
    assert checks.check_weight_gib(stub, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {(lambda n, bits: n * bits / 8 / 1e9): "not 1e9",
             (lambda n, bits: n * bits / 2**30): "bits, not bytes",
             (lambda n, bits: n * bits / 8 / 2**20): "divide the bytes by 2**30",
             (lambda n, bits: n * 2 / 2**30): "bytes = n_parameters * bits / 8"}
    for planted, hint in hints.items():
        verdict = checks.check_weight_gib(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message
