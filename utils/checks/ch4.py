"""Chapter 4's exercise checkers: LLaVA and visual instruction tuning."""

from __future__ import annotations

from typing import Any, Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, run_check


_RELATION_FLIPS = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
                   "below": "above"}


def _spatial_reference(boxes: list, margin: float, *, flip_x: bool = False, flip_y: bool = False,
                       swap_xy: bool = False, minor_axis: bool = False, corners: bool = False,
                       one_way: bool = False, skip_unclear: bool = True) -> list[tuple[str, str]]:
    """Exercise 4.1's answer, and (with a switch on) each mistake the checker recognises."""
    turns = []
    for i, (label_a, a) in enumerate(boxes):
        for j, (label_b, b) in enumerate(boxes):
            if i == j or (one_way and j < i):
                continue
            if corners:  # top-left corners instead of centres
                dx, dy = a[0] - b[0], a[1] - b[1]
            else:
                dx, dy = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            if swap_xy:  # boxes read as (y0, x0, y1, x1)
                dx, dy = dy, dx
            if skip_unclear and abs(abs(dx) - abs(dy)) < margin:
                continue
            horizontal = abs(dx) < abs(dy) if minor_axis else abs(dx) >= abs(dy)
            if horizontal:
                relation = "to the left of" if (dx < 0) != flip_x else "to the right of"
            else:
                relation = "above" if (dy < 0) != flip_y else "below"
            turns.append((f"Where is the {label_a} relative to the {label_b}?", f"The {label_a} is {relation} the {label_b}."))
    return turns


def _spatial_cases() -> list[tuple[list, float]]:
    """Box lists to ask about: ShapesWorld scenes, plus hand-made ones with unclear pairs and unequal sizes."""
    from utils.shapes import make_scene

    cases = [([(label, box) for label, box in make_scene(i, seed=404, min_objects=2).boxes], 0.05) for i in range(60)]
    cases += [
        ([("red circle", (0.1, 0.1, 0.3, 0.3)), ("blue square", (0.5, 0.43, 0.7, 0.63))], 0.05),  # dx -0.4, dy -0.33
        ([("red circle", (0.1, 0.1, 0.3, 0.3)), ("blue square", (0.5, 0.43, 0.7, 0.63))], 0.1),  # the same, unclear now
        ([("dog", (0.05, 0.6, 0.45, 0.95)), ("person", (0.55, 0.05, 0.75, 0.9)), ("kite", (0.6, 0.0, 0.7, 0.1))], 0.05),
        ([("small square", (0.40, 0.10, 0.50, 0.20)), ("large square", (0.05, 0.50, 0.95, 0.60))], 0.05),
        ([("cat", (0.0, 0.0, 1.0, 1.0))], 0.05),  # one box: no pairs
    ]
    return cases


def check_spatial_questions(spatial_questions: Callable, quiet: bool = False) -> Verdict:
    """Exercise 4.1: a spatial-relation question generator, (question, answer) turns for every ordered pair of boxes.

    ``spatial_questions(boxes, margin)`` with boxes ``[(label, (x0, y0, x1, y1)), ...]`` normalised to
    [0, 1], y pointing down, returns ``("Where is the {a} relative to the {b}?", "The {a} is {relation}
    the {b}.")`` for every ordered pair of different boxes (a's index first, then b's), where relation
    is read from the box centres along the axis on which they differ more -- and no turn for a pair
    whose two offsets |dx| and |dy| differ by less than ``margin``.
    """
    mistakes = [
        ({"flip_x": True}, "left and right are swapped: a smaller centre x means further *left*"),
        ({"flip_y": True}, "above and below are swapped: in image coordinates y grows downwards, so a smaller "
                           "centre y is *higher up* (above)"),
        ({"flip_x": True, "flip_y": True}, "every relation is reversed: you describe where b is relative to a; "
                                           "compute a's centre minus b's centre"),
        ({"swap_xy": True}, "x and y are swapped: a box is (x0, y0, x1, y1), so the centre is ((x0 + x1) / 2, "
                            "(y0 + y1) / 2)"),
        ({"minor_axis": True}, "you picked the axis on which the centres differ *less*; the relation comes from "
                               "the axis with the larger offset (|dx| >= |dy| means left/right)"),
        ({"corners": True}, "compare box centres ((x0 + x1) / 2, (y0 + y1) / 2), not the top-left corners: a large "
                            "box can start further left than a small one whose centre is further left"),
        ({"skip_unclear": False}, "skip a pair whose offsets |dx| and |dy| differ by less than margin: the "
                                  "relation is a guess there, and a generator should state only what is certain"),
        ({"one_way": True}, "ask about every *ordered* pair: both (a, b) and (b, a), each with its own answer"),
    ]

    def test() -> None:
        for boxes, margin in _spatial_cases():
            got = spatial_questions([(label, tuple(box)) for label, box in boxes], margin)
            expect(isinstance(got, list), f"return a list of (question, answer) pairs, got {type(got).__name__}")
            expect(all(isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in got),
                   "each turn must be a (question, answer) pair of strings")
            got = [tuple(t) for t in got]
            want = _spatial_reference(boxes, margin)
            if got == want:
                continue
            if any(q == f"Where is the {label} relative to the {label}?" for q, _ in got for label, _ in boxes):
                raise Wrong("skip the pair of a box with itself ('Where is the circle relative to the circle?')")
            for switches, hint in mistakes:
                if got == _spatial_reference(boxes, margin, **switches) and got:
                    raise Wrong(hint)
            if sorted(got) == sorted(want):
                raise Wrong("the right turns in the wrong order: loop over a, then over b, in the order of the boxes")
            if len(got) != len(want):
                raise Wrong(f"for {len(boxes)} boxes and margin {margin} you returned {len(got)} turns, expected "
                            f"{len(want)}: one per ordered pair of different boxes, minus the unclear pairs")
            first = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            raise Wrong(f"turn {first} is {got[first]!r}, expected {want[first]!r}; write exactly "
                        "'Where is the {a} relative to the {b}?' and 'The {a} is {relation} the {b}.'")

    return run_check("4.1 (spatial_questions)", test, quiet=quiet)


def _mask_reference(ids: list[int], marker: list[int], eos_id: int, *, start: int = 0, keep_eos: bool = True,
                    stop_at_eos: bool = True, first_only: bool = False, invert: bool = False, ignore: int = -100,
                    last_marker_token: bool = False) -> list[int]:
    """Exercise 4.2's answer, and (with a switch on) each mistake the checker recognises."""
    learned = [False] * len(ids)
    m = 1 if last_marker_token else len(marker)
    pattern = marker[-1:] if last_marker_token else marker
    i = 0
    while i <= len(ids) - m:
        if ids[i:i + m] != pattern:
            i += 1
            continue
        j = i + m + start
        while j < len(ids):
            is_eos = ids[j] == eos_id
            if not (is_eos and not keep_eos):
                learned[j] = True
            j += 1
            if is_eos and stop_at_eos:
                break
        i = j
        if first_only:
            break
    if invert:
        learned = [not x for x in learned]
    return [t if keep else ignore for t, keep in zip(ids, learned)]


# Token ids of a made-up vocabulary: enough to write conversations in the chat template's shape.
_BOS, _EOS, _PAD, _IMAGE = 1, 2, 3, 9
_USER_MARKER, _ASSISTANT_MARKER = [30, 21], [20, 21]  # "USER" ":" and " ASSISTANT" ":" -- both end in ":"


def _mask_cases() -> list[list[int]]:
    """Conversations as token ids: one and several turns, image tokens, padding, a truncated last answer."""
    def turn(question: list[int], answer: list[int], image: bool = False) -> list[int]:
        return _USER_MARKER + ([_IMAGE] * 4 if image else []) + question + _ASSISTANT_MARKER + answer + [_EOS]

    one = [_BOS] + turn([40, 41, 42, 21], [50], image=True)  # a ':' inside the question too
    two = [_BOS] + turn([40, 43], [51, 52, 53], image=True) + turn([44, 45, 46], [54])
    three = [_BOS] + turn([40], [55, 56], image=True) + turn([41, 21, 42], [57]) + turn([43], [58, 59, 60]) + [_PAD] * 3
    truncated = [_BOS] + turn([40, 41], [61], image=True) + _USER_MARKER + [42] + _ASSISTANT_MARKER + [62, 63]
    return [one, two, three, truncated]


def check_mask_labels(mask_labels: Callable, quiet: bool = False) -> Verdict:
    """Exercise 4.2: labels of a tokenised conversation, -100 everywhere except the assistant's answers.

    ``mask_labels(input_ids, marker, eos_id)`` gets ``input_ids`` (L,) as a LongTensor, the ids of
    the assistant marker (" ASSISTANT:") as a list, and the end-of-turn id. An answer runs from the
    token after each occurrence of the whole marker up to and including the next ``eos_id`` (or
    to the end of the sequence if it was cut). Return a LongTensor (L,): the token id where the
    model learns, -100 everywhere else.
    """
    mistakes = [
        ({"invert": True}, "it's the other way round: you kept the prompt and masked the answers. Labels hold the "
                           "token id inside an answer and -100 everywhere else"),
        ({"start": -1}, "off by one at the start: the answer begins *after* the marker's last token (':'); the "
                        "marker is part of the prompt"),
        ({"start": 1}, "off by one at the start: the first answer token is the one right after the marker; you "
                       "masked it"),
        ({"keep_eos": False}, "keep the end-of-turn token after each answer (label = eos_id): that is how the "
                              "model learns to stop"),
        ({"stop_at_eos": False}, "an answer ends at its end-of-turn token: the user's next turn and the padding "
                                 "after it stay -100"),
        ({"first_only": True}, "mask every assistant turn, not only the first: a conversation has several answers"),
        ({"last_marker_token": True}, "match the whole marker sequence, not only its last token: ':' also ends "
                                      "'USER:' and appears inside questions"),
        ({"ignore": 0}, "use -100 for the positions the loss skips (cross_entropy's ignore_index), not 0: 0 is "
                        "a real token id"),
    ]

    def test() -> None:
        for ids in _mask_cases():
            got = mask_labels(torch.tensor(ids), list(_ASSISTANT_MARKER), _EOS)
            expect(isinstance(got, torch.Tensor), f"return a torch.Tensor, got {type(got).__name__}")
            expect(got.shape == (len(ids),), f"return one label per token, shape ({len(ids)},); got {tuple(got.shape)}")
            if got.dtype == torch.bool:
                raise Wrong("return the labels themselves (the token id where the model learns, -100 elsewhere), "
                            "not a True/False mask")
            expect(not got.is_floating_point(), f"labels are token ids: return a LongTensor, got {got.dtype}")
            got_list, want = got.tolist(), _mask_reference(ids, _ASSISTANT_MARKER, _EOS)
            if got_list == want:
                continue
            for switches, hint in mistakes:
                if got_list == _mask_reference(ids, _ASSISTANT_MARKER, _EOS, **switches):
                    raise Wrong(hint)
            if got_list == want[1:] + [-100] or got_list == ids[1:] + [-100]:
                raise Wrong("do not shift the labels: label i goes with token i, and the model shifts them itself "
                            "when it computes the loss")
            wrong = [i for i, (g, w) in enumerate(zip(got_list, want)) if g != w]
            raise Wrong(f"for input_ids {ids} the labels differ at positions {wrong[:6]}: expected {want}, got {got_list}")

    return run_check("4.2 (mask_labels)", test, quiet=quiet)


REGION_PATTERN = (r"\b(?:in|on|near|at) the (?:(top|bottom) )?(?:(left|right) )?(?:part |side |half |corner )?"
                  r"of the (?:picture|image)\b")


def _region_claim(checker: Any, sentence: Any, *, flip_x: bool = False, flip_y: bool = False,
                  vertical: bool = True, horizontal: bool = True, negations: bool = True, last_mention: bool = False,
                  edges: bool = False, thirds: bool = False, invert: bool = False) -> bool | None:
    """Whether exercise 4.3's check flags ``sentence`` (None: no claim to check) -- and, with a switch on, what
    each mistake the checker recognises would do."""
    import re

    match = re.search(REGION_PATTERN, sentence.text, flags=re.IGNORECASE)
    if match is None or not sentence.mentions or (sentence.negated and negations):
        return None
    obj = checker._one(sentence.mentions[-1 if last_mention else 0])
    if obj is None:
        return None
    row, column = (g.lower() if g else None for g in match.groups())
    cx, cy = (obj.box[0], obj.box[1]) if edges else (obj.cx, obj.cy)
    low, high = (1 / 3, 2 / 3) if thirds else (0.5, 0.5)
    wrong = False
    if column and horizontal:
        wrong |= not (cx < low) if (column == "left") != flip_x else not (cx > high)
    if row and vertical:
        wrong |= not (cy < low) if (row == "top") != flip_y else not (cy > high)
    return wrong != invert


def _region_cases() -> list[tuple[Any, str]]:
    """(context, sentence) pairs: true and false region claims, and sentences that make no claim to check."""
    from utils.instruct import ImageContext

    shapes = ImageContext("regions.png", ["a red circle, a blue square and a green triangle"], [
        ("red circle", (0.05, 0.05, 0.25, 0.25)),  # centre (0.15, 0.15): top left
        ("blue square", (0.70, 0.10, 0.95, 0.35)),  # centre (0.825, 0.225): top right
        ("green triangle", (0.40, 0.55, 0.70, 0.85)),  # centre (0.55, 0.70): bottom, just right of the middle
    ])
    tall = ImageContext("tall.png", ["a person next to a dog"], [("person", (0.1, 0.0, 0.45, 1.0)),  # centre (0.275, 0.5)
                                                                 ("dog", (0.6, 0.7, 0.9, 0.95))])
    sentences = [
        "The red circle is in the top left part of the picture.", "The red circle is in the bottom left part of the picture.",
        "The red circle is in the top right part of the picture.", "The red circle is near the top of the picture.",
        "The red circle is near the bottom of the picture.", "The red circle is on the left side of the picture.",
        "The red circle is on the right side of the picture.", "The blue square sits in the top right corner of the image.",
        "The blue square sits in the top left corner of the image.", "The blue square is near the bottom of the image.",
        "The green triangle is near the bottom of the picture.", "The green triangle is near the top of the picture.",
        "The green triangle is on the right side of the picture.", "The green triangle is on the left side of the picture.",
        "A green triangle is below the red circle, in the bottom right part of the picture.",
        "A green triangle is below the red circle, in the top right part of the picture.",
        "The red circle is above the green triangle, in the top left part of the picture.",
        "The red circle is to the left of the blue square.",  # a relation between objects, not a region
        "The red circle is not on the right side of the picture.",  # negated: no claim
        "The blue square is near the centre of the picture.",  # no region word this check reads
        "It sits in the bottom left part of the picture.",  # no noun phrase
        "The shapes are near the top of the picture.",  # names several objects
    ]
    cases = [(shapes, s) for s in sentences]
    cases += [(tall, "The person is on the left side of the image."), (tall, "The person is near the top of the image."),
              (tall, "The person is near the bottom of the image."), (tall, "The dog is in the bottom right part of the image."),
              (tall, "The dog is in the bottom left part of the image.")]
    return cases


def check_region_checker(checker_class: Any, quiet: bool = False) -> Verdict:
    """Exercise 4.3: a FactChecker subclass with a ``regions`` check, added through ``CHECKS``.

    A region claim is a match of :data:`REGION_PATTERN` ('in the top left part of the picture',
    'near the bottom of the image', 'on the right side of the picture') in a sentence without a
    negation, about the sentence's first noun phrase when it names exactly one object
    (``self._one(sentence.mentions[0])``). The claim is wrong when the box centre is not in the
    named half: 'left' needs cx < 0.5, 'right' cx > 0.5, 'top' cy < 0.5, 'bottom' cy > 0.5 (y grows
    downwards). Each problem starts with 'region:'; each claim checked adds 1 to ``self.checked["region"]``.
    """
    from utils.instruct import FactChecker

    mistakes = [
        ({"invert": True}, "you flag the true claims and pass the wrong ones: report a problem when the claim does "
                           "*not* hold"),
        ({"flip_y": True}, "top and bottom are swapped: y grows downwards in images, so 'top' means a small centre "
                           "y (cy < 0.5)"),
        ({"flip_x": True}, "left and right are swapped: 'left' means a small centre x (cx < 0.5)"),
        ({"vertical": False}, "check the horizontal word too: 'in the top left part' is wrong when the object is on "
                              "the right, even if it is at the top"),
        ({"horizontal": False}, "check the vertical word too: 'in the bottom left part' is wrong when the object is "
                                "at the top, even if it is on the left"),
        ({"negations": False}, "skip sentences with a negation (sentence.negated): 'not on the right side' claims "
                               "nothing about where the object is"),
        ({"last_mention": True}, "the claim is about the sentence's *first* noun phrase (sentence.mentions[0]), "
                                 "the subject: in 'a green triangle is below the red circle, in the bottom right "
                                 "part ...' the region describes the triangle"),
        ({"edges": True}, "use the box centre (obj.cx, obj.cy), not its top-left corner: a tall box touching the top "
                          "edge can still have its centre in the middle"),
        ({"thirds": True}, "a claim is wrong only when the centre lies outside the named *half* (compare with 0.5): "
                           "'on the right side' is a fair description of a centre at x = 0.55"),
    ]

    def test() -> None:
        expect(isinstance(checker_class, type) and issubclass(checker_class, FactChecker),
               f"pass your class itself, a subclass of FactChecker; got {checker_class!r}")
        expect(callable(getattr(checker_class, "check_regions", None)),
               "write the check as a method check_regions(self, sentence) -> list[str]")
        expect("regions" in checker_class.CHECKS,
               "list the new check where the checker looks for it: CHECKS = FactChecker.CHECKS + ('regions',)")
        expect(all(name in checker_class.CHECKS for name in FactChecker.CHECKS),
               "keep the existing checks: CHECKS = FactChecker.CHECKS + ('regions',), not ('regions',) alone")
        got, want, counted = [], [], []
        variants: dict[int, list[bool]] = {k: [] for k in range(len(mistakes))}
        for context, text in _region_cases():
            checker = checker_class(context)
            sentence = checker.analyse(text)
            problems = checker.check_regions(sentence)
            expect(isinstance(problems, list) and all(isinstance(p, str) for p in problems),
                   f"check_regions must return a list of strings (the problems found), got {problems!r}")
            expect(all(p.startswith("region:") for p in problems),
                   f"start every problem with its category, 'region: ...', so data-set statistics can count it; "
                   f"got {problems}")
            claim = _region_claim(checker, sentence)
            got.append(bool(problems))
            want.append(bool(claim))
            counted.append((text, claim is not None, checker.checked["region"]))
            for k, (switches, _) in enumerate(mistakes):
                variants[k].append(bool(_region_claim(checker, sentence, **switches)))
        if got != want:
            for k, (_, hint) in enumerate(mistakes):
                if got == variants[k]:
                    raise Wrong(hint)
            cases = _region_cases()
            i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            objects = ", ".join(f"{o.label} centre ({o.cx:.2f}, {o.cy:.2f})" for o in cases[i][0].objects)
            raise Wrong(f"{cases[i][1]!r} ({objects}): you {'flagged' if got[i] else 'passed'} it, but it "
                        f"{'is wrong' if want[i] else 'makes no wrong region claim'}")
        uncounted = [text for text, is_claim, count in counted if is_claim and count == 0]
        if uncounted:
            raise Wrong(f"nothing was counted for {uncounted[0]!r}: add 1 to self.checked['region'] for every claim "
                        "you verify, so a clean report can be told from one where nothing was checkable")
        context, text = _region_cases()[1]
        expect(any(p.startswith("region:") for p in checker_class(context).check_text(text)),
               "check_text does not report the region problem: make sure CHECKS lists 'regions'")

    return run_check("4.3 (RegionChecker)", test, quiet=quiet)
