"""Chapter 4's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import re

import pytest
import torch

from utils import checks, llava

from tests import solutions
from utils.instruct import FactChecker, box_relation


def not_attempted(*args):
    raise NotImplementedError


# --- Exercise 4.1: spatial-relation questions from boxes ---------------------------------------------


def spatial_solution(boxes, margin=0.05):
    turns = []
    for i, (label_a, a) in enumerate(boxes):
        for j, (label_b, b) in enumerate(boxes):
            if i == j:
                continue
            dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
            dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            if abs(abs(dx) - abs(dy)) < margin:
                continue
            if abs(dx) >= abs(dy):
                relation = "to the left of" if dx < 0 else "to the right of"
            else:
                relation = "above" if dy < 0 else "below"
            turns.append((f"Where is the {label_a} relative to the {label_b}?", f"The {label_a} is {relation} the {label_b}."))
    return turns


def spatial_with_library(boxes, margin=0.05):
    """The same answer, written with utils.instruct.box_relation."""
    turns = []
    for i, (label_a, a) in enumerate(boxes):
        for j, (label_b, b) in enumerate(boxes):
            dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
            dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            if i != j and abs(abs(dx) - abs(dy)) >= margin:
                turns.append((f"Where is the {label_a} relative to the {label_b}?",
                              f"The {label_a} is {box_relation(a, b)} the {label_b}."))
    return turns


def replace_relations(mapping):
    def planted(boxes, margin=0.05):
        out = []
        for q, a in spatial_solution(boxes, margin):
            for old, new in mapping.items():
                if f" is {old} the " in a:
                    a = a.replace(f" is {old} the ", f" is {new} the ")
                    break
            out.append((q, a))
        return out
    return planted


def swapped_xy(boxes, margin=0.05):
    return [(q, a) for q, a in spatial_solution([(label, (b[1], b[0], b[3], b[2])) for label, b in boxes], margin)]


def minor_axis(boxes, margin=0.05):
    turns = []
    for i, (label_a, a) in enumerate(boxes):
        for j, (label_b, b) in enumerate(boxes):
            dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
            dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            if i == j or abs(abs(dx) - abs(dy)) < margin:
                continue
            if abs(dx) < abs(dy):
                relation = "to the left of" if dx < 0 else "to the right of"
            else:
                relation = "above" if dy < 0 else "below"
            turns.append((f"Where is the {label_a} relative to the {label_b}?", f"The {label_a} is {relation} the {label_b}."))
    return turns


def corners(boxes, margin=0.05):
    # Boxes shrunk to their top-left corner: centres become the corners.
    return spatial_solution([(label, (b[0], b[1], b[0], b[1])) for label, b in boxes], margin)


def one_way(boxes, margin=0.05):
    order = {label: k for k, (label, _) in enumerate(boxes)}
    return [(q, a) for q, a in spatial_solution(boxes, margin)
            if order[re.match(r"Where is the (.+) relative to the (.+)\?", q).group(1)]
            < order[re.match(r"Where is the (.+) relative to the (.+)\?", q).group(2)]]


def with_self(boxes, margin=0.05):
    turns = []
    for i, (label, _) in enumerate(boxes):
        others = spatial_solution(boxes, margin)
        turns.append((f"Where is the {label} relative to the {label}?", f"The {label} is to the left of the {label}."))
        turns += [t for t in others if t[0].startswith(f"Where is the {label} ")]
    return turns if len(boxes) > 1 else []


@pytest.mark.parametrize("answer", [spatial_solution, spatial_with_library])
def test_spatial_questions_checker_passes_the_solution(answer, capsys: pytest.CaptureFixture) -> None:
    assert checks.check_spatial_questions(answer).passed
    assert "✅ Exercise 4.1 (spatial_questions): passed" in capsys.readouterr().out


def test_spatial_questions_checker_says_not_attempted() -> None:
    assert checks.check_spatial_questions(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED


@pytest.mark.parametrize("planted, hint", [
    (replace_relations({"to the left of": "to the right of", "to the right of": "to the left of"}), "left and right are swapped"),
    (replace_relations({"above": "below", "below": "above"}), "y grows downwards"),
    (replace_relations({"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
                        "below": "above"}), "every relation is reversed"),
    (swapped_xy, "x and y are swapped"),
    (minor_axis, "differ *less*"),
    (corners, "not the top-left corners"),
    (lambda boxes, margin=0.05: spatial_solution(boxes, 0.0), "skip a pair whose offsets"),
    (one_way, "every *ordered* pair"),
    (with_self, "with itself"),
    (lambda boxes, margin=0.05: spatial_solution(boxes, margin)[::-1], "wrong order"),
    (lambda boxes, margin=0.05: [(q, a.rstrip(".")) for q, a in spatial_solution(boxes, margin)], "write exactly"),
    (lambda boxes, margin=0.05: {q: a for q, a in spatial_solution(boxes, margin)}, "list of (question, answer)"),
    (lambda boxes, margin=0.05: [q for q, _ in spatial_solution(boxes, margin)], "(question, answer) pair of strings"),
])
def test_spatial_questions_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = checks.check_spatial_questions(planted, quiet=True)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


def test_spatial_questions_checker_reports_a_crash_without_raising() -> None:
    verdict = checks.check_spatial_questions(lambda boxes, margin: boxes[0][1].cx, quiet=True)
    assert verdict.status == checks.WRONG and "AttributeError" in verdict.message


# --- Exercise 4.2: the label mask ----------------------------------------------------------------------


def mask_solution(input_ids, marker, eos_id):
    ids = input_ids.tolist()
    labels = torch.full_like(input_ids, -100)
    m, i = len(marker), 0
    while i <= len(ids) - m:
        if ids[i:i + m] != marker:
            i += 1
            continue
        i += m
        while i < len(ids):  # the answer, up to and including its end-of-turn token
            labels[i] = ids[i]
            i += 1
            if ids[i - 1] == eos_id:
                break
    return labels


def mask_variant(**switches):
    def planted(input_ids, marker, eos_id):
        return torch.tensor(checks._mask_reference(input_ids.tolist(), marker, eos_id, **switches))
    return planted


@pytest.mark.parametrize("answer", [mask_solution, llava.mask_labels])
def test_mask_labels_checker_passes_the_solution(answer, capsys: pytest.CaptureFixture) -> None:
    assert checks.check_mask_labels(answer).passed
    assert "✅ Exercise 4.2 (mask_labels): passed" in capsys.readouterr().out


def test_mask_labels_checker_says_not_attempted() -> None:
    assert checks.check_mask_labels(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED


def test_mask_reference_on_a_hand_checked_sequence() -> None:
    # BOS, "USER" ":", image x2, question, " ASSISTANT" ":", answer, EOS, pad
    ids = [1, 30, 21, 9, 9, 40, 20, 21, 50, 51, 2, 3]
    assert checks._mask_reference(ids, [20, 21], 2) == [-100] * 8 + [50, 51, 2, -100]


@pytest.mark.parametrize("planted, hint", [
    (mask_variant(invert=True), "other way round"),
    (mask_variant(start=-1), "begins *after* the marker"),
    (mask_variant(start=1), "you masked it"),
    (mask_variant(keep_eos=False), "learns to stop"),
    (mask_variant(stop_at_eos=False), "ends at its end-of-turn token"),
    (mask_variant(first_only=True), "every assistant turn"),
    (mask_variant(last_marker_token=True), "whole marker sequence"),
    (mask_variant(ignore=0), "use -100"),
    (lambda ids, marker, eos: torch.cat([mask_solution(ids, marker, eos)[1:], torch.tensor([-100])]), "do not shift"),
    (lambda ids, marker, eos: mask_solution(ids, marker, eos) != -100, "not a True/False mask"),
    (lambda ids, marker, eos: mask_solution(ids, marker, eos).float(), "LongTensor"),
    (lambda ids, marker, eos: mask_solution(ids, marker, eos).tolist(), "torch.Tensor"),
    (lambda ids, marker, eos: mask_solution(ids, marker, eos)[:-1], "one label per token"),
    (lambda ids, marker, eos: torch.where(ids == 9, ids, mask_solution(ids, marker, eos)), "differ at positions"),
])
def test_mask_labels_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = checks.check_mask_labels(planted, quiet=True)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


# --- Exercise 4.3: a region check for the fact checker ---------------------------------------------------

# The solution's own RegionChecker, so the checker is tested against what readers are given.
RegionChecker = solutions.load("04_llava_solutions", "RegionChecker")["RegionChecker"]


def region_variant(name: str = "", **switches):
    """A RegionChecker whose verdicts come from the checker's own reference with one mistake switched on."""
    def check_regions(self, sentence):
        claim = checks._region_claim(self, sentence, **switches)
        if claim is not None:
            self.checked["region"] += 1
        return ["region: wrong"] if claim else []
    return type(name or "Planted", (FactChecker,), {"CHECKS": FactChecker.CHECKS + ("regions",),
                                                    "check_regions": check_regions})


def test_region_checker_passes_the_solution(capsys: pytest.CaptureFixture) -> None:
    assert checks.check_region_checker(RegionChecker).passed
    assert "✅ Exercise 4.3 (RegionChecker): passed" in capsys.readouterr().out
    assert checks.check_region_checker(region_variant(), quiet=True).passed


def test_region_checker_says_not_attempted() -> None:
    class Stub(FactChecker):
        CHECKS = FactChecker.CHECKS + ("regions",)

        def check_regions(self, sentence):
            raise NotImplementedError

    assert checks.check_region_checker(Stub, quiet=True).status == checks.NOT_ATTEMPTED


def test_the_solution_catches_region_mistakes_the_library_misses() -> None:
    from utils.instruct import ImageContext
    from utils.shapes import make_scene

    context = ImageContext.from_scene(make_scene(1))  # a large green square (left) and a small purple triangle (right)
    wrong = "The green square is on the right side of the picture."
    assert FactChecker(context).check_text(wrong) == []
    assert [p.split(":")[0] for p in RegionChecker(context).check_text(wrong)] == ["region"]
    assert RegionChecker(context).check_text("The green square is on the left side of the picture.") == []


class NoPrefix(RegionChecker):
    def check_regions(self, sentence):
        return [p.removeprefix("region: ") for p in super().check_regions(sentence)]


class Uncounted(RegionChecker):
    def check_regions(self, sentence):
        problems = super().check_regions(sentence)
        self.checked["region"] = 0
        return problems


class ReturnsText(RegionChecker):
    def check_regions(self, sentence):
        return "; ".join(super().check_regions(sentence))


class NotListed(RegionChecker):
    CHECKS = FactChecker.CHECKS


class Alone(RegionChecker):
    CHECKS = ("regions",)


class Everything(RegionChecker):
    def check_regions(self, sentence):
        return ["region: everything is wrong"]


@pytest.mark.parametrize("planted, hint", [
    (region_variant(invert=True), "flag the true claims"),
    (region_variant(flip_y=True), "y grows downwards"),
    (region_variant(flip_x=True), "left and right are swapped"),
    (region_variant(vertical=False), "check the horizontal word too"),
    (region_variant(horizontal=False), "check the vertical word too"),
    (region_variant(negations=False), "negation"),
    (region_variant(last_mention=True), "*first* noun phrase"),
    (region_variant(edges=True), "box centre"),
    (region_variant(thirds=True), "*half*"),
    (NoPrefix, "'region: ...'"),
    (Uncounted, "self.checked['region']"),
    (ReturnsText, "list of strings"),
    (NotListed, "CHECKS = FactChecker.CHECKS + ('regions',)"),
    (Alone, "keep the existing checks"),
    (Everything, "flagged it"),
    (FactChecker, "check_regions(self, sentence)"),
    (RegionChecker(__import__("utils.instruct").instruct.ImageContext("x.png", ["a dot"], [])), "pass your class itself"),
])
def test_region_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = checks.check_region_checker(planted, quiet=True)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message
