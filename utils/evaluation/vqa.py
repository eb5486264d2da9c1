"""Open-ended VQA accuracy exactly as the official VQA evaluation computes it (VQAv2, TextVQA, VizWiz).

Ten people answered each question. A prediction is right in proportion to how many of them gave
it, saturating at three:

    Acc(a) = mean over the 10 ways to leave one annotator out of  min(#{others who answered a} / 3, 1)

so an answer three or more annotators gave scores 1, one that two gave scores 0.6 (= (8 x 2/3 +
2 x 1/3)/10), and one that one gave scores 0.3. Before comparing, answers are normalised
(:func:`normalise`): punctuation removed, lower case, number words to digits ("two" -> "2"),
articles dropped ("a dog" -> "dog"), apostrophes restored ("dont" -> "don't").

Two quirks of the official code (GT-Vision-Lab/VQA, ``vqaEval.py``) are kept, because published
numbers include them:

- normalisation happens only when the ten answers are not all the same string: against ten
  identical "yes", a prediction of "Yes" or "yes." scores 0 (``always_normalise=True`` gives the
  behaviour of lmms-eval, which always normalises the prediction first);
- the period pattern ``(?!<=\\d)(\\.)(?!\\d)`` was meant as a look-behind but is a look-ahead, so it
  removes every period not followed by a digit, and ``re.UNICODE`` lands in ``sub``'s ``count``
  argument, so at most 32 periods go.

VizWiz uses the same formula; a question that cannot be answered from the photo has
"unanswerable" as its answer, which a model must say to score.
"""

from __future__ import annotations

import re
from typing import Sequence

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern, quirk included (see the module docstring)
DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
# The official table of apostrophe-less spellings (keys, lower case except four that can never match,
# since lookup happens after lower-casing) and the spelling they are restored to.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
UNANSWERABLE = "unanswerable"


def strip_punctuation(text: str) -> str:
    """The official ``processPunctuation``: each mark is deleted where it touches a space (or anywhere,
    if the text has a digit-comma-digit such as "1,000"), otherwise replaced by a space; then periods
    not followed by a digit go ("3.5" keeps its point)."""
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or DIGIT_COMMA.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD.sub("", out, 32)  # count=32: the official call passes re.UNICODE (= 32) there


def digits_and_articles(text: str) -> str:
    """The official ``processDigitArticle``: lower case, number words to digits, articles dropped,
    apostrophe-less contractions restored; words re-joined by single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalise(answer: str) -> str:
    """Both steps, after turning newlines and tabs into spaces and trimming the ends."""
    return digits_and_articles(strip_punctuation(_trim(answer)))


def _trim(answer: str) -> str:
    if not isinstance(answer, str):
        raise TypeError(f"an answer must be a string, got {type(answer).__name__}: {answer!r}")
    return answer.replace("\n", " ").replace("\t", " ").strip()


def accuracy(prediction: str, answers: Sequence[str], *, always_normalise: bool = False) -> float:
    """VQA accuracy of ``prediction`` against the annotators' ``answers`` (ten for VQAv2, TextVQA and VizWiz).

    Normalises both sides only when the answers differ from one another (the official rule), or
    always, with ``always_normalise``; then averages min(matches among the others / 3, 1) over the
    leave-one-annotator-out subsets.
    """
    if isinstance(answers, str) or len(answers) < 2:
        raise ValueError(f"VQA accuracy needs the list of every annotator's answer (ten in VQAv2), got {answers!r}")
    truth = [_trim(a) for a in answers]
    pred = _trim(prediction)
    if always_normalise:
        pred = normalise(pred)
    if len(set(truth)) > 1:
        truth = [normalise(a) for a in truth]
        pred = normalise(pred)
    per_subset = []
    for left_out in range(len(truth)):
        matches = sum(1 for i, a in enumerate(truth) if i != left_out and a == pred)
        per_subset.append(min(1.0, matches / 3))
    return sum(per_subset) / len(per_subset)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1 if the prediction is, character for character, the most common answer (VQAv2's
    "multiple_choice_answer"; ties go to the earliest), else 0: the naive score."""
    if isinstance(answers, str) or not answers:
        raise ValueError(f"exact_match needs the annotators' answers, got {answers!r}")
    majority = max(answers, key=lambda a: (answers.count(a), -answers.index(a)))
    return float(prediction == majority)
