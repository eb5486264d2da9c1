"""Chapter 4's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

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


# --- Exercise 4.4: high-resolution sub-images ----------------------------------------------------------

SUB_IMAGES = solutions.load("04_llava_solutions", "sub_images")["sub_images"]


def sub_images_variant(*, global_view: str = "first", filter=None, centre_crop: bool = False, resize_tiles: bool = True,
                       check_arguments: bool = True, **switches):
    """The checker's reference with one slip: the tile boxes of checks.ch4._tile_boxes, or the global view's."""
    from PIL import Image

    from utils.checks.ch4 import _tile_boxes

    def planted(image, grid, size):
        W, H = image.size
        if check_arguments and (grid < 1 or size < 1 or grid > min(W, H)):
            raise ValueError("bad grid or size")
        tiles = [image.crop(box) for box in _tile_boxes(W, H, grid, **switches)]
        tiles = [t.resize((size, size)) for t in tiles] if resize_tiles else tiles
        whole = image
        if centre_crop:
            side = min(W, H)
            whole = image.crop(((W - side) // 2, (H - side) // 2, (W - side) // 2 + side, (H - side) // 2 + side))
        whole = whole.resize((size, size)) if filter is None else whole.resize((size, size), filter)
        return {"first": [whole] + tiles, "last": tiles + [whole], "none": tiles}[global_view]
    return planted


def test_sub_images_checker_passes_the_solution(capsys: pytest.CaptureFixture) -> None:
    assert checks.check_sub_images(SUB_IMAGES).passed
    assert "✅ Exercise 4.4 (sub_images): passed" in capsys.readouterr().out
    assert checks.check_sub_images(sub_images_variant(), quiet=True).passed


def test_sub_images_checker_says_not_attempted() -> None:
    assert checks.check_sub_images(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED


def test_sub_images_solution_tiles_put_back_together_give_the_image() -> None:
    from PIL import Image

    from utils.checks.ch4 import _noise_image

    image = _noise_image(90, 90, 7)
    views = SUB_IMAGES(image, 3, 30)
    canvas = Image.new("RGB", (90, 90))
    for k, tile in enumerate(views[1:]):
        canvas.paste(tile, ((k % 3) * 30, (k // 3) * 30))
    assert canvas.tobytes() == image.tobytes()
    assert views[0].tobytes() == image.resize((30, 30)).tobytes()


def reversed_tiles(image, grid, size):
    views = SUB_IMAGES(image, grid, size)
    return views[:1] + views[1:][::-1]


@pytest.mark.parametrize("planted, hint", [
    (sub_images_variant(column_major=True), "column-major"),
    (sub_images_variant(swap_wh=True), "(width, height)"),
    (sub_images_variant(extra=-1), "not one pixel before it"),
    (sub_images_variant(extra=1), "not one pixel after it"),
    (sub_images_variant(fixed_width=True), "W % grid"),
    (sub_images_variant(global_view="none"), "only the"),
    (sub_images_variant(global_view="last"), "you put it last"),
    (sub_images_variant(centre_crop=True), "centre crop"),
    (sub_images_variant(filter=Image.Resampling.BILINEAR), "BILINEAR filter"),
    (sub_images_variant(resize_tiles=False), "raw"),
    (sub_images_variant(check_arguments=False), "raise a ValueError"),
    (reversed_tiles, "put back together"),
    (lambda image, grid, size: [np.asarray(v) for v in SUB_IMAGES(image, grid, size)], "return PIL images"),
    (lambda image, grid, size: iter(SUB_IMAGES(image, grid, size)), "return a list of PIL images"),
    (lambda image, grid, size: SUB_IMAGES(image, grid, size)[:-1], "expected"),
    (lambda image, grid, size: [v.resize((size + 1, size + 1)) for v in SUB_IMAGES(image, grid, size)], "resize every view"),
    (lambda image, grid, size: [SUB_IMAGES(image, grid, size)[1]] + SUB_IMAGES(image, grid, size)[1:], "one of the tiles"),
])
def test_sub_images_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = checks.check_sub_images(planted, quiet=True)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


# --- Exercise 4.5: ablating the image tokens ---------------------------------------------------------


ABLATED_ANSWERS = solutions.load("04_llava_solutions", "ablated_answers")["ablated_answers"]


@pytest.fixture(scope="module")
def tiny_llava():
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from utils import zoo

    folder = zoo.path("llava", mode="tiny")
    return LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval(), \
        AutoProcessor.from_pretrained(folder)


def ablation_variant(*, change=None, pictures=None, keep_hook: bool = False, check_how: bool = True,
                     ask=lambda q: llava.short_question(q.text)):
    """An ablated_answers with one slip: ``change(how, features)`` replaces the projector's output,
    ``pictures(how, scenes)`` chooses each question's image (one per question)."""
    def planted(model, processor, scenes, how):
        if check_how and how not in ("intact", "shuffled", "mean", "swapped"):
            raise ValueError(how)
        from utils.checks.ch4 import _ablate, _ablation_questions

        shown = pictures(how, scenes) if pictures else _ablation_questions(scenes, how)[0]
        handle = model.model.multi_modal_projector.register_forward_hook(
            lambda module, inputs, out: (change or _ablate)(out, how) if how != "swapped" else None)
        try:
            return llava.answer_questions(model, processor, shown, [ask(q) for s in scenes for q in s.questions])
        finally:
            if not keep_hook:
                handle.remove()
    return planted


def changed(**by_how):
    """A change of the projector's output for some ``how``s, the right one for the others."""
    from utils.checks.ch4 import _ablate

    return lambda out, how: by_how[how](out) if how in by_how else _ablate(out, how)


def per_question_pictures(shift):
    def pictures(how, scenes):
        shown = [s.render() for s in scenes for _ in s.questions]
        return shown[shift:] + shown[:shift] if how == "swapped" else shown
    return pictures


def scene_pictures(pick):
    def pictures(how, scenes):
        n = len(scenes)
        return [scenes[pick(i, n) if how == "swapped" else i].render() for i, s in enumerate(scenes) for _ in s.questions]
    return pictures


@pytest.mark.slow
def test_ablation_checker_passes_the_solution(tiny_llava, capsys: pytest.CaptureFixture) -> None:
    model, processor = tiny_llava
    assert checks.check_ablated_answers(ABLATED_ANSWERS, model, processor).passed
    assert "✅ Exercise 4.5 (ablated_answers): passed" in capsys.readouterr().out
    assert checks.check_ablated_answers(ablation_variant(), model, processor, quiet=True).passed
    assert not model.model.multi_modal_projector._forward_hooks


def test_ablation_checker_says_not_attempted(tiny_llava) -> None:
    assert checks.check_ablated_answers(not_attempted, *tiny_llava, quiet=True).status == checks.NOT_ATTEMPTED


def test_ablation_checker_reads_every_question_s_image_tokens(tiny_llava) -> None:
    from utils.checks.ch4 import _ablation_scenes, _ImageTokens, _intact_features

    model, processor = tiny_llava
    scenes = _ablation_scenes()
    with _ImageTokens(model) as seen:
        ABLATED_ANSWERS(model, processor, scenes, "mean")
    features = _intact_features(model, processor, scenes)
    owner = [i for i, s in enumerate(scenes) for _ in s.questions]
    assert len(seen.rows) == len(owner) and seen.rows[0].shape == features[0].shape == (llava.num_image_tokens(model.config),
                                                                                   features[0].shape[1])
    for k, row in enumerate(seen.rows):
        torch.testing.assert_close(row, features[owner[k]].mean(0, keepdim=True).expand_as(row), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_ablation_checker_passes_the_solution_in_half_precision(tiny_llava) -> None:
    model, processor = tiny_llava
    try:
        assert checks.check_ablated_answers(ABLATED_ANSWERS, model.half(), processor, quiet=True).passed
    finally:
        model.float()


@pytest.mark.parametrize("planted, hint", [
    (ablation_variant(keep_hook=True), "still in place"),
    (ablation_variant(change=changed(shuffled=lambda f: f[:, :, checks.ch4.ablation_permutation(f.shape[2])])),
     "inside each token (dim 2)"),
    (ablation_variant(change=changed(shuffled=lambda f: torch.stack([x[torch.randperm(len(x))] for x in f]))),
     "not by the exercise's permutation"),
    (ablation_variant(change=changed(shuffled=lambda f: f.flip(0))), "whole images changed places"),
    (ablation_variant(change=changed(shuffled=lambda f: f)), "unchanged"),
    (ablation_variant(pictures=per_question_pictures(0)), "its own scene's image"),
    (ablation_variant(change=changed(mean=lambda f: f.mean(dim=-1, keepdim=True).expand_as(f))), "D numbers of each token"),
    (ablation_variant(change=changed(mean=lambda f: f.mean(dim=0, keepdim=True).expand_as(f))), "images of the batch (dim 0)"),
    (ablation_variant(change=changed(mean=lambda f: f.mean(dim=(0, 1), keepdim=True).expand_as(f))), "mixes in other images"),
    (ablation_variant(change=changed(mean=lambda f: f.mean(dim=1, keepdim=True))), "(B, N, D)"),
    (ablation_variant(change=changed(intact=lambda f: f * 0.5), pictures=None), "as the projector made them"),
    (ablation_variant(pictures=scene_pictures(lambda i, n: (i - 1) % n)), "previous scene"),
    (ablation_variant(pictures=scene_pictures(lambda i, n: min(i + 1, n - 1))), "wrap around"),
    (ablation_variant(pictures=per_question_pictures(1)), "most questions still saw their own scene"),
    (ablation_variant(ask=lambda q: q.text), "llava.short_question"),
    (ablation_variant(check_how=False), "raise a ValueError"),
    (lambda *args: ABLATED_ANSWERS(*args)[:-1], "answers: ask every question"),
    (lambda *args: "; ".join(ABLATED_ANSWERS(*args)), "list of strings"),
])
def test_ablation_checker_names_the_mistake(tiny_llava, planted, hint: str) -> None:
    model, processor = tiny_llava
    verdict = checks.check_ablated_answers(planted, model, processor, quiet=True)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message
    assert not model.model.multi_modal_projector._forward_hooks, "the checker leaves the model without hooks"
