"""Chapter 7's exercise checkers: VQA accuracy, reading a multiple-choice option, CircularEval, a
bootstrap interval, and the simulation of how many questions separate two models."""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np

from utils.checks.core import Verdict, Wrong, expect, run_check
from utils.evaluation import choice, stats

# (prediction, already-normalised answers): every agreement level, and a prediction nobody gave
_VQA_CASES = [("red", ["red"] * 10), ("red", ["red"] * 4 + ["blue"] * 6), ("red", ["red"] * 3 + ["blue"] * 7),
              ("red", ["red"] * 2 + ["blue"] * 8), ("red", ["red"] + ["blue"] * 9), ("red", ["blue"] * 10),
              ("2", ["2", "3", "2", "3", "3", "3", "2", "4", "3", "3"])]


def _no_leave_one_out(prediction: str, answers: list[str]) -> float:
    return min(1.0, answers.count(prediction) / 3)


def _leave_one_out(prediction: str, answers: list[str]) -> float:
    """The rule on answers taken as they are (the exercise's answers are already normalised)."""
    n = answers.count(prediction)
    return sum(min(1.0, (n - (a == prediction)) / 3) for a in answers) / len(answers)


def check_vqa_accuracy(fn: Callable, quiet: bool = False) -> Verdict:
    """Exercise 7.1: min(#others who gave the answer / 3, 1), averaged over leave-one-out subsets."""
    def test() -> None:
        for prediction, answers in _VQA_CASES:
            got = fn(prediction, list(answers))
            expect(isinstance(got, (int, float)), f"return one number, got {type(got).__name__}")
            want = _leave_one_out(prediction, answers)
            if abs(got - want) < 1e-9:
                continue
            n = answers.count(prediction)
            if abs(got - _no_leave_one_out(prediction, answers)) < 1e-9:
                raise Wrong(f"with {n} of 10 annotators agreeing you return {got:.3f}, expected {want:.3f}: average "
                            "over the ten subsets that leave one annotator out, each scored min(matches / 3, 1) -- "
                            "leaving out one of the agreeing annotators lowers that subset's count by one")
            if abs(got - n / 10) < 1e-9:
                raise Wrong(f"with {n} of 10 agreeing you return {got:.3f} (the share of annotators), expected "
                            f"{want:.3f}: the rule saturates at three, min(matches / 3, 1)")
            raise Wrong(f"vqa_accuracy({prediction!r}, <{n} of 10 agree>) = {got:.3f}, expected {want:.3f}")
        rng = random.Random(3)
        for _ in range(50):
            answers = [rng.choice("abc") for _ in range(rng.choice([5, 10]))]
            got, want = fn("a", answers), _leave_one_out("a", answers)
            expect(abs(got - want) < 1e-9, f"for answers {answers} you return {got:.4f}, expected {want:.4f}; "
                                           "does your code assume exactly ten annotators?")
    return run_check("7.1 (vqa_accuracy)", test, quiet=quiet)


_OPTION_CASES = ["B", "(B)", "Answer: B", "The answer is B.", "b", "the circle is blue", "BLUE", "A blue circle",
                 "blue or red", "There.", "", "C and D", "purple", "I'm tired", "A or B: blue", "[D]*"]


def check_read_option(fn: Callable, quiet: bool = False) -> Verdict:
    """Exercise 7.2: VLMEvalKit's rule, on the chapter's example options."""
    options = ["red", "blue", "green", "yellow"]
    c = choice.Choice("q", "What colour is the circle?", tuple(options), "blue")

    def test() -> None:
        three = choice.Choice("q3", "What shape is it?", ("circle", "square", "triangle"), "square")
        cases = [(answer, c) for answer in _OPTION_CASES] + [(answer, three) for answer in ("D", "C", "a square")]
        for answer, question in cases:
            want = choice.extract_choice(answer, question)
            got = fn(answer, list(question.options))
            if got == want:
                continue
            if answer == "A blue circle":
                raise Wrong(f"read_option({answer!r}) = {got!r}, expected {want!r}: the rule is literal -- the capital "
                            "'A' stands alone as a word, so it is read as a letter before any option text")
            if answer == "I'm tired":
                raise Wrong(f"read_option({answer!r}) = {got!r}, expected {want!r}: the rule matches option text inside "
                            "the lower-cased answer as a substring, not as a whole word ('tired' contains 'red')")
            if answer == "D" and question is three:
                raise Wrong("read_option('D', three options) must be None: only the letters of the options that exist "
                            "(A, B, C) count")
            if answer == "A or B: blue":
                raise Wrong(f"read_option({answer!r}) = {got!r}, expected {want!r}: two letters stand alone, so the "
                            "letter rule fails and the option text decides")
            if answer == "b":
                raise Wrong(f"read_option('b') = {got!r}, expected {want!r}: letters count only as capitals (compare "
                            "the words with 'A', 'B', ... as they are), and 'b' contains no option's text")
            if want is None:
                raise Wrong(f"read_option({answer!r}) = {got!r}, expected None: when no letter and no single option "
                            "text can be read (or several can), return None rather than guess")
            raise Wrong(f"read_option({answer!r}) = {got!r}, expected {want!r}: turn .()[],:;!*#{{}} into spaces and "
                        "look for exactly one option letter as a word; failing that, exactly one option text in the "
                        "lower-cased answer")
    return run_check("7.2 (read_option)", test, quiet=quiet)


def check_circular_accuracy(fn: Callable, quiet: bool = False) -> Verdict:
    """Exercise 7.3: a question counts only if every rotation is right."""
    def test() -> None:
        always_a = [[k == (3 - i) % 4 for k in range(4)] for i in range(8)]  # right in exactly one rotation
        got = fn(always_a)
        expect(isinstance(got, (int, float)), f"return one number, got {type(got).__name__}")
        if abs(got - 0.25) < 1e-9:
            raise Wrong("a model right in one rotation of four scores 0.25 vanilla but 0 circular: a question counts "
                        "only if all its rotations are right (you seem to average over rotations)")
        expect(abs(got) < 1e-9, f"a model right in exactly one rotation of each question must score 0, got {got}")
        rng = random.Random(5)
        for _ in range(30):
            right = [[rng.random() < 0.8 for _ in range(rng.choice([2, 3, 4]))] for _ in range(rng.randint(1, 12))]
            want = sum(all(r) for r in right) / len(right)
            got = fn(right)
            if abs(got - want) < 1e-9:
                continue
            if abs(got - sum(r[0] for r in right) / len(right)) < 1e-9:
                raise Wrong("you score the first rotation only (vanilla); CircularEval needs every rotation right")
            raise Wrong(f"for {right} you return {got:.4f}, expected {want:.4f}")
    return run_check("7.3 (circular_accuracy)", test, quiet=quiet)


def check_bootstrap_ci(fn: Callable, quiet: bool = False) -> Verdict:
    """Exercise 7.4: the percentile bootstrap; checked on its properties, not against one output."""
    def test() -> None:
        ones = fn([1.0] * 50)
        expect(isinstance(ones, (tuple, list)) and len(ones) == 2, f"return (low, high), got {ones!r}")
        expect(abs(ones[0] - 1) < 1e-9 and abs(ones[1] - 1) < 1e-9,
               f"every question right leaves nothing to resample: the interval must be (1, 1), got {ones}")
        scores = [1.0] * 140 + [0.0] * 60  # 70% of 200
        low, high = fn(scores)
        expect(low < 0.7 < high, f"the interval ({low:.3f}, {high:.3f}) must contain the observed score 0.7")
        half = 1.96 * math.sqrt(0.7 * 0.3 / 200)
        if high - low < half * 0.5:
            raise Wrong(f"the interval ({low:.3f}, {high:.3f}) is far too narrow (expected about +-{half:.3f}): "
                        "resample N questions with replacement and take the quantiles of the resampled means -- "
                        "not the quantiles of the scores, and not the standard error of one resample")
        if high - low > half * 3:
            raise Wrong(f"the interval ({low:.3f}, {high:.3f}) is far too wide (expected about +-{half:.3f}): take the "
                        "(1-level)/2 and (1+level)/2 quantiles of the resampled means")
        expect(abs((high - low) / 2 - half) < 0.25 * half, f"half-width {(high - low) / 2:.4f}, expected close to the "
                                                            f"normal approximation's {half:.4f}")
        rare = fn([1.0] * 2 + [0.0] * 198)  # 1%: the normal approximation's interval reaches below 0
        expect(rare[0] >= 0, f"for 2 right of 200 your interval starts at {rare[0]:.4f}, below 0: that is the normal "
                             "approximation p +- 1.96 se, not the bootstrap; the percentile bootstrap takes its ends "
                             "from resampled means, which can never be negative")
        narrow = fn(scores, level=0.5)
        expect(narrow[1] - narrow[0] < high - low, "a 50% interval must be narrower than a 95% one: use `level`")
        rng = np.random.default_rng(1)
        covered = 0
        for t in range(100):
            sample = (rng.random(150) < 0.6).astype(float).tolist()
            lo, hi = fn(sample, seed=t)
            covered += lo <= 0.6 <= hi
        expect(covered >= 88, f"your 95% intervals covered the true accuracy in {covered} of 100 simulated benchmarks; "
                              "an honest interval covers it about 95 times")
    return run_check("7.4 (bootstrap_ci)", test, quiet=quiet)


def check_separated_share(fn: Callable, needed: Callable = stats.questions_needed, quiet: bool = False) -> Verdict:
    """Exercise 7.5: the simulated power at the formula's N is close to 0.8, and lower at N / 4."""
    def test() -> None:
        n = needed(0.75, 0.70)
        share = fn(0.75, 0.70, n, trials=2000, seed=0)
        expect(isinstance(share, (int, float)) and 0 <= share <= 1, f"return a share in [0, 1], got {share!r}")
        if share > 0.97:
            raise Wrong(f"at N = {n} you separate the models in {share:.0%} of trials; expected about 80%. Is your test "
                        "one-sided, or does it compare the true accuracies instead of the simulated ones?")
        if share < 0.05:
            raise Wrong(f"at N = {n} you separate the models in {share:.0%} of trials; expected about 80%. Compare "
                        "|z| with 1.96, where z = (acc_a - acc_b) / sqrt(p (1 - p) (2 / n)) and p is the pooled accuracy")
        expect(0.74 <= share <= 0.86, f"at the formula's N = {n} the simulated power is {share:.0%}; expected about 80% "
                                      "(0.74 to 0.86 with 2,000 trials). A one-sided test, or a test at the 10% level, "
                                      "gives about 88%: compare |z| with 1.96")
        quarter = fn(0.75, 0.70, n // 4, trials=2000, seed=1)
        expect(quarter < share - 0.2, f"with a quarter of the questions the power should drop well below 0.8 "
                                      f"(about 0.3); you get {quarter:.0%}")
        same = fn(0.7, 0.7, 500, trials=2000, seed=2)
        expect(same <= 0.08, f"two equally good models are 'separated' in {same:.0%} of trials; a 5% test should do so "
                             "about 5% of the time")
    return run_check("7.5 (separated_share)", test, quiet=quiet)
