"""ShapesWorld versions of the benchmarks, as harness tasks (held-out test scenes, fixed seeds).

- ``shapes-vqa``: VQAv2-style open questions, each with ten simulated annotators who answer in
  their own words ("Red.", "two", "a circle", "violet", now and then a wrong answer), plus
  VizWiz-style questions about a shape the scene lacks, whose answer is "unanswerable";
- ``shapes-mc``: MMBench-style multiple choice (colour, shape, count, relation), every rotation
  of the options as its own item, for CircularEval; ``shapes-mc-letters`` shows the options in
  MMBench's layout and asks for a letter;
- ``shapes-vqa-sentences``: the first of those questions asked with no request for a short answer;
- ``pope-random`` / ``pope-popular`` / ``pope-adversarial``: chapter 4's probes, and each again
  in ShapesWorld's wording (``-plain``);
- ``shapes-caption``: captions, scored by CHAIR;
- ``shapes-detail``: LLaVA-Bench-style "describe the image in detail", with the instruction
  generator's description as the reference answer, graded by a judge.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from utils import instruct, llava
from utils.evaluation import choice, hallucination, judge, vqa
from utils.evaluation.harness import Item, Result, Task, register
from utils.shapes import COLOURS, SHAPES, SIZES, Scene, ShapesWorld

SEED = 71  # test-split seed of every task here (chapters 1-6 use other seeds)
ANNOTATORS = 10

# How a person might write each canonical answer: variants the VQA normalisation maps back to it,
# and wordings it does not.
_REWORDED = {"red": ["crimson"], "green": ["lime"], "blue": ["navy"], "purple": ["violet"], "yellow": ["gold"],
             "circle": ["disc", "round"], "square": ["box"], "triangle": ["pyramid"], "small": ["tiny"],
             "large": ["big"], "1": ["just 1", "1 shape"], "2": ["2 shapes", "a pair"], "3": ["3 shapes"],
             "left": ["on the left", "left side"], "right": ["on the right", "right side"], "above": ["on top", "over"],
             "below": ["under", "beneath"], "yes": ["yep", "yes it is"], "no": ["nope", "no it is not"]}
_NUMBER_NAMES = {"1": "one", "2": "two", "3": "three"}


def _surface(answer: str, kind: str) -> list[str]:
    """Spellings of ``answer`` that the VQA normalisation maps back to it."""
    variants = [answer.capitalize(), f"{answer}.", f" {answer} "]
    if kind in ("colour", "shape", "size"):
        variants += [f"the {answer}", f"a {answer}"]
    if answer in _NUMBER_NAMES:
        variants += [_NUMBER_NAMES[answer], _NUMBER_NAMES[answer].capitalize()]
    return variants


ANSWERS_OF_KIND = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES), "count": ["1", "2", "3"],
                   "exists": ["yes", "no"], "relation": ["left", "right", "above", "below"]}


def annotate(answer: str, kind: str, rng: random.Random, n: int = ANNOTATORS) -> list[str]:
    """``n`` simulated annotators' answers to a question whose answer is ``answer``: about 6 in 10
    write it plainly, 2 or 3 write a variant the normalisation undoes ("Red.", "two", "a circle"),
    1 in 10 rewords it ("violet", "on the left"), and 1 in 30 gets it wrong."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(answer)
        elif r < 0.87:
            out.append(rng.choice(_surface(answer, kind)))
        elif r < 0.967:
            out.append(rng.choice(_REWORDED[answer]))
        else:
            out.append(rng.choice([a for a in ANSWERS_OF_KIND[kind] if a != answer]))
    return out


def _unanswerable(scene: Scene, rng: random.Random) -> tuple[str, list[str]] | None:
    missing = [s for s in SHAPES if all(o.shape != s for o in scene.objects)]
    if not missing:
        return None
    shape = rng.choice(missing)
    words = [vqa.UNANSWERABLE] * 6 + ["Unanswerable", f"no {shape}", f"there is no {shape}", "none"]
    rng.shuffle(words)
    return f"What colour is the {shape}?", words


def vqa_items(n_scenes: int = 150, seed: int = SEED, unanswerable_every: int = 3) -> list[Item]:
    """Open questions with ten annotators each: per scene, one question of each kind it has, and
    every ``unanswerable_every``-th scene one about a shape it lacks."""
    rng = random.Random(f"shapes-vqa/{seed}")
    items = []
    for i, scene in enumerate(ShapesWorld(n_scenes, seed=seed, split="test").scenes):
        image = scene.render()
        by_kind: dict[str, list[Any]] = {}
        for q in scene.questions:
            by_kind.setdefault(q.kind, []).append(q)
        for kind, questions in by_kind.items():
            q = rng.choice(questions)
            items.append(Item(f"vqa-{i}-{kind}", q.text, annotate(q.answer, kind, rng), image, scene, kind))
        if i % unanswerable_every == 0 and (odd := _unanswerable(scene, rng)):
            items.append(Item(f"vqa-{i}-unanswerable", odd[0], odd[1], image, scene, "unanswerable"))
    return items


MC_KINDS = ("colour", "shape", "count", "relation")


def mc_questions(n_scenes: int = 120, seed: int = SEED) -> list[tuple[choice.Choice, Scene]]:
    """One multiple-choice question per scene: a kind in turn, the right answer and up to three
    distractors of the same kind, shuffled."""
    rng = random.Random(f"shapes-mc/{seed}")
    out = []
    for i, scene in enumerate(ShapesWorld(n_scenes, seed=seed + 1, split="test").scenes):
        kinds = [k for k in MC_KINDS if any(q.kind == k for q in scene.questions)]
        kind = kinds[i % len(kinds)]
        q = rng.choice([q for q in scene.questions if q.kind == kind])
        pool = ANSWERS_OF_KIND[kind] + (["4"] if kind == "count" else [])
        options = [q.answer] + rng.sample([a for a in pool if a != q.answer], min(3, len(pool) - 1))
        rng.shuffle(options)
        out.append((choice.Choice(f"mc-{i}", q.text, tuple(options), q.answer), scene))
    return out


def mc_items(questions: Sequence[tuple[choice.Choice, Scene]], letters: bool) -> list[Item]:
    """Every rotation of every question as an item; ``letters`` shows MMBench's layout and asks for
    a letter, otherwise the model is asked the bare question its own way."""
    items = []
    for c, scene in questions:
        image = scene.render()
        for r in c.rotations():
            items.append(Item(r.id, choice.mc_prompt(r) if letters else r.question, r, image, scene, "choice"))
    return items


def _score_choice(answer: str, item: Item) -> float:
    letter = choice.extract_choice(answer, item.target)
    return float(letter == item.target.right_letter)


def circular_scores(result: Result, questions: Sequence[tuple[choice.Choice, Scene]],
                    fallback: str = "wrong") -> choice.ChoiceScores:
    """CircularEval of a run over every rotation of ``questions`` (a task's ``extra["questions"]``)."""
    by_id = dict(zip(result.ids, result.predictions))
    answers = [[by_id[r.id] for r in c.rotations()] for c, _ in questions]
    return choice.circular_eval([c for c, _ in questions], answers, fallback=fallback)


def circular_summary(result: Result, questions: Sequence[tuple[choice.Choice, Scene]], fallback: str = "wrong") -> dict[str, float]:
    scores = circular_scores(result, questions, fallback)
    return {"vanilla": scores.vanilla, "circular": scores.circular, "failed": scores.failed}


def pope_items(setting: str, counts: Any, n_scenes: int = 150, seed: int = SEED, plain: bool = False) -> list[Item]:
    """POPE's probes in its wording, "Is there a {colour} {shape} in the image?", or with ``plain``
    in ShapesWorld's own, "Is there a {colour} {shape}?" (the wording the tiny BLIP-2 was trained on)."""
    scenes = ShapesWorld(n_scenes, seed=seed + 2, split="test").scenes
    probes = llava.pope_questions(scenes, setting=setting, counts=counts)
    images = [s.render() for s in scenes]
    word = lambda q: q.replace(" in the image?", "?") if plain else q  # noqa: E731
    return [Item(f"pope-{i}-{setting}-{n}", word(q), truth, images[i], scenes[i], setting)
            for n, (i, q, truth) in enumerate(probes)]


def _pope_summary(result: Result, items: Sequence[Item]) -> dict[str, float]:
    """POPE's numbers with the answers read by the course's first-word rule, and by LLaVA's script."""
    truth = {it.id: it.target for it in items}
    out = {}
    for rule, prefix in (("first word", ""), ("llava", "llava_")):
        verdicts = [hallucination.pope_verdict(p, rule) for p in result.predictions]
        scores = llava.pope_scores([truth[i] for i in result.ids], verdicts)
        out.update({f"{prefix}accuracy": scores.accuracy, f"{prefix}f1": scores.f1, f"{prefix}yes_ratio": scores.yes_ratio})
    return out


def caption_items(n_scenes: int = 120, seed: int = SEED) -> list[Item]:
    scenes = ShapesWorld(n_scenes, seed=seed + 3, split="test").scenes
    return [Item(f"caption-{i}", "", s.caption, s.render(), s, "caption") for i, s in enumerate(scenes)]


def scene_of(item_id: str) -> str:
    """The scene an item is about, for resampling scenes rather than questions: "vqa-12-colour" -> "vqa-12",
    "pope-12-random-25" -> "pope-12"."""
    return "-".join(item_id.split("-")[:2])


def _caption_score(answer: str, item: Item) -> float:
    return 0.0 if hallucination.chair([answer], [item.scene]).chair_s else 1.0


def _chair_summary(result: Result, items: Sequence[Item]) -> dict[str, float]:
    scenes = [it.scene for it in items]
    loose, bound = hallucination.chair(result.predictions, scenes), hallucination.chair(result.predictions, scenes, bound=True)
    return {"chair_i": loose.chair_i, "chair_s": loose.chair_s, "chair_i_bound": bound.chair_i,
            "chair_s_bound": bound.chair_s, "coverage": hallucination.coverage(result.predictions, scenes)}


def detail_items(n_scenes: int = 40, seed: int = SEED) -> list[Item]:
    """"Describe the image" requests, the rule-based description of chapter 4 as the reference."""
    scenes = ShapesWorld(n_scenes, seed=seed + 4, split="test").scenes
    items = []
    for i, scene in enumerate(scenes):
        (question, reference), = instruct.rule_based_turns(instruct.ImageContext.from_scene(scene), "detail",
                                                         random.Random(f"detail/{seed}/{i}"))
        items.append(Item(f"detail-{i}", question, reference, scene.render(), scene, "detail"))
    return items


def _detail_score(answer: str, item: Item) -> float:
    return judge.answer_quality(answer, item.scene)


def register_all(pope_counts: Any, *, scale: float = 1.0) -> dict[str, Task]:
    """Build and register every ShapesWorld task; ``scale`` shrinks the number of scenes (full mode
    asks a 7B model, so it asks fewer questions)."""
    n = lambda k: max(8, int(k * scale))  # noqa: E731
    tasks: dict[str, Task] = {}
    open_questions = vqa_items(n(150))
    tasks["shapes-vqa"] = Task("shapes-vqa", open_questions, lambda a, it: vqa.accuracy(a, it.target),
                               description="VQAv2/VizWiz-style open questions, ten annotators each")
    tasks["shapes-vqa-sentences"] = Task("shapes-vqa-sentences", open_questions[:n(150)], tasks["shapes-vqa"].score,
                                         style="long", max_new_tokens=12,
                                         description="the first open questions, asked without the one-word request")
    mcq = mc_questions(n(120))
    for name, letters in (("shapes-mc", False), ("shapes-mc-letters", True)):
        tasks[name] = Task(name, mc_items(mcq, letters), _score_choice, style="choice" if letters else "short",
                           summarise=lambda r, q=mcq: circular_summary(r, q), extra={"questions": mcq},
                           description=("MMBench's prompt (options listed, a letter asked for), every rotation"
                                        if letters else "the bare question; the option read from the answer's text"))
    for setting in llava.POPE_SETTINGS:
        for plain in (False, True):
            name = f"pope-{setting}" + ("-plain" if plain else "")
            probes = pope_items(setting, pope_counts, n(150), plain=plain)
            tasks[name] = Task(name, probes, lambda a, it: float((llava.first_word(a) == "yes") == (it.target == "yes")),
                               summarise=lambda r, items=probes: _pope_summary(r, items),
                               description=f"POPE, {setting} negatives" + (", ShapesWorld's wording" if plain else ""))
    captions = caption_items(n(120))
    tasks["shapes-caption"] = Task("shapes-caption", captions, _caption_score, style="caption", max_new_tokens=40,
                                   summarise=lambda r, items=captions: _chair_summary(r, items),
                                   description="captions scored by CHAIR")
    tasks["shapes-detail"] = Task("shapes-detail", detail_items(n(40)), _detail_score, style="long", max_new_tokens=120,
                                  description="LLaVA-Bench-style detailed descriptions, graded by a judge")
    for task in tasks.values():
        register(task)
    return tasks
