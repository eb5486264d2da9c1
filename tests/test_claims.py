"""utils.claims: a claim that holds returns its number; one that does not says what and by how much."""

from __future__ import annotations

import math

import pytest
import torch

from utils import claims


def test_bounds_return_the_value_when_the_claim_holds() -> None:
    assert claims.at_least("accuracy", 0.97, 0.95) == 0.97
    assert claims.at_most("loss", torch.tensor(0.2), 0.5) == pytest.approx(0.2)
    assert claims.between("yes-ratio", 0.5, 0.4, 0.6) == 0.5
    assert claims.at_least("edge", 0.95, 0.95) == 0.95  # the bound itself is allowed


@pytest.mark.parametrize("check, args, words", [
    (claims.at_least, ("held-out accuracy", 0.71, 0.95), ["held-out accuracy", "at least 0.95", "0.71"]),
    (claims.at_most, ("last loss", 3.2, 2.0), ["last loss", "at most 2", "3.2"]),
    (claims.between, ("yes-ratio", 0.9, 0.4, 0.6), ["yes-ratio", "between 0.4 and 0.6", "0.9"]),
])
def test_a_broken_claim_says_what_was_expected_and_what_came_out(check, args, words) -> None:
    with pytest.raises(claims.ClaimError) as caught:
        check(*args)
    message = str(caught.value)
    assert message.startswith("Claim not met:")
    for word in words:
        assert word in message
    assert "print_environment_report" in message  # how to report it when nothing was changed on purpose


def test_claim_errors_are_assertion_errors() -> None:
    assert issubclass(claims.ClaimError, AssertionError)


def test_nan_never_passes() -> None:
    for check, args in ((claims.at_least, (0.5,)), (claims.at_most, (0.5,)), (claims.between, (0.0, 1.0))):
        with pytest.raises(claims.ClaimError, match="NaN"):
            check("a loss", math.nan, *args)
    with pytest.raises(claims.ClaimError):
        claims.close("outputs", torch.tensor([1.0, math.nan]), torch.tensor([1.0, 1.0]), atol=1.0)


def test_close_returns_the_largest_difference_and_refuses_beyond_the_tolerance() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert claims.close("same", a, a.clone(), atol=0.0) == 0.0
    assert 0 < claims.close("near", a, a + 1e-6, atol=1e-5) < 1e-5
    with pytest.raises(claims.ClaimError, match=r"within 1e-05, but the largest difference is 1\.00e-03"):
        claims.close("far", a, a + 1e-3, atol=1e-5)
    with pytest.raises(claims.ClaimError, match=r"shapes differ, \(2, 2\) against \(4,\)"):
        claims.close("reshaped", a, a.reshape(-1), atol=1.0)
    assert claims.close("numbers", 2.0, 2.0 + 1e-9, atol=1e-6) < 1e-6  # plain floats work too


def test_holds_and_hints() -> None:
    claims.holds("the loss fell", True)
    with pytest.raises(claims.ClaimError, match="the loss fell does not hold in this run. Look at the learning rate"):
        claims.holds("the loss fell", False, hint="Look at the learning rate.")


def test_rounding_tolerance_follows_the_precision() -> None:
    assert claims.rounding(torch.float32) == 1e-5
    assert claims.rounding() == claims.rounding(torch.float64) == 1e-5
    assert claims.rounding(torch.float16) == claims.rounding(torch.bfloat16) == 1e-2
