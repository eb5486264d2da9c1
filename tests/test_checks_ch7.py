"""Chapter 7's checkers pass the worked solutions, wait for the stubs and name the planted mistakes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.solutions import load
from utils import checks
from utils.evaluation import stats

SOLUTIONS = load("07_evaluation_solutions", "vqa_accuracy", "read_option", "circular_accuracy", "bootstrap_ci",
                 "separated_share")


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name, checker", [
    ("vqa_accuracy", checks.check_vqa_accuracy), ("read_option", checks.check_read_option),
    ("circular_accuracy", checks.check_circular_accuracy), ("bootstrap_ci", checks.check_bootstrap_ci),
])
def test_checkers_pass_the_solutions_and_wait_for_the_stubs(name, checker) -> None:
    assert checker(SOLUTIONS[name], quiet=True).passed
    assert checker(stub, quiet=True).status == checks.NOT_ATTEMPTED


def test_separated_share_checker_passes_the_solution_and_waits_for_the_stub() -> None:
    assert checks.check_separated_share(SOLUTIONS["separated_share"], stats.questions_needed, quiet=True).passed
    assert checks.check_separated_share(stub, stats.questions_needed, quiet=True).status == checks.NOT_ATTEMPTED


def test_vqa_checker_names_the_missing_leave_one_out_and_the_missing_cap() -> None:
    no_subsets = checks.check_vqa_accuracy(lambda p, a: min(1.0, a.count(p) / 3), quiet=True)
    assert not no_subsets.passed and "leave one annotator out" in no_subsets.message
    share = checks.check_vqa_accuracy(lambda p, a: a.count(p) / len(a), quiet=True)
    assert not share.passed and "saturates at three" in share.message
    ten = checks.check_vqa_accuracy(lambda p, a: sum(min(1.0, (a.count(p) - (x == p)) / 3) for x in a) / 10, quiet=True)
    assert not ten.passed and "exactly ten annotators" in ten.message


def test_read_option_checker_catches_a_case_insensitive_letter_and_a_guess() -> None:
    def lowercase_letters(answer, options):  # reads "b" as B, and 'a' inside "a blue circle" as A
        letters = "ABCD"[:len(options)]
        words = answer.upper().replace("(", " ").replace(")", " ").replace(".", " ").replace(":", " ").split()
        found = [x for x in letters if x in words]
        if len(found) == 1:
            return found[0]
        named = [x for x, t in zip(letters, options) if t in answer.lower()]
        return named[0] if len(named) == 1 else None

    verdict = checks.check_read_option(lowercase_letters, quiet=True)
    assert not verdict.passed and "capitals" in verdict.message
    guess = checks.check_read_option(lambda answer, options: "A", quiet=True)
    assert not guess.passed


def test_circular_checker_catches_averaging_over_rotations_and_vanilla() -> None:
    averaged = checks.check_circular_accuracy(lambda right: float(np.mean([np.mean(r) for r in right])), quiet=True)
    assert not averaged.passed and "all its rotations" in averaged.message
    vanilla = checks.check_circular_accuracy(lambda right: sum(r[0] for r in right) / len(right), quiet=True)
    assert not vanilla.passed


def test_bootstrap_checker_catches_quantiles_of_the_scores_and_a_fixed_width() -> None:
    def quantiles_of_scores(scores, level=0.95, resamples=2000, seed=0):
        return float(np.quantile(scores, 0.025)), float(np.quantile(scores, 0.975))

    assert not checks.check_bootstrap_ci(quantiles_of_scores, quiet=True).passed

    def wald(scores, level=0.95, resamples=2000, seed=0):  # the normal approximation, not a bootstrap
        m = float(np.mean(scores))
        half = 1.96 * np.sqrt(max(m * (1 - m), 0) / len(scores))
        return m - half, m + half

    verdict = checks.check_bootstrap_ci(wald, quiet=True)
    assert not verdict.passed and "normal approximation" in verdict.message

    def ignores_level(scores, level=0.95, resamples=2000, seed=0):
        values = np.asarray(scores)
        means = values[np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))].mean(1)
        return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))

    verdict = checks.check_bootstrap_ci(ignores_level, quiet=True)
    assert not verdict.passed and "level" in verdict.message


def test_separated_share_checker_catches_a_one_sided_test_and_true_accuracies() -> None:
    def true_accuracies(p_a, p_b, n, trials=400, seed=0):  # the z of the true gap: always "separated"
        z = (p_a - p_b) / np.sqrt(((p_a + p_b) / 2) * (1 - (p_a + p_b) / 2) * 2 / n)
        return float(abs(z) > 1.96)

    verdict = checks.check_separated_share(true_accuracies, stats.questions_needed, quiet=True)
    assert not verdict.passed and "true accuracies" in verdict.message


def test_read_option_checker_catches_whole_word_matching() -> None:
    def whole_words(answer, options):
        letters = "ABCD"[:len(options)]
        spaced = answer
        for mark in ".()[],:;!*#{}":
            spaced = spaced.replace(mark, " ")
        found = [x for x in letters if x in spaced.split()]
        if len(found) == 1:
            return found[0]
        words = answer.lower().replace("'", " ").split()
        named = [x for x, t in zip(letters, options) if t in words]
        return named[0] if len(named) == 1 else None

    verdict = checks.check_read_option(whole_words, quiet=True)
    assert not verdict.passed and "substring" in verdict.message


def test_separated_share_checker_catches_a_one_sided_test() -> None:
    def one_sided(p_a, p_b, n, trials=400, seed=0):
        rng = np.random.default_rng(seed)
        a, b = rng.binomial(n, p_a, trials) / n, rng.binomial(n, p_b, trials) / n
        pooled = (a + b) / 2
        z = (a - b) / np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * 2 / n)
        return float(np.mean(z > 1.645))

    verdict = checks.check_separated_share(one_sided, stats.questions_needed, quiet=True)
    assert not verdict.passed and "one-sided" in verdict.message
