"""Chapter 0's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

from utils import checks


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


def stub(a, b):
    raise NotImplementedError


def test_relation_checker() -> None:
    assert checks.check_relation_from_boxes(solution, quiet=True).passed
    assert checks.check_relation_from_boxes(stub, quiet=True).status == checks.NOT_ATTEMPTED
    flipped = checks.check_relation_from_boxes(flipped_y, quiet=True)
    assert flipped.status == checks.WRONG and "y grows downwards" in flipped.message
    for planted in (horizontal_only, corners_not_centres, long_words):
        assert checks.check_relation_from_boxes(planted, quiet=True).status == checks.WRONG, planted.__name__
