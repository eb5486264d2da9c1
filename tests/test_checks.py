"""The checkers' machinery: verdicts, printing and the comparisons every chapter's checkers use.

Each checker passes the solution, says "not attempted" for the stub, catches planted mistakes and
never raises -- so a chapter runs under nbval with its stubs in place (tests/test_checks_chN.py)."""

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
