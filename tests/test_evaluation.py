"""The benchmarks' scoring rules against hand-worked cases, the harness, and the ShapesWorld tasks."""

from __future__ import annotations

import json
import random

import pytest

from utils import llava, t4plan
from utils.evaluation import choice, hallucination, harness, judge, models, shapes_bench, stats, vqa
from utils.shapes import ShapesWorld


# ---------------------------------------------------------------- VQA accuracy
@pytest.mark.parametrize("raw, normalised", [
    ("two", "2"), ("Two", "2"), ("a dog", "dog"), ("The dog", "dog"), ("dont", "don't"), ("yes.", "yes"),
    ("Yes", "yes"), ("none", "0"), ("the red one.", "red 1"), ("left-side", "left side"), ("1,000", "1000"),
    ("3.5", "3.5"), ("what?!", "what"), ("  red\tcircle\n", "red circle"), ("isnt it", "isn't it"),
])
def test_normalisation_corner_cases(raw: str, normalised: str) -> None:
    assert vqa.normalise(raw) == normalised


def test_the_period_pattern_keeps_decimal_points_and_removes_at_most_32_periods() -> None:
    assert vqa.strip_punctuation("3.14 m.") == "3.14 m"
    assert vqa.strip_punctuation("." * 40) == "." * 8  # the official call passes re.UNICODE (32) as count


def test_punctuation_touching_a_space_is_deleted_otherwise_replaced_by_a_space() -> None:
    assert vqa.strip_punctuation("red, blue") == "red blue"
    assert vqa.strip_punctuation("red,blue") == "red blue"
    assert vqa.strip_punctuation("1,000,red") == "1000red"  # a digit-comma-digit deletes every mark


@pytest.mark.parametrize("agreeing, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_the_ten_choose_nine_average(agreeing: int, expected: float) -> None:
    answers = ["red"] * agreeing + ["blue"] * (10 - agreeing)
    assert vqa.accuracy("red", answers) == pytest.approx(expected)


def test_normalisation_applies_only_when_the_annotators_disagree() -> None:
    assert vqa.accuracy("Yes", ["yes"] * 10) == 0.0  # the official quirk
    assert vqa.accuracy("Yes", ["yes"] * 10, always_normalise=True) == 1.0  # lmms-eval's habit
    assert vqa.accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0
    assert vqa.accuracy("two", ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"]) == pytest.approx(0.9)


def test_vqa_accuracy_refuses_a_single_string_and_non_strings() -> None:
    with pytest.raises(ValueError, match="every annotator"):
        vqa.accuracy("red", "red")
    with pytest.raises(TypeError, match="string"):
        vqa.accuracy(None, ["red", "blue"])  # type: ignore[arg-type]


def test_exact_match_compares_with_the_most_common_answer_character_for_character() -> None:
    answers = ["tiny"] * 5 + ["small"] * 4 + ["big"]
    assert vqa.exact_match("tiny", answers) == 1.0 and vqa.exact_match("small", answers) == 0.0
    assert vqa.exact_match("Tiny", answers) == 0.0


# ---------------------------------------------------------------- multiple choice
EXAMPLE = choice.Choice("q", "What colour is the circle?", ("red", "blue", "green", "yellow"), "blue")


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("Answer: B", "B"), ("The answer is B.", "B"), ("B. blue", "B"),
    ("blue", "B"), ("It is BLUE", "B"), ("A blue circle", "A"), ("b", None), ("blue or red", None), ("", None),
    ("C and D", None), ("There.", None), ("tired", "A"),
])
def test_extraction_follows_the_literal_rule(answer: str, letter: str | None) -> None:
    assert choice.extract_choice(answer, EXAMPLE) == letter


def test_rotations_are_circular_shifts() -> None:
    rotations = EXAMPLE.rotations()
    assert [r.options for r in rotations] == [("red", "blue", "green", "yellow"), ("blue", "green", "yellow", "red"),
                                              ("green", "yellow", "red", "blue"), ("yellow", "red", "blue", "green")]
    assert [r.right_letter for r in rotations] == ["B", "A", "D", "C"]


def _questions(n: int = 12) -> list[choice.Choice]:
    colours = ("red", "blue", "green", "yellow")
    return [choice.Choice(f"q{i}", "?", colours, colours[i % 4]) for i in range(n)]


def test_circular_eval_on_planted_answer_patterns() -> None:
    questions = _questions()
    always_a = choice.circular_eval(questions, [["A"] * 4 for _ in questions])
    assert always_a.vanilla == pytest.approx(0.25) and always_a.circular == 0.0 and always_a.failed == 0.0
    perfect = choice.circular_eval(questions, [[r.answer for r in q.rotations()] for q in questions])
    assert perfect.vanilla == perfect.circular == 1.0
    # right in every rotation but the last: vanilla 1, circular 0
    flaky = choice.circular_eval(questions, [[r.right_letter for r in q.rotations()[:3]] + ["A" if q.rotations()[3].right_letter != "A" else "B"]
                                             for q in questions])
    assert flaky.vanilla == 1.0 and flaky.circular == 0.0


def test_unreadable_answers_are_wrong_or_seeded_random_picks() -> None:
    questions = _questions(40)
    mute = [["..."] * 4 for _ in questions]
    wrong = choice.circular_eval(questions, mute)
    assert wrong.vanilla == 0.0 and wrong.failed == 1.0
    first = choice.circular_eval(questions, mute, fallback="random", seed=3)
    assert first == choice.circular_eval(questions, mute, fallback="random", seed=3)
    assert 0.05 < first.vanilla < 0.5 and first.circular <= first.vanilla
    with pytest.raises(ValueError, match="unknown fallback"):
        choice.fallback_letter(EXAMPLE, "guess")


def test_choice_refuses_malformed_questions_and_answer_lists() -> None:
    with pytest.raises(ValueError, match="not among the options"):
        choice.Choice("q", "?", ("a", "b"), "c")
    with pytest.raises(ValueError, match="repeat"):
        choice.Choice("q", "?", ("a", "a"), "a")
    with pytest.raises(ValueError, match="rotations"):
        choice.circular_eval([EXAMPLE], [["B"]])


def test_the_prompt_lists_the_options_under_the_question() -> None:
    assert choice.mc_prompt(EXAMPLE).splitlines() == ["What colour is the circle?", "A. red", "B. blue", "C. green",
                                                      "D. yellow", choice.INSTRUCTION]


# ---------------------------------------------------------------- CHAIR
def test_chair_on_hand_worked_captions() -> None:
    scenes = ShapesWorld(40, seed=3, split="test").scenes
    one = next(s for s in scenes if len(s.objects) == 1)
    o = one.objects[0]
    absent = next(shape for shape in ("circle", "square", "triangle") if shape != o.shape)
    other_colour = next(c for c in ("red", "green", "blue", "yellow", "purple") if c != o.colour)
    captions = [f"a {o.colour} {o.shape}", f"a {o.colour} {o.shape} and a {absent}", f"a {other_colour} {o.shape}"]
    loose = hallucination.chair(captions, [one] * 3)
    assert (loose.mentions, loose.hallucinated) == (4, 1)
    assert loose.chair_i == pytest.approx(1 / 4) and loose.chair_s == pytest.approx(1 / 3)
    bound = hallucination.chair(captions, [one] * 3, bound=True)
    assert bound.hallucinated == 2 and bound.chair_s == pytest.approx(2 / 3)
    assert hallucination.coverage(["nothing here"], [one]) == 0.0


def test_mentions_read_plurals_synonyms_and_the_colour_in_front() -> None:
    assert hallucination.mentions("two small red squares and a box") == [
        hallucination.Mention("square", "red"), hallucination.Mention("square", None)]
    with pytest.raises(ValueError, match="one caption per scene"):
        hallucination.chair(["a"], [])


# ---------------------------------------------------------------- the judge
@pytest.mark.parametrize("reply, pair", [
    ("8 6\nbecause", (8.0, 6.0)), ("8, 6", (8.0, 6.0)), ("8/10 6/10", (8.0, 6.0)),
    ("Assistant 1: 9 Assistant 2: 7", (9.0, 7.0)), ("\n\n7.5 3", (7.5, 3.0)), ("Both are fine.", None),
    ("7 6 5", None), ("11 3", None), ("", None),
])
def test_judge_replies_are_parsed_or_refused(reply: str, pair) -> None:
    assert judge.parse_pair(reply) == pair


def test_relative_score_is_a_ratio_of_means_and_counts_failures() -> None:
    assert judge.relative_score([(10, 5), (8, 8), None]) == (pytest.approx(100 * 13 / 18), 1)
    with pytest.raises(ValueError, match="no judge reply"):
        judge.relative_score([None])
    assert judge.parse_score("0.7 because") == 0.7 and judge.parse_score("7") is None


def test_the_fact_judge_grades_references_10_and_catches_planted_errors() -> None:
    items = shapes_bench.detail_items(12)
    rng = random.Random(0)
    for item in items:
        assert judge.answer_quality(item.target, item.scene) == 10.0
        for kind in ("colour", "shape", "drop"):
            bad = judge.corrupt(item.target, item.scene, kind, rng)
            if bad is not None:
                assert bad != item.target
                clean, corrupted = judge.fact_judge(item.scene, item.question, item.target, bad)
                assert clean > corrupted, (kind, bad)
    assert judge.answer_quality("Nothing to say.", items[0].scene) == 1.0
    with pytest.raises(ValueError, match="unknown corruption"):
        judge.corrupt("x", items[0].scene, "typo", rng)


def test_agreement_counts_ties_as_half() -> None:
    a = judge.agreement([(9, 3), (5, 5), (2, 8), None])
    assert (a.pairs, a.wins, a.ties, a.losses, a.unparsed) == (3, 1, 1, 1, 1) and a.agree == pytest.approx(0.5)


# ---------------------------------------------------------------- uncertainty
def test_bootstrap_intervals_cover_the_true_accuracy_at_the_stated_rate() -> None:
    rate = stats.coverage(0.7, 300, trials=300, resamples=1000, seed=1)
    assert 0.91 <= rate <= 0.985  # 95% nominal; 300 trials give a standard error of 1.3 points


def test_bootstrap_interval_matches_the_normal_approximation_and_is_deterministic() -> None:
    scores = [1.0] * 700 + [0.0] * 300
    iv = stats.bootstrap_interval(scores)
    half = 1.96 * (0.7 * 0.3 / 1000) ** 0.5
    assert iv.value == pytest.approx(0.7) and iv.low == pytest.approx(0.7 - half, abs=0.004)
    assert iv.high == pytest.approx(0.7 + half, abs=0.004) and iv == stats.bootstrap_interval(scores)
    with pytest.raises(ValueError, match="non-empty"):
        stats.bootstrap_interval([])


def test_questions_needed_and_mcnemar_on_worked_values() -> None:
    assert stats.questions_needed(0.72, 0.70) == 8077
    assert stats.paired_questions_needed(0.1, 0.72, 0.70) == 1960
    assert stats.mcnemar(0, 5) == pytest.approx(2 / 32) and stats.mcnemar(3, 3) == 1.0 and stats.mcnemar(0, 0) == 1.0
    assert stats.exact_interval(120, 120).low == pytest.approx(0.025 ** (1 / 120), abs=1e-9)
    with pytest.raises(ValueError, match="equal"):
        stats.questions_needed(0.7, 0.7)


def test_paired_comparison_counts_the_discordant_questions() -> None:
    a, b = [1, 1, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    paired = stats.paired_bootstrap(a, b)
    assert (paired.only_a, paired.only_b) == (2, 1) and paired.difference.value == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="same questions"):
        stats.paired_bootstrap([1, 0], [1])


# ---------------------------------------------------------------- the harness
def _echo_model(name: str = "echo") -> harness.Model:
    return harness.Model(name, lambda images, questions, style, n: [q.split()[-1].strip("?") for q in questions])


def _task() -> harness.Task:
    items = [harness.Item(f"q{i}", f"Say {w}?", [w] * 10) for i, w in enumerate(["red", "blue", "two"])]
    return harness.Task("toy", items, lambda a, it: vqa.accuracy(a, it.target))


def test_run_save_and_rescore(tmp_path) -> None:
    task = _task()
    result = harness.run(task, _echo_model(), out_dir=tmp_path)
    assert result.scores == [1.0, 1.0, 1.0] and result.summary == {"score": 1.0}
    again = harness.score_predictions(tmp_path / "echo" / "toy.json", task)
    assert again.scores == result.scores and again.model == "echo"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"predictions": 3}', "no \"predictions\" list"),
    ('{"task": "other", "predictions": []}', "task 'other'"),
    ('{"predictions": [{"id": "q0"}]}', "string \"id\" and a string \"answer\""),
    ('{"predictions": [{"id": "q0", "answer": "red"}, {"id": "q0", "answer": "red"}]}', "appears twice"),
    ('{"predictions": [{"id": "q9", "answer": "red"}]}', "not questions of"),
    ('{"predictions": [{"id": "q0", "answer": "red"}, {"id": "q1", "answer": "blue"}]}', "have no prediction"),
    ('{"predictions": [{"id": "q0", "answer": "red"}, {"id": "q1", "answer": " "}, {"id": "q2", "answer": "two"}]}',
     "answers are empty"),
])
def test_bad_predictions_files_get_clear_errors(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "predictions.json"
    path.write_text(content)
    with pytest.raises(harness.EvaluationError, match=message):
        harness.load_predictions(path, _task())
    with pytest.raises(harness.EvaluationError, match="does not exist"):
        harness.load_predictions(tmp_path / "missing.json", _task())


def test_empty_answers_can_be_allowed_and_score_wrong(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"predictions": [{"id": "q0", "answer": ""}, {"id": "q1", "answer": "blue"},
                                                {"id": "q2", "answer": "2"}]}))
    assert harness.score_predictions(path, _task(), allow_empty=True).scores == [0.0, 1.0, 0.0]


def test_tasks_refuse_duplicate_ids_unknown_styles_and_unknown_names() -> None:
    item = harness.Item("x", "?", "a")
    with pytest.raises(harness.EvaluationError, match="used twice"):
        harness.Task("t", [item, item], lambda a, it: 1.0)
    with pytest.raises(harness.EvaluationError, match="unknown style"):
        harness.Task("t", [item], lambda a, it: 1.0, style="essay")
    with pytest.raises(harness.EvaluationError, match="no task named"):
        harness.get_task("no-such-task")


def test_image_conditions_replace_the_picture() -> None:
    task = harness.Task("t", [harness.Item("x", "?", "a", ShapesWorld(1, seed=0, split="test").scenes[0].render())],
                        lambda a, it: 1.0)
    blank = harness.without_image(task, "blank").items[0].image
    assert blank.size == task.items[0].image.size and len(blank.getcolors()) == 1
    assert harness.without_image(task, "none").items[0].image is None
    with pytest.raises(harness.EvaluationError, match="unknown image condition"):
        harness.without_image(task, "dark")


# ---------------------------------------------------------------- the ShapesWorld tasks
def test_simulated_annotators_mostly_agree_after_normalisation() -> None:
    rng = random.Random(0)
    for answer, kind in [("red", "colour"), ("2", "count"), ("yes", "exists"), ("left", "relation")]:
        answers = shapes_bench.annotate(answer, kind, rng)
        assert len(answers) == 10 and vqa.accuracy(answer, answers) == 1.0


def test_the_shapes_tasks_are_deterministic_and_well_formed() -> None:
    counts = llava.object_counts(ShapesWorld(200, seed=5, split="train").scenes)
    tasks = shapes_bench.register_all(counts, scale=0.1)
    again = shapes_bench.register_all(counts, scale=0.1)
    for name, task in tasks.items():
        assert [it.id for it in task.items] == [it.id for it in again[name].items]
        assert [it.question for it in task.items] == [it.question for it in again[name].items]
        assert harness.get_task(name) is again[name]
    mc = tasks["shapes-mc"]
    assert len(mc.items) == sum(len(it.target.options) for it in mc.items if it.id.endswith("@0"))
    assert all(" in the image?" not in it.question for it in tasks["pope-random-plain"].items)
    unanswerable = [it for it in tasks["shapes-vqa"].items if it.kind == "unanswerable"]
    assert unanswerable and all(vqa.accuracy("unanswerable", it.target) == 1.0 for it in unanswerable)


# ---------------------------------------------------------------- the T4 plan of a one-model-at-a-time notebook
def test_a_notebook_that_frees_each_model_peaks_at_the_larger_one() -> None:
    calls = [{"call": "load", "model": "blip2"}, {"call": "load", "model": "llava"},
             {"call": "generate", "model": "Blip2ForConditionalGeneration", "max_new_tokens": 6,
              "inputs": {"input_ids": [64, 50], "pixel_values": [64, 3, 224, 224]}},
             {"call": "generate", "model": "LlavaForConditionalGeneration", "max_new_tokens": 6,
              "inputs": {"input_ids": [8, 640], "pixel_values": [8, 3, 336, 336]}}]
    together = t4plan.chapter_plan("some_notebook", calls)
    apart = t4plan.chapter_plan("07_evaluation", calls)
    assert apart.peak_gpu_gib < together.peak_gpu_gib
    assert apart.weights_gib == pytest.approx(max(t4plan.weight_bytes(m) for m in ("blip2", "llava")) / t4plan.GiB)


# ---------------------------------------------------------------- the wrapped tiny models
@pytest.mark.parametrize("zoo_name", ["blip2", "llava"])
def test_wrapped_models_answer_with_a_picture_a_blank_and_none(zoo_name: str) -> None:
    model, _, _ = models.load(zoo_name)
    scene = ShapesWorld(1, seed=4, split="test").scenes[0]
    question = f"What colour is the {scene.objects[0].shape}?"
    with_image = model.answer([scene.render()], [question], "short", 4)
    assert with_image == [scene.objects[0].colour]
    mixed = model.answer([scene.render(), None, scene.render()], [question] * 3, "short", 4)
    assert len(mixed) == 3 and mixed[0] == mixed[2] == with_image[0] and isinstance(mixed[1], str)
    assert model.answer([None], [question], "short", 4) == [mixed[1]]  # the blind answer does not depend on the batch
    caption = model.answer([scene.render()], [""], "caption", 24)[0]
    assert caption.strip() and (zoo_name == "llava" or caption == scene.caption)  # only BLIP-2 was trained to caption


def test_pope_answers_read_by_first_word_or_by_llavas_script() -> None:
    for answer, first, script in [("Yes", "yes", "yes"), ("No.", "no", "no"), ("yes, there is not", "yes", "no"),
                                  ("1", "no", "yes"), ("a small", "no", "yes"), ("There is no circle.", "no", "no"),
                                  ("No there is.", "no", "no")]:
        assert hallucination.pope_verdict(answer) == first, answer
        assert hallucination.pope_verdict(answer, "llava") == script, answer
    with pytest.raises(ValueError, match="unknown POPE rule"):
        hallucination.pope_verdict("yes", "majority")


def test_cluster_bootstrap_widens_the_interval_when_questions_share_an_image() -> None:
    rng = random.Random(0)
    scores, clusters = [], []
    for image in range(150):  # five questions per image, all right or all wrong together
        right = float(rng.random() < 0.7)
        scores += [right] * 5
        clusters += [f"img{image}"] * 5
    naive, clustered = stats.bootstrap_interval(scores), stats.bootstrap_interval(scores, clusters=clusters)
    assert naive.value == clustered.value
    assert (clustered.high - clustered.low) > 1.8 * (naive.high - naive.low)  # about sqrt(5) wider
    with pytest.raises(ValueError, match="one label per question"):
        stats.bootstrap_interval(scores, clusters=clusters[:-1])


def test_ratio_interval_is_the_ratio_of_sums_and_paired_bounds_are_checked() -> None:
    iv = stats.ratio_interval([5, 7, 9], [10, 10, 10])
    assert iv.value == pytest.approx(70.0) and iv.low <= 70 <= iv.high
    with pytest.raises(ValueError, match="min\\(p_a"):
        stats.paired_questions_needed(0.2, 0.92, 0.90)  # at most 18% of questions can be answered differently


def test_items_name_their_scene_for_the_cluster_bootstrap() -> None:
    counts = llava.object_counts(ShapesWorld(200, seed=5, split="train").scenes)
    tasks = shapes_bench.register_all(counts, scale=0.1)
    for name in ("shapes-vqa", "pope-random", "shapes-caption"):
        scenes = {shapes_bench.scene_of(it.id): it.scene for it in tasks[name].items}
        assert all(scenes[shapes_bench.scene_of(it.id)] == it.scene for it in tasks[name].items)
        assert len(scenes) == len({it.scene for it in tasks[name].items}) > 1
