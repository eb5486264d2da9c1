"""Reading generated sentences: the fact checker's small parser (mentions, predicates, negation)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from utils.instruct.context import GENERIC_NOUNS, NUMBER_VALUES, SIZE_WORDS

# --- reading sentences: the fact checker's parser ----------------------------------------------

TOKEN_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?|[,;:()]")
CLAUSE_BREAKS = frozenset({",", ";", ":", "(", ")", "and", "but", "while", "whereas", "so", "because", "although",
                            "though", "which"})
_NEGATIONS = frozenset({"no", "not", "none", "never", "neither", "nor", "without", "cannot", "nothing"})
_HYPOTHETICAL = frozenset({"if", "were", "would", "suppose", "imagine", "could", "might", "wouldn't", "couldn't"})
_LEADING_ANSWER = re.compile(r"^\s*(?:yes|no)\s*[,.;!:]\s*", re.IGNORECASE)  # 'No, ...' but not 'No large ...'
_COPULAS = frozenset({"is", "are", "looks", "look", "appears", "appear", "seems", "seem", "isn't", "aren't"})
_PREDICATE_FILLERS = frozenset({"a", "an", "quite", "rather", "very", "fairly", "relatively", "also", "both", "all",
                                "clearly", "like", "mostly"})
_SUBJECT_GLUE = frozenset({"and", ",", "the", "a", "an", "both"})


@dataclass(frozen=True)
class Mention:
    """A noun phrase naming objects: '[number] [size] [colour] noun', as a token span [start, end)."""

    start: int
    end: int
    noun: str | None  # canonical noun ('circle'), None for 'shape', 'object', 'one' ...
    colour: str | None
    size: str | None  # 'small' or 'large'
    plural: bool
    number: int | None = None  # 'three red circles' -> 3
    number_at: int | None = None  # token index of the number word


@dataclass(frozen=True)
class Predicate:
    """'<subject> is [not] [size] [colour] [noun]', e.g. 'the circle is red', 'the red object is a circle'."""

    subject: Mention
    negated: bool
    colours: tuple[str, ...]
    sizes: tuple[str, ...]
    noun: str | None


@dataclass
class Sentence:
    """One sentence of an answer, tokenised, with its noun phrases, clauses and predicates."""

    text: str
    tokens: list[str]
    clause_of: list[int]  # clause index of each token
    mentions: list[Mention]
    predicates: list[Predicate]
    negated: bool  # a negation anywhere ("there is no red circle")
    hypothetical: bool  # "if ... were ... would": describes another scene, so counts and places are not checked

    def clause_negated(self, clause: int) -> bool:
        return any(is_negation(t) for t, c in zip(self.tokens, self.clause_of) if c == clause)

    def negated_at(self, token: int) -> bool:
        """Whether the clause holding token ``token`` has a negation ('..., and none of the others is')."""
        return self.clause_negated(self.clause_of[token])


def is_negation(token: str) -> bool:
    return token in _NEGATIONS or token.endswith("n't")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (on ., ! or ? followed by space, and on line breaks)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


class SentenceReader:
    """Reads one sentence into a :class:`Sentence`: tokens, clauses, noun phrases and predicates.

    ``surface`` maps a noun's written forms (as token tuples, singular and plural) to
    ``(noun, is_plural)``; ``colour_words`` are the words read as colours.
    """

    def __init__(self, surface: dict[tuple[str, ...], tuple[str, bool]], colour_words: set[str]) -> None:
        self.surface, self.colour_words = surface, colour_words

    def colour(self, token: str) -> str | None:
        return ("grey" if token == "gray" else token) if token in self.colour_words else None

    def mentions(self, tokens: list[str]) -> list[Mention]:
        mentions, i = [], 0
        while i < len(tokens):
            span, noun, is_plural = 0, None, False
            for n in (3, 2, 1):
                if tuple(tokens[i:i + n]) in self.surface:
                    span, (noun, is_plural) = n, self.surface[tuple(tokens[i:i + n])]
                    break
            if not span and tokens[i] in GENERIC_NOUNS:
                span, is_plural = 1, tokens[i].endswith("s")
            elif not span and tokens[i] in ("one", "ones") and i and (tokens[i - 1] in SIZE_WORDS or self.colour(tokens[i - 1])):
                span, is_plural = 1, tokens[i] == "ones"  # 'the red one'
            if not span:
                i += 1
                continue
            start, colour, size = i, None, None
            while start > 0 and (tokens[start - 1] in SIZE_WORDS or self.colour(tokens[start - 1])):
                start -= 1
                if tokens[start] in SIZE_WORDS:
                    size = size or SIZE_WORDS[tokens[start]]
                else:
                    colour = colour or self.colour(tokens[start])
            if mentions and start < mentions[-1].end:  # modifiers already used by the previous mention
                start = mentions[-1].end
            number = number_at = None
            before = tokens[start - 1] if start > 0 else ""
            if before in NUMBER_VALUES or before.isdigit():
                number, number_at = (NUMBER_VALUES[before] if before in NUMBER_VALUES else int(before)), start - 1
            mentions.append(Mention(start, i + span, noun, colour, size, is_plural, number, number_at))
            i += span
        return mentions

    def predicates(self, tokens: list[str], mentions: list[Mention]) -> list[Predicate]:
        predicates = []
        for m_index, m in enumerate(mentions):
            k = m.end
            if k >= len(tokens) or tokens[k] not in _COPULAS:
                continue
            negated = tokens[k].endswith("n't")
            k += 1
            if k < len(tokens) and tokens[k] == "not":
                negated, k = True, k + 1
            while k < len(tokens) and tokens[k] in _PREDICATE_FILLERS:
                k += 1
            colours, sizes, noun = [], [], None
            while k < len(tokens) and (tokens[k] in SIZE_WORDS or self.colour(tokens[k])):
                if tokens[k] in SIZE_WORDS:
                    sizes.append(SIZE_WORDS[tokens[k]])
                else:
                    colours.append(self.colour(tokens[k]))
                k += 1
            after = next((n for n in mentions if n.start <= k < n.end), None)  # 'is a circle', 'is a small circle'
            if after is not None and after.noun is not None:
                noun = after.noun
            if not (colours or sizes or noun):
                continue
            for subject in self.subjects(tokens, mentions, m_index):
                predicates.append(Predicate(subject, negated, tuple(colours), tuple(sizes), noun))
        return predicates

    @staticmethod
    def subjects(tokens: list[str], mentions: list[Mention], index: int) -> list[Mention]:
        """The subject before a verb, with what it is coordinated with: 'the circle and the square are small'.

        A coordination counts only if it opens its clause, so in 'the circle is left of the square and
        the triangle is small' the square is not a subject of 'is small'.
        """
        j = index
        while j > 0:
            gap = tokens[mentions[j - 1].end:mentions[j].start]
            if not (gap and set(gap) <= _SUBJECT_GLUE and ("and" in gap or ("," in gap and j < index))):
                break
            j -= 1
        if j < index:
            k = mentions[j].start - 1
            while k >= 0 and tokens[k] in _SUBJECT_GLUE - {"and", ","}:
                k -= 1
            if k >= 0 and tokens[k] not in CLAUSE_BREAKS - {"and"}:
                j = index  # e.g. '... left of the square and the triangle is small': the square is an object
        return mentions[j:index + 1]

    def read(self, text: str) -> Sentence:
        """Tokens, clauses, noun phrases and predicates of one sentence."""
        text = _LEADING_ANSWER.sub("", text.replace("\u2019", "'"))  # 'No, the circle ...': the 'no' answers the question
        tokens = TOKEN_PATTERN.findall(text.lower())
        clause_of, clause = [], 0
        for t in tokens:
            if t in CLAUSE_BREAKS:
                clause += 1
            clause_of.append(clause)
        mentions = self.mentions(tokens)
        return Sentence(
            text, tokens, clause_of, mentions, self.predicates(tokens, mentions),
            negated=any(is_negation(t) for t in tokens), hypothetical=any(t in _HYPOTHETICAL for t in tokens),
        )
