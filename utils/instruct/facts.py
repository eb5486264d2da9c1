"""The fact checker: every claim a generated sentence makes, checked against the boxes."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Mapping

from utils.instruct.context import (
    COLOUR_WORDS, POSITION_TOLERANCE, SHAPE_WORDS, SIZE_TOLERANCE, ImageContext, LabelledBox, article,
    box_relation, join_words, plural,
)
from utils.instruct.records import GPT
from utils.instruct.sentences import (
    CLAUSE_BREAKS, TOKEN_PATTERN, Mention, Sentence, SentenceReader, is_negation, split_sentences,
)

# The checks' own words: counts framed as totals, relations, superlatives.
_COUNT_FRAME_BEFORE = frozenset({"are", "is", "there", "has", "have", "contains", "contain", "shows", "show", "see",
                                 "total", "exactly", "only", "just", "all", "altogether", "count", "counted"})
_COUNT_FRAME_AFTER = (("in", "the", "image"), ("in", "the", "picture"), ("in", "the", "scene"), ("in", "the", "photo"),
                      ("in", "this", "image"), ("in", "this", "picture"), ("in", "total"), ("in", "all"), ("altogether",),
                      ("visible",))
RELATION_PHRASES: dict[tuple[str, ...], str] = {
    ("to", "the", "left", "of"): "left", ("on", "the", "left", "of"): "left", ("left", "of"): "left",
    ("to", "the", "right", "of"): "right", ("on", "the", "right", "of"): "right", ("right", "of"): "right",
    ("above",): "above", ("higher", "than"): "above", ("higher", "up", "than"): "above",
    ("below",): "below", ("beneath",): "below", ("underneath",): "below", ("under",): "below",
    ("lower", "than"): "below", ("lower", "down", "than"): "below",
    ("larger", "than"): "larger", ("bigger", "than"): "larger", ("smaller", "than"): "smaller",
    ("same", "size", "as"): "same size",
}
_RELATION_TEXT = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below",
                  "larger": "larger than", "smaller": "smaller than", "same size": "the same size as"}
SUPERLATIVES: dict[str, tuple[str, int]] = {  # word -> (attribute, +1 for the largest value, -1 for the smallest)
    "leftmost": ("cx", -1), "rightmost": ("cx", 1), "topmost": ("cy", -1), "uppermost": ("cy", -1),
    "highest": ("cy", -1), "bottommost": ("cy", 1), "lowest": ("cy", 1),
    "largest": ("area", 1), "biggest": ("area", 1), "smallest": ("area", -1),
}
_SIDE = re.compile(r"\b(?:is|are|sits|sit|lies|lie|appears|appear)\s+(?:on|at)\s+the\s+(left|right|top|bottom)\b"
                   r"(?!\s+(?:(?:side|half|edge|part)\s+)?(?:of|than)\b)", re.IGNORECASE)  # '... of X' is a relation
_SUPERLATIVE_RIVAL = {("cx", -1): "as far left", ("cx", 1): "as far right", ("cy", -1): "as high up",
                      ("cy", 1): "as low down", ("area", 1): "as large", ("area", -1): "as small"}


# --- the fact checker ----------------------------------------------------------------------------

class FactChecker:
    """Flags what an answer says about an image that its context contradicts.

    Each sentence of each gpt turn is tokenised and its noun phrases ('the small red circle',
    'three shapes') are resolved against the context's boxes. Then each check in
    :attr:`CHECKS` runs on it and returns problems, each 'category: explanation':

    - ``colours``: a colour word no object or caption has; 'the red square' when the square is
      blue; 'the circle is red' when it is not;
    - ``shapes``: a shape (or category) that is not in the image; 'the red object is a square';
    - ``counts``: 'there are three shapes', 'I can see 2 circles' (number words and digits)
      when the count differs; only counts framed as totals ('there are', 'contains', 'only',
      'in the image', ...) are read, so 'two of the shapes are red' is left alone;
    - ``relations``: 'A is to the left of / right of / above / below B' and 'A is the leftmost'
      when the box centres do not support it (by :data:`POSITION_TOLERANCE`);
    - ``sizes``: 'small'/'large' against the box area (:data:`SMALL_AREA`), 'larger than',
      'the same size as', 'the largest';
    - ``sides``: 'the green shape is on the right', 'the circle is at the top' (the side of the
      picture, no reference object) when the box centre is in the other half;
    - ``existence``: 'there is no red circle' when there is one;
    - ``leaks``: mentions of captions, boxes or coordinates, which someone looking at the image
      could not know about.

    Clauses with a negation skip the vocabulary checks ('there is no star' is fine; clauses end
    at commas and at words such as 'and' and 'while'), and hypothetical sentences ('if the
    circle were moved ..., it would ...') skip counts and positions, which describe another
    scene. To add a check, subclass, write ``check_<name>(self, sentence) -> list[str]`` and
    extend ``CHECKS``::

        class MyChecker(FactChecker):
            CHECKS = FactChecker.CHECKS + ("regions",)

            def check_regions(self, sentence: Sentence) -> list[str]:
                ...

    :attr:`checked` counts the claims each check verified, so a clean report can be told apart
    from one where nothing was checkable.
    """

    CHECKS: tuple[str, ...] = ("colours", "shapes", "counts", "relations", "sizes", "sides", "existence", "leaks")

    def __init__(
        self,
        context: ImageContext,
        *,
        nouns: Iterable[str] = (),
        colours: Iterable[str] = COLOUR_WORDS,
        position_tolerance: float = POSITION_TOLERANCE,
        size_tolerance: float = SIZE_TOLERANCE,
    ) -> None:
        if not isinstance(context, ImageContext):
            raise TypeError(f"FactChecker needs an ImageContext, got {type(context).__name__}")
        self.context = context
        self.objects = context.objects
        self.position_tolerance, self.size_tolerance = position_tolerance, size_tolerance
        self.checked: Counter[str] = Counter()
        self.nouns = {o.noun for o in self.objects} | set(SHAPE_WORDS) | set(context.categories)
        self.nouns |= {n.strip().lower() for n in nouns}
        self.colour_words = {c for c in colours} - self.nouns  # 'orange' the fruit is a noun, not a colour
        caption_tokens = [TOKEN_PATTERN.findall(c.lower()) for c in context.captions]
        caption_words = {t for tokens in caption_tokens for t in tokens}
        self.scene_colours = {o.colour for o in self.objects if o.colour} | {
            "grey" if w == "gray" else w for w in caption_words & self.colour_words}
        # A noun is in the scene if some box has it or a caption names it.
        self.surface: dict[tuple[str, ...], tuple[str, bool]] = {}
        for noun in self.nouns:
            self.surface[tuple(noun.split())] = (noun, False)
            self.surface.setdefault(tuple(plural(noun).split()), (noun, True))
        self.reader = SentenceReader(self.surface, self.colour_words)
        caption_nouns = {noun for tokens in caption_tokens for m in self.reader.mentions(tokens) if (noun := m.noun)}
        self.scene_nouns = {o.noun for o in self.objects} | caption_nouns

    # --- reading sentences (utils.instruct.sentences) -------------------------------------------
    def _colour(self, token: str) -> str | None:
        return self.reader.colour(token)

    def analyse(self, text: str) -> Sentence:
        """Tokens, clauses, noun phrases and predicates of one sentence."""
        return self.reader.read(text)

    # --- resolving noun phrases -------------------------------------------------------------------
    def resolve(self, mention: Mention) -> list[LabelledBox]:
        """The boxes a noun phrase may name (by noun and colour; a size word is checked, not used to pick)."""
        return [o for o in self.objects
                if (mention.noun is None or o.noun == mention.noun) and (mention.colour is None or o.colour == mention.colour)]

    def _one(self, mention: Mention) -> LabelledBox | None:
        found = self.resolve(mention)
        return found[0] if len(found) == 1 and not mention.plural else None

    @staticmethod
    def _quote(sentence: Sentence) -> str:
        text = sentence.text.strip()
        return f'"{text[:117]}..."' if len(text) > 120 else f'"{text}"'

    # --- the checks -------------------------------------------------------------------------------
    def check_colours(self, s: Sentence) -> list[str]:
        problems = []
        for colour in dict.fromkeys(c for i, t in enumerate(s.tokens) if (c := self._colour(t)) and not s.negated_at(i)):
            self.checked["colour"] += 1
            if colour not in self.scene_colours:
                problems.append(f"colour: {self._quote(s)} mentions {colour}, but nothing in the image is {colour}")
        for m in s.mentions:
            if m.colour and m.noun in self.scene_nouns and m.colour in self.scene_colours and not s.negated_at(m.start):
                same_noun = [o for o in self.objects if o.noun == m.noun and o.colour]
                if same_noun and not self.resolve(m):
                    actual = join_words(sorted({o.colour for o in same_noun}))
                    problems.append(f"colour: {self._quote(s)} mentions a {m.colour} {m.noun}, but the {m.noun} is {actual}")
        for p in s.predicates:
            obj = self._one(p.subject)
            if obj is None or obj.colour is None:
                continue
            for colour in p.colours:
                self.checked["colour"] += 1
                if (colour == obj.colour) == p.negated:
                    problems.append(f"colour: {self._quote(s)} -- the {obj.label} is {obj.colour}")
        return problems

    def check_shapes(self, s: Sentence) -> list[str]:
        problems = []
        for m in s.mentions:
            if m.noun is None or s.negated_at(m.start):
                continue
            self.checked["shape"] += 1
            if m.noun not in self.scene_nouns:
                what = "shape" if m.noun in SHAPE_WORDS else "object"
                problems.append(f"{what}: {self._quote(s)} mentions {article(m.noun)} {m.noun}, but the image has none")
        for p in s.predicates:  # 'the red object is a circle'
            obj = self._one(p.subject)
            if obj is not None and p.noun is not None:
                self.checked["shape"] += 1
                if (p.noun == obj.noun) == p.negated:
                    problems.append(f"shape: {self._quote(s)} -- but the {obj.label} is {article(obj.noun)} {obj.noun}")
        return problems

    def _is_count_claim(self, s: Sentence, m: Mention) -> bool:
        assert m.number_at is not None
        # Look back up to 8 words, across 'and' but not across other clause breaks:
        # 'the picture contains a circle and two squares' is a total, 'the circle is small, and two ...' is not.
        before: list[str] = []
        for token in reversed(s.tokens[max(0, m.number_at - 8):m.number_at]):
            if token in CLAUSE_BREAKS and token != "and":
                break
            before.append(token)
        after = tuple(s.tokens[m.end:m.end + 3])
        return bool(set(before) & _COUNT_FRAME_BEFORE) or any(after[:len(f)] == f for f in _COUNT_FRAME_AFTER)

    def check_counts(self, s: Sentence) -> list[str]:
        if s.hypothetical:
            return []
        problems = []
        for m in s.mentions:
            if m.number is None or s.negated_at(m.start) or not self._is_count_claim(s, m):
                continue
            if m.noun is not None and m.noun not in self.scene_nouns:
                continue  # an invented object: the shapes check reports it
            true_count = sum(1 for o in self.resolve(m) if m.size is None or o.size == m.size)
            self.checked["count"] += 1
            if true_count != m.number:
                noun = m.noun or self.context.kind
                what = " ".join(w for w in (m.size, m.colour, noun if true_count == 1 else plural(noun)) if w)
                problems.append(f"count: {self._quote(s)} says {m.number}, but the image has {true_count} {what}")
        return problems

    def _relation_holds(self, kind: str, a: LabelledBox, b: LabelledBox) -> bool:
        """Whether the boxes clearly support 'a <kind> b'."""
        tol, size_tol = self.position_tolerance, self.size_tolerance
        ratio = a.area / b.area
        return {
            "left": a.cx < b.cx - tol, "right": a.cx > b.cx + tol,
            "above": a.cy < b.cy - tol, "below": a.cy > b.cy + tol,
            "larger": ratio > 1 + size_tol, "smaller": ratio < 1 - size_tol,
            "same size": abs(ratio - 1) <= size_tol,
        }[kind]

    def _relation_matches(self, s: Sentence) -> list[tuple[int, int, str]]:
        found, i = [], 0
        while i < len(s.tokens):
            for n in (4, 3, 2, 1):
                kind = RELATION_PHRASES.get(tuple(s.tokens[i:i + n]))
                if kind:
                    found.append((i, i + n, kind))
                    i += n - 1
                    break
            i += 1
        return found

    def _pairwise(self, s: Sentence, kinds: set[str]) -> list[str]:
        """'A <relation> B' claims whose relation is in ``kinds``: the first phrase of the clause vs the next one."""
        problems = []
        for start, end, kind in self._relation_matches(s):
            if kind not in kinds:
                continue
            clause = s.clause_of[start]
            subject = next((m for m in s.mentions if s.clause_of[m.start] == clause and m.end <= start), None)
            if subject is None and start > 0 and s.tokens[start - 1] == ",":
                # An aside right after a noun phrase: 'the square, below the circle, is further away'.
                subject = next((m for m in reversed(s.mentions) if m.end == start - 1), None)
            other = next((m for m in s.mentions if s.clause_of[m.start] == clause and m.start >= end), None)
            if subject is None or other is None:
                continue
            a, b = self._one(subject), self._one(other)
            if a is None or b is None or a is b:
                continue
            negated = s.clause_negated(clause)
            category = "size" if kind in ("larger", "smaller", "same size") else "relation"
            self.checked[category] += 1
            if self._relation_holds(kind, a, b) == negated:
                truth = (f"the {a.label} is {box_relation(a.box, b.box)} the {b.label}" if category == "relation"
                         else f"the {a.label} is {a.size} and the {b.label} is {b.size}")
                problems.append(f"{category}: {self._quote(s)} says the {a.label} is {'not ' * negated}"
                                f"{_RELATION_TEXT[kind]} the {b.label}, but {truth}")
        return problems

    def _superlatives(self, s: Sentence, attributes: set[str]) -> list[str]:
        problems = []
        for i, token in enumerate(s.tokens):
            if token not in SUPERLATIVES or SUPERLATIVES[token][0] not in attributes or s.clause_negated(s.clause_of[i]):
                continue
            attribute, sign = SUPERLATIVES[token]
            candidates = [m for m in s.mentions if s.clause_of[m.start] == s.clause_of[i] and m.start != i + 1]
            obj = self._one(candidates[0]) if candidates else None
            if obj is None:
                continue
            others = [o for o in self.objects if o is not obj]
            category = "size" if attribute == "area" else "relation"
            self.checked[category] += 1
            value = getattr(obj, attribute)
            if attribute == "area":
                beaten = [o for o in others if not (sign * value > sign * o.area * (1 + sign * self.size_tolerance))]
            else:
                beaten = [o for o in others if not (sign * value > sign * getattr(o, attribute) + self.position_tolerance)]
            if beaten:
                rivals = join_words([f"the {o.label}" for o in beaten])
                problems.append(f"{category}: {self._quote(s)} calls the {obj.label} the {token}, but {rivals} "
                                f"{'is' if len(beaten) == 1 else 'are'} at least {_SUPERLATIVE_RIVAL[attribute, sign]}")
        return problems

    def check_relations(self, s: Sentence) -> list[str]:
        if s.hypothetical:
            return []
        return self._pairwise(s, {"left", "right", "above", "below"}) + self._superlatives(s, {"cx", "cy"})

    def check_sizes(self, s: Sentence) -> list[str]:
        problems = []
        for m in s.mentions:
            found = self.resolve(m)
            if m.size is None or not found or s.negated_at(m.start):
                continue
            self.checked["size"] += 1
            if all(o.size != m.size for o in found):
                problems.append(f"size: {self._quote(s)} calls the {found[0].label if len(found) == 1 else 'objects'} "
                                f"{m.size}, but {'it is' if len(found) == 1 else 'they are'} {found[0].size}")
        for p in s.predicates:
            found = self.resolve(p.subject)
            if not p.sizes or not found or (len(found) > 1 and not p.subject.plural):
                continue  # nothing to check, or 'the person' with several people: ambiguous
            for size in p.sizes:
                self.checked["size"] += 1
                wrong = [o for o in found if (o.size == size) == p.negated]
                if wrong:
                    problems.append(f"size: {self._quote(s)} -- the {wrong[0].label} is {wrong[0].size}")
        if not s.hypothetical:
            problems += self._pairwise(s, {"larger", "smaller", "same size"}) + self._superlatives(s, {"area"})
        return problems

    def check_existence(self, s: Sentence) -> list[str]:
        if not s.negated or s.hypothetical:
            return []
        problems = []
        for m in s.mentions:
            start = m.number_at if m.number_at is not None else m.start
            before = s.tokens[max(0, start - 3):start]
            denies = before[-1:] in (["no"], ["any"]) or (before[-1:] in (["a"], ["an"]) and any(map(is_negation, before)))
            if not denies:
                continue
            present = [o for o in self.resolve(m) if m.size is None or o.size == m.size]
            self.checked["existence"] += 1
            if present:
                label = present[0].label
                problems.append(f"existence: {self._quote(s)} denies it, but there is {article(label)} {label}")
        return problems

    _LEAKS = (
        (re.compile(r"\bcaptions?\b", re.I), "the captions"),
        (re.compile(r"\bbounding[- ]box(es)?\b|\bboxes\b", re.I), "the boxes"),
        (re.compile(r"\bcoordinates?\b|\[\s*\d|(?<![\d.])0?\.\d{2,}\b", re.I), "coordinates"),  # '0.36', not '2.50'
        (re.compile(r"\bannotat", re.I), "the annotations"),
    )

    def check_sides(self, s: Sentence) -> list[str]:
        """'<the first object> is on the left / right / at the top / bottom' of the picture, with no 'of ...'
        after it (that is a relation) -- the half its box centre is in."""
        match = _SIDE.search(s.text)
        if match is None or s.hypothetical or s.negated or not s.mentions:
            return []
        obj = self._one(s.mentions[0])
        if obj is None:
            return []
        self.checked["side"] += 1
        side = match.group(1).lower()
        holds = {"left": obj.cx < 0.5, "right": obj.cx > 0.5, "top": obj.cy < 0.5, "bottom": obj.cy > 0.5}[side]
        if holds:
            return []
        return [f"side: {self._quote(s)} puts the {obj.label} on the {side}, but its centre is at "
                f"({obj.cx:.2f}, {obj.cy:.2f})"]

    def check_leaks(self, s: Sentence) -> list[str]:
        self.checked["leak"] += 1
        return [f"leak: {self._quote(s)} refers to {what}, which someone looking at the image would not know of"
                for pattern, what in self._LEAKS if pattern.search(s.text)]

    # --- entry points ---------------------------------------------------------------------------
    def check_text(self, text: str) -> list[str]:
        """Problems in one answer (a paragraph or a sentence)."""
        problems: list[str] = []
        for sentence_text in split_sentences(text):
            sentence = self.analyse(sentence_text)
            for name in self.CHECKS:
                check = getattr(self, f"check_{name}", None)
                if check is None:
                    raise AttributeError(f"{type(self).__name__}.CHECKS lists {name!r} but there is no check_{name} method")
                problems += check(sentence)
        return list(dict.fromkeys(problems))

    def check_record(self, record: Mapping[str, Any]) -> list[str]:
        """Problems in a record's gpt turns (questions may rightly ask about absent things)."""
        problems: list[str] = []
        for turn in record.get("conversations", []):
            if isinstance(turn, Mapping) and turn.get("from") == GPT and isinstance(turn.get("value"), str):
                problems += self.check_text(turn["value"])
        return list(dict.fromkeys(problems))


def check_facts(record: Mapping[str, Any], context: ImageContext, **checker_options: Any) -> list[str]:
    """What a record's answers say that the context contradicts (see :class:`FactChecker`)."""
    return FactChecker(context, **checker_options).check_record(record)
