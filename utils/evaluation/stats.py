"""How sure a benchmark score is: bootstrap intervals, a paired test between two models, sample sizes.

A benchmark score is a mean over questions, so it has sampling error: another draw of questions
of the same kind would give another score. The tools here are the ones evaluation papers use:

- :func:`bootstrap_interval`: the percentile bootstrap (resample the questions with replacement,
  recompute the score, take the middle 95% of the resampled scores);
- :func:`paired_bootstrap` and :func:`mcnemar`: two models on the *same* questions, where only the
  questions they disagree on carry information about which is better;
- :func:`questions_needed`: how many questions separate two accuracies that differ by a few points.

Scores are per-question values (1/0 for right/wrong, or a VQA accuracy in [0, 1]); N questions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

RESAMPLES = 10_000  # enough that the interval's ends move by less than 0.1 point between seeds at N >= 200


@dataclass(frozen=True)
class Interval:
    """A score with its confidence interval (``level`` = 0.95 for a 95% interval)."""

    value: float
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]"

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high


def _scores(scores: Sequence[float], what: str = "scores") -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)  # (N,)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what} must be a non-empty list of per-question numbers, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} hold a NaN or an infinity: score every question before taking an interval")
    return values


def bootstrap_interval(scores: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0,
                       clusters: Sequence[str] | None = None) -> Interval:
    """The percentile bootstrap interval of the mean of ``scores``.

    With ``clusters`` (one label per question, e.g. the image it is about), whole clusters are
    resampled instead of single questions: questions about the same image are not independent
    draws, and resampling them one by one makes the interval too narrow.
    """
    values = _scores(scores)
    if clusters is None:
        return ratio_interval(values, np.ones_like(values), level, resamples, seed, scale=1.0)
    if len(clusters) != values.size:
        raise ValueError(f"{len(clusters)} cluster labels for {values.size} scores: give one label per question")
    labels = {c: k for k, c in enumerate(dict.fromkeys(clusters))}
    index = np.array([labels[c] for c in clusters])
    sums = np.bincount(index, weights=values)  # (C,): each cluster's total score
    counts = np.bincount(index).astype(np.float64)  # (C,): its number of questions
    return ratio_interval(sums, counts, level, resamples, seed, scale=1.0)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], level: float = 0.95,
                   resamples: int = RESAMPLES, seed: int = 0, scale: float = 100.0) -> Interval:
    """The percentile bootstrap interval of ``scale * sum(numerators) / sum(denominators)``, resampling
    the (numerator, denominator) pairs together: LLaVA-Bench's relative score (model grades over
    reference grades, x100), or a mean over clusters of questions."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (0.95 for a 95% interval), got {level}")
    top, bottom = _scores(numerators, "numerators"), _scores(denominators, "denominators")
    if top.size != bottom.size:
        raise ValueError(f"{top.size} numerators but {bottom.size} denominators")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, top.size, size=(resamples, top.size))  # (R, N): indices, with replacement
    resampled = scale * top[rows].sum(axis=1) / bottom[rows].sum(axis=1)  # (R,)
    tail = (1 - level) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return Interval(float(scale * top.sum() / bottom.sum()), float(low), float(high), level)


@dataclass(frozen=True)
class PairedComparison:
    difference: Interval  # mean(a) - mean(b) with its bootstrap interval
    only_a: int  # questions a gets right and b wrong
    only_b: int
    p_value: float  # McNemar's exact test on only_a vs only_b (two-sided)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES,
                     seed: int = 0) -> PairedComparison:
    """Model a minus model b on the same questions: the bootstrap interval of the difference (the
    same resampled questions for both, which is what makes it paired) and McNemar's test, which
    needs right/wrong verdicts: a question counts as right when its score is above 0.5 (for VQA
    accuracy, when two or more annotators gave the answer)."""
    a_values, b_values = _scores(a, "a's scores"), _scores(b, "b's scores")
    if a_values.size != b_values.size:
        raise ValueError(f"a paired comparison needs both models' scores on the same questions: "
                         f"{a_values.size} vs {b_values.size}")
    difference = bootstrap_interval(a_values - b_values, level, resamples, seed)
    only_a = int(((a_values > 0.5) & (b_values <= 0.5)).sum())
    only_b = int(((b_values > 0.5) & (a_values <= 0.5)).sum())
    return PairedComparison(difference, only_a, only_b, mcnemar(only_a, only_b))


def mcnemar(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value: under "the models are equally good", each discordant
    question is a fair coin flip, so ``only_a`` is Binomial(only_a + only_b, 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def questions_needed(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Questions per model for a two-sided test at level ``alpha`` to detect accuracies ``p_a`` vs
    ``p_b`` with probability ``power``, when the two models are scored on *independent* questions:

        N = (z_{1-alpha/2} + z_{power})^2 (p_a (1 - p_a) + p_b (1 - p_b)) / (p_a - p_b)^2
    """
    if p_a == p_b:
        raise ValueError("the two accuracies are equal: no number of questions separates them")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return math.ceil(z ** 2 * (p_a * (1 - p_a) + p_b * (1 - p_b)) / (p_a - p_b) ** 2)


def paired_questions_needed(discordant: float, p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """The same for two models on the *same* questions, where a share ``discordant`` of questions
    gets different verdicts from the two (McNemar's normal approximation, Connor 1987):

        N = (z_{1-alpha/2} sqrt(d) + z_{power} sqrt(d - delta^2))^2 / delta^2,  delta = p_a - p_b.
    """
    delta = p_a - p_b
    if delta == 0:
        raise ValueError("the two accuracies are equal: no number of questions separates them")
    most = min(p_a + p_b, 2 - p_a - p_b)  # disagreements need one model right and the other wrong
    if not abs(delta) <= discordant <= most:
        raise ValueError(f"the discordant share must lie between |p_a - p_b| = {abs(delta):.3f} and "
                         f"min(p_a + p_b, 2 - p_a - p_b) = {most:.3f}")
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return math.ceil((za * math.sqrt(discordant) + zb * math.sqrt(discordant - delta ** 2)) ** 2 / delta ** 2)


def coverage(true_p: float, n: int, trials: int = 200, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> float:
    """How often the bootstrap interval of ``n`` simulated right/wrong answers (each right with
    probability ``true_p``) covers ``true_p``: close to ``level`` when the interval is honest (give
    or take the simulation's own error, about 1.5 points at 200 trials)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for t in range(trials):
        answers = (rng.random(n) < true_p).astype(float)  # (n,)
        hits += bootstrap_interval(answers, level, resamples, seed=t).covers(true_p)
    return hits / trials


def exact_interval(right: int, n: int, level: float = 0.95) -> Interval:
    """The Clopper-Pearson ("exact") interval of an accuracy of ``right`` out of ``n``.

    The percentile bootstrap collapses to a point when every answer is right (or every one wrong):
    no resample can differ. The exact interval does not: 120 of 120 gives [97.0%, 100%].
    """
    from scipy.stats import beta

    if not 0 <= right <= n or n < 1:
        raise ValueError(f"need 0 <= right <= n and n >= 1, got right={right}, n={n}")
    tail = (1 - level) / 2
    low = 0.0 if right == 0 else float(beta.ppf(tail, right, n - right + 1))
    high = 1.0 if right == n else float(beta.ppf(1 - tail, right + 1, n - right))
    return Interval(right / n, low, high, level)
