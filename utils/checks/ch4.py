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


# --- Exercise 4.4: high-resolution sub-images (SPHINX, LLaVA-NeXT's AnyRes) ----------------------------

def _tile_boxes(width: int, height: int, grid: int, *, column_major: bool = False, swap_wh: bool = False,
                fixed_width: bool = False, extra: int = 0) -> list[tuple[int, int, int, int]]:
    """Exercise 4.4's crop boxes (left, upper, right, lower), row-major -- and, with a switch on, each mistake."""
    W, H = (height, width) if swap_wh else (width, height)
    cells = [(r, c) for c in range(grid) for r in range(grid)] if column_major else \
            [(r, c) for r in range(grid) for c in range(grid)]
    boxes = []
    for r, c in cells:
        if fixed_width:  # every tile W // grid wide: the last W % grid columns are lost
            w, h = W // grid, H // grid
            left, upper, right, lower = c * w, r * h, (c + 1) * w, (r + 1) * h
        else:
            left, upper, right, lower = c * W // grid, r * H // grid, (c + 1) * W // grid, (r + 1) * H // grid
        boxes.append((left, upper, right + extra, lower + extra))
    return boxes


def _sub_images_reference(image: Any, grid: int, size: int, **switches: Any) -> list:
    """Exercise 4.4's answer: the global view, then the grid x grid tiles in row-major order, all size x size."""
    tiles = [image.crop(box).resize((size, size)) for box in _tile_boxes(*image.size, grid, **switches)]
    return [image.resize((size, size))] + tiles


def _noise_image(width: int, height: int, seed: int) -> Any:
    """Random RGB pixels: every crop and every resize of them is different from every other."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _same_pixels(a: Any, b: Any) -> bool:
    import numpy as np

    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def _sub_image_cases() -> list[tuple[Any, int, int]]:
    """(image, grid, size): square and oblong images, sizes that divide evenly and sizes that do not."""
    from utils.shapes import make_scene

    return [
        (_noise_image(96, 96, 0), 2, 48),  # tiles are exact crops: put back together they give the image
        (_noise_image(96, 96, 1), 3, 32),
        (_noise_image(120, 80, 2), 2, 40),  # oblong: each 60 x 40 tile is squeezed to 40 x 40
        (_noise_image(65, 50, 3), 2, 32),  # 65 = 32 + 33: the tiles differ by a pixel
        (_noise_image(70, 100, 4), 3, 24),
        (make_scene(3, seed=44).render(), 2, 64),  # a ShapesWorld scene, each quarter enlarged to 64 x 64
        (_noise_image(40, 40, 5), 1, 20),  # grid 1: the one tile is the whole image again
    ]


def _all_same(got: list, want: list) -> bool:
    return len(got) == len(want) and all(_same_pixels(g, w) for g, w in zip(got, want))


def _global_view_problem(view: Any, image: Any, size: int, tiles: list, where: str) -> str:
    """Why ``view``, which is not ``image.resize((size, size))``, is the wrong global view."""
    from PIL import Image

    W, H = image.size
    side = min(W, H)
    centre = image.crop(((W - side) // 2, (H - side) // 2, (W - side) // 2 + side, (H - side) // 2 + side))
    if _same_pixels(view, centre.resize((size, size))):
        return (f"{where} the global view is a centre crop: it should be the whole image resized to size x size "
                "(squeezed when the image is not square), so nothing is cut off")
    for name in ("NEAREST", "BILINEAR", "LANCZOS", "BOX", "HAMMING"):
        if _same_pixels(view, image.resize((size, size), getattr(Image.Resampling, name))):
            return (f"the global view was resized with the {name} filter: use image.resize((size, size)), PIL's "
                    "default, for the global view and the tiles alike")
    if any(_same_pixels(view, t) for t in tiles):
        return "view 0 is one of the tiles: the global view, the whole image resized, comes first"
    return f"{where} the global view differs from image.resize((size, size)): it is the whole image, resized"


def _tiles_problem(got: list, image: Any, grid: int, size: int, where: str) -> str:
    """Why ``got``, which are not the reference tiles, are wrong: a named slip if they match one."""
    from PIL import Image

    W, H = image.size
    mistakes = [
        ({"column_major": True}, "the tiles are in column-major order (down the first column first): read them "
                                 "row-major, left to right along the top row, then the next row -- the order the "
                                 "model was trained to read"),
        ({"swap_wh": True}, "image.size is (width, height), not (height, width): on an oblong image your tiles come "
                            "from the wrong boxes"),
        ({"extra": -1}, "off by one: PIL's crop box (left, upper, right, lower) leaves out right and lower already, "
                        "so tile c ends at (c + 1) * W // grid, not one pixel before it (your tiles lose their last "
                        "column and row)"),
        ({"extra": 1}, "off by one: PIL's crop box (left, upper, right, lower) leaves out right and lower, so tile c "
                       "ends at (c + 1) * W // grid, not one pixel after it (your tiles overlap)"),
        ({"fixed_width": True}, f"with W = {W} and grid = {grid}, tiles W // grid pixels wide leave the last W % grid "
                                "columns (and rows) out: put tile c's edges at c * W // grid and (c + 1) * W // grid, "
                                "so the tiles cover the whole image"),
    ]
    for switches, hint in mistakes:
        if _all_same(got, _sub_images_reference(image, grid, size, **switches)[1:]):
            return hint
    if grid * size == W == H:  # tiles that need no resizing: put back together, they are the image
        canvas = Image.new("RGB", (W, H))
        for k, tile in enumerate(got):
            canvas.paste(tile.convert("RGB"), ((k % grid) * size, (k // grid) * size))
        if not _same_pixels(canvas, image):
            return (f"{where} each tile is an exact {size} x {size} crop, but put back together (row by row) your "
                    "tiles do not reproduce the image: tile (r, c) is image.crop((c * W // grid, r * H // grid, "
                    "(c + 1) * W // grid, (r + 1) * H // grid))")
    tiles = _sub_images_reference(image, grid, size)[1:]
    k = next(k for k, (g, w) in enumerate(zip(got, tiles)) if not _same_pixels(g, w))
    return (f"{where} tile {k} (row {k // grid}, column {k % grid}) differs from "
            f"image.crop({_tile_boxes(W, H, grid)[k]}).resize(({size}, {size}))")


def check_sub_images(sub_images: Callable, quiet: bool = False) -> Verdict:
    """Exercise 4.4: the global view and the grid x grid tiles of an image, each resized to size x size.

    ``sub_images(image, grid, size)`` takes a PIL image of W x H pixels and returns a list of
    ``grid * grid + 1`` PIL images: first the whole image resized with ``image.resize((size, size))``,
    then the tiles in row-major order (left to right along the top row, then the next row), tile
    (r, c) being ``image.crop((c * W // grid, r * H // grid, (c + 1) * W // grid, (r + 1) * H // grid))``
    resized the same way. A grid or a size below 1, or a grid with more tiles per side than the
    image has pixels, raises a ``ValueError``.
    """
    from PIL import Image

    def views_of(image: Any, grid: int, size: int) -> list:
        got = sub_images(image.copy(), grid, size)
        expect(isinstance(got, (list, tuple)), f"return a list of PIL images (the global view, then the tiles), got "
                                               f"{type(got).__name__}")
        for k, view in enumerate(got):
            expect(isinstance(view, Image.Image), f"view {k} is a {type(view).__name__}: return PIL images, as "
                                                  "image.crop(...).resize(...) gives them")
        return list(got)

    def test() -> None:
        for image, grid, size in _sub_image_cases():
            W, H = image.size
            got, want = views_of(image, grid, size), _sub_images_reference(image, grid, size)
            where = f"for a {W} x {H} image, grid={grid}, size={size}"
            if _all_same(got, want[1:]):
                raise Wrong(f"{where} you returned only the {grid * grid} tiles: the global view, the whole image "
                            "resized to size x size, comes first -- it is what keeps the layout of the whole scene")
            expect(len(got) == len(want), f"{where} expected {len(want)} views (the global view and {grid} x {grid} "
                                          f"tiles), got {len(got)}")
            raw = [image.crop(box).size for box in _tile_boxes(W, H, grid)]
            for k, view in enumerate(got):
                if k > 0 and view.size != (size, size) and view.size == raw[k - 1]:
                    raise Wrong(f"{where} tile {k - 1} is the raw {view.size[0]} x {view.size[1]} crop: resize every "
                                "tile to size x size, the one input size the image encoder takes")
                expect(view.size == (size, size), f"{where} view {k} is {view.size[0]} x {view.size[1]} pixels: "
                                                  f"resize every view to size x size = {size} x {size}")
            if _all_same(got, want):
                continue
            if _all_same(got[-1:] + got[:-1], want):
                raise Wrong("the global view comes first, then the tiles (you put it last)")
            if not _same_pixels(got[0], want[0]):
                raise Wrong(_global_view_problem(got[0], image, size, want[1:], where))
            if not _all_same(got[1:], want[1:]):
                raise Wrong(_tiles_problem(got[1:], image, grid, size, where))
        image = _noise_image(64, 48, 6)
        for grid, size in ((0, 32), (-1, 32), (2, 0), (49, 32)):
            try:
                sub_images(image.copy(), grid, size)
            except ValueError:
                continue
            raise Wrong(f"sub_images(image of 64 x 48, grid={grid}, size={size}) returned without complaint: raise a "
                        "ValueError for a grid or a size below 1, and for a grid with more tiles per side than the "
                        "image has pixels")

    return run_check("4.4 (sub_images)", test, quiet=quiet)


# --- Exercise 4.5: does the tiny LLaVA look? Ablating the image tokens --------------------------------

ABLATIONS = ("intact", "shuffled", "mean", "swapped")


def ablation_permutation(n: int) -> torch.Tensor:
    """The fixed order exercise 4.5 shuffles an image's n tokens into."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))


def _ablate(features: torch.Tensor, how: str) -> torch.Tensor:
    """The projector's output (B, N, D) as exercise 4.5's ``how`` changes it ("swapped" changes the images instead)."""
    if how == "shuffled":
        return features[:, ablation_permutation(features.shape[1]).to(features.device)]  # (B, N, D), N reordered
    if how == "mean":
        return features.mean(dim=1, keepdim=True).expand_as(features)  # (B, N, D), every token the image's mean
    return features


def _ablation_questions(scenes: list, how: str) -> tuple[list, list[str]]:
    """One (image, question) pair per question of every scene, in order; "swapped" shows scene i + 1's image."""
    from utils import llava

    images = [s.render() for s in scenes]
    if how == "swapped":
        images = images[1:] + images[:1]
    pairs = [(image, llava.short_question(q.text)) for s, image in zip(scenes, images) for q in s.questions]
    return [image for image, _ in pairs], [question for _, question in pairs]


def _ablated_reference(model: Any, processor: Any, scenes: list, how: str) -> list[str]:
    """Exercise 4.5's answer: the model's answers with the image tokens changed by a hook on the projector."""
    from utils import llava

    handle = model.model.multi_modal_projector.register_forward_hook(lambda module, inputs, out: _ablate(out, how))
    try:
        return llava.answer_questions(model, processor, *_ablation_questions(scenes, how))
    finally:
        handle.remove()


class _ImageTokens:
    """Records the image positions of what the language model reads, question by question, at each prompt's first step.

    Two pre-hooks: one on ``LlavaModel`` keeps the prompt's token ids, one on its language model reads
    the embeddings it is given; the rows at the ``<image>`` ids are the image tokens, after any change
    a learner's hook made to the projector's output.
    """

    def __init__(self, model: Any) -> None:
        self.model, self.rows, self._ids = model, [], None
        config = model.config
        self.image_id = getattr(config, "image_token_id", None)
        self.image_id = config.image_token_index if self.image_id is None else self.image_id

    def _keep_ids(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._ids = ids if isinstance(ids, torch.Tensor) and ids.ndim == 2 and ids.shape[1] > 1 else None

    def _read_embeds(self, module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        if self._ids is None or embeds is None or tuple(embeds.shape[:2]) != tuple(self._ids.shape):
            return
        mask = self._ids == self.image_id  # (B, L)
        # (N, D) each, in the model's dtype: for LLaVA-1.5, 44 questions x 576 tokens x 4,096 numbers, 0.2 GB in float16
        self.rows += [embeds[b][mask[b]].detach().cpu() for b in range(len(embeds)) if mask[b].any()]
        self._ids = None

    def __enter__(self) -> "_ImageTokens":
        inner = self.model.model
        self._handles = [inner.register_forward_pre_hook(self._keep_ids, with_kwargs=True),
                         inner.language_model.register_forward_pre_hook(self._read_embeds, with_kwargs=True)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()


def _watched_modules(model: Any) -> list:
    inner = model.model
    return [inner.multi_modal_projector, inner.vision_tower, inner.language_model, inner, model]


def _hooks(model: Any) -> set[tuple[int, int]]:
    """Every forward hook and pre-hook on the modules a learner might hook, as (module, hook id) pairs."""
    return {(id(m), key) for m in _watched_modules(model) for d in (m._forward_hooks, m._forward_pre_hooks) for key in d}


def _remove_new_hooks(model: Any, before: set[tuple[int, int]]) -> bool:
    """Remove hooks added since ``before``; True if there were any."""
    found = False
    for m in _watched_modules(model):
        for d in (m._forward_hooks, m._forward_pre_hooks):
            for key in [k for k in d if (id(m), k) not in before]:
                del d[key]
                found = True
    return found


def _intact_features(model: Any, processor: Any, scenes: list) -> list[torch.Tensor]:
    """Each scene's image tokens (N, D) as the language model reads them untouched (one prompt per scene, one forward)."""
    from utils import llava

    prompt = processor.apply_chat_template([llava.user_message("What is in the image?")], add_generation_prompt=True)
    inputs = processor(images=[s.render() for s in scenes], text=[prompt] * len(scenes), return_tensors="pt",
                       padding=True).to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # (B, C, H, W)
    with torch.no_grad(), _ImageTokens(model) as seen:
        model.model(**inputs)
    return [row.float() for row in seen.rows]


def _diagnose_tokens(how: str, rows: list[torch.Tensor], owner: list[int], features: list[torch.Tensor],
                     tol: tuple[float, float]) -> str | None:
    """What is wrong with the image tokens the language model read (None: they are right)."""
    n = len(features)

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=tol[0], rtol=tol[1]))

    def all_rows(expected: Callable[[int], torch.Tensor]) -> bool:
        return all(close(r, expected(k)) for k, r in enumerate(rows))

    source = (lambda k: (owner[k] + 1) % n) if how == "swapped" else (lambda k: owner[k])
    if all_rows(lambda k: _ablate(features[source(k)][None], how)[0]):
        return None
    if how == "swapped" and all_rows(lambda k: features[owner[k]]):
        return "every question saw its own scene's image: ask scene i's questions with the image of scene (i + 1) % n"
    if how != "intact" and all_rows(lambda k: features[owner[k]]):
        return (f'with how="{how}" the language model read every image\'s tokens unchanged: change the projector\'s '
                "output with a forward hook that returns the new tensor")
    if how == "intact":
        return ('with how="intact" the image tokens must reach the language model as the projector made them; yours '
                "were changed (is a hook from an earlier call still in place?)")
    if how == "swapped":
        if all_rows(lambda k: features[(owner[k] - 1) % n]):
            return "scene i's questions saw the previous scene's image: use the next one, scene (i + 1) % n"
        if all_rows(lambda k: features[min(owner[k] + 1, n - 1)]):
            return "wrap around: the last scene's questions are asked with the first scene's image"
        if sum(close(r, features[owner[k]]) for k, r in enumerate(rows)) > len(rows) // 2:
            return ("most questions still saw their own scene: swap whole scenes (every question about scene i is "
                    "asked with scene (i + 1) % n's image), not the list of questions shifted by one")
        return "scene i's questions should be asked with scene (i + 1) % n's image, unchanged"
    N = rows[0].shape[0]
    if how == "shuffled":
        if all(close(r.float().sort(dim=1).values, features[owner[k]].sort(dim=1).values) for k, r in enumerate(rows)):
            return ("you shuffled the D numbers inside each token (dim 2); shuffle the N tokens of each image "
                    "(dim 1), keeping each token whole")
        if all(close(r.float().sort(dim=0).values, features[owner[k]].sort(dim=0).values) for k, r in enumerate(rows)):
            return (f"the tokens were reordered, but not by the exercise's permutation: use the same one for every image, "
                    f"perm = torch.randperm({N}, generator=torch.Generator().manual_seed(0)), and features[:, perm]")
        if any(close(r, features[j]) for r, j in ((r, j) for r in rows for j in range(n))):
            return ("whole images changed places (dim 0, the batch): shuffle the N tokens within each image (dim 1), "
                    "the same permutation for every image")
        return (f"each image's tokens should be its own N = {N} tokens in the order "
                f"torch.randperm({N}, generator=torch.Generator().manual_seed(0))")
    # how == "mean"
    if all_rows(lambda k: features[owner[k]].mean(dim=-1, keepdim=True).expand_as(features[owner[k]])):
        return ("you averaged the D numbers of each token (dim 2): average the N tokens of each image (dim 1), so "
                "every token becomes the image's mean token")
    uniform = all(close(r, r[:1].expand_as(r)) for r in rows)
    if uniform:
        return ("every token of an image should be that image's own mean token, the mean of its N tokens (dim 1); "
                "yours mixes in other images (did you average over the batch, dim 0, too?)")
    if len(rows) > 1 and all(close(r, rows[0]) for r in rows):
        return ("every image got the same tokens: you averaged over the images of the batch (dim 0); average the N "
                "tokens of each image (dim 1), and keep N of them: .mean(dim=1, keepdim=True).expand_as(features)")
    return "replace each of an image's N tokens by the mean of its N tokens: .mean(dim=1, keepdim=True).expand_as(features)"


def _ablation_scenes() -> list:
    from utils.shapes import ShapesWorld

    return ShapesWorld(4, seed=45, split="test", min_objects=2).scenes


def check_ablated_answers(ablated_answers: Callable, model: Any, processor: Any, quiet: bool = False) -> Verdict:
    """Exercise 4.5: the model's answers to every question of ``scenes`` with its image tokens changed.

    ``ablated_answers(model, processor, scenes, how)`` asks every question of every scene, in order
    (``llava.short_question(q.text)`` through ``llava.answer_questions``), and returns the answers,
    with the tokens the projector hands to the language model (B, N, D) changed by ``how``: "intact"
    leaves them; "shuffled" reorders each image's N tokens by
    ``torch.randperm(N, generator=torch.Generator().manual_seed(0))``; "mean" replaces each of them
    by the image's mean token; "swapped" asks scene i's questions with scene (i + 1) % n's image.
    Any other ``how`` raises a ValueError. The checker reads the image tokens the language model
    receives, and compares the answers with its own.
    """
    from utils import llava

    scenes = _ablation_scenes()
    owner = [i for i, s in enumerate(scenes) for _ in s.questions]

    def call(how: str, these: list) -> tuple[Any, list[torch.Tensor]]:
        before = _hooks(model)
        left = False
        try:
            with _ImageTokens(model) as seen:
                got = ablated_answers(model, processor, list(these), how)
            left = _remove_new_hooks(model, before)
        except ValueError as exc:
            _remove_new_hooks(model, before)
            if "do not match" in str(exc):
                raise Wrong(f'with how="{how}" the language model got a different number of image tokens than the '
                            "prompt has <image> positions: a hook must return the projector's shape (B, N, D), one "
                            "token per patch (e.g. .mean(dim=1, keepdim=True).expand_as(features))") from None
            raise
        except BaseException:
            _remove_new_hooks(model, before)
            raise
        if left:
            raise Wrong(f'after ablated_answers(..., "{how}") returned, a hook was still in place on the model, so '
                        "every later answer would be ablated too (the checker removed it): keep the handle "
                        "register_forward_hook returns and call handle.remove() in a finally: block")
        return got, seen.rows

    def test() -> None:
        features: list[torch.Tensor] | None = None
        for how in ABLATIONS:
            got, rows = call(how, scenes)  # first: a stub stops here
            expect(isinstance(got, (list, tuple)) and all(isinstance(a, str) for a in got),
                   f"return the answers as a list of strings, one per question; got {type(got).__name__}")
            expect(len(got) == len(owner), f"{len(scenes)} scenes hold {len(owner)} questions, but you returned "
                                           f"{len(got)} answers: ask every question of every scene (scene.questions)")
            if features is None:
                features = _intact_features(model, processor, scenes)
                # Batches of another size round differently: allow float32 1e-3 of the tokens' typical size (float16
                # on a GPU 3e-2), far below what any slip changes.
                typical = torch.cat(features).pow(2).mean().sqrt().item()
                relative = 1e-3 if model.dtype in (torch.float32, torch.float64) else 3e-2
                tol = (relative * typical, relative)
            if len(rows) == len(owner):  # the questions went through the model's own forward: check the tokens
                problem = _diagnose_tokens(how, rows, owner, features, tol)
                if problem:
                    raise Wrong(problem)
            want = [llava.first_word(a) for a in _ablated_reference(model, processor, scenes, how)]
            differ = [k for k, (g, w) in enumerate(zip(got, want)) if llava.first_word(g) != w]
            if len(differ) > max(1, len(want) // 20):  # a near-tie may go either way when batches differ
                k = differ[0]
                raise Wrong(f'with how="{how}" {len(differ)} of {len(want)} answers differ from the model\'s own, e.g. '
                            f"question {k} ({scenes[owner[k]].questions[k - owner.index(owner[k])].text!r}): "
                            f"{got[k]!r}, expected {want[k]!r}. Ask the questions in order (scene by scene, "
                            "scene.questions in order), each as llava.short_question(q.text), with llava.answer_questions")
        try:
            call("blurred", scenes[:1])
        except ValueError:
            return
        raise Wrong(f'how="blurred" returned answers: raise a ValueError for anything but {", ".join(ABLATIONS)}')

    return run_check("4.5 (ablated_answers)", test, quiet=quiet)
