"""Exercise checkers: pass the solution, say "not attempted" for the stub, catch planted mistakes,
and never raise -- so a chapter runs under nbval with its stubs in place."""

from __future__ import annotations

import pytest

from utils import checks


def test_run_check_verdicts_and_printing(capsys: pytest.CaptureFixture) -> None:
    assert checks.run_check("9.9 (demo)", lambda: None).passed
    assert "✅ Exercise 9.9 (demo): passed" in capsys.readouterr().out

    def stub():
        raise NotImplementedError

    assert checks.run_check("9.9", stub, quiet=True).status == checks.NOT_ATTEMPTED

    def wrong():
        checks.expect(1 == 2, "one is not two")

    verdict = checks.run_check("9.9", wrong, quiet=True)
    assert verdict.status == checks.WRONG and verdict.message == "one is not two"

    def crashes():
        return {}["missing"]

    verdict = checks.run_check("9.9", crashes, quiet=True)
    assert verdict.status == checks.WRONG and "KeyError" in verdict.message


def test_expect_close_reports_shape_and_value_problems() -> None:
    import torch

    with pytest.raises(checks.Wrong, match=r"expected shape \(2,\), got \(3,\)"):
        checks.expect_close(torch.zeros(3), torch.zeros(2), "")
    with pytest.raises(checks.Wrong, match="max abs difference 1"):
        checks.expect_close(torch.ones(2), torch.zeros(2), "")
    with pytest.raises(checks.Wrong, match="expected a torch.Tensor, got list"):
        checks.expect_close([0.0], torch.zeros(1), "")


# --- Exercise 0.1 -----------------------------------------------------------------------------

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
