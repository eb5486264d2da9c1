"""Visual instruction data (chapter 4): LLaVA's recipe for turning annotations into conversations.

LLaVA (Liu et al. 2023, arXiv:2304.08485) never showed its data-writing language model an
image. It showed what is *known* about the image -- a few captions and a list of labelled
bounding boxes -- and asked for three kinds of response: a multi-turn conversation, a detailed
description, and a complex-reasoning question with its answer. This module rebuilds that
pipeline for ShapesWorld scenes and for any COCO-style annotation, twice over:

1. **rule-based** (:func:`rule_based_turns`): the three response types written from the boxes
   alone, with varied templates, so every sentence is grounded and everything runs offline;
2. **LLM-prompted** (:func:`build_messages`, :func:`parse_reply`, :func:`generate_with_llm`):
   a system prompt, few-shot examples and the context as text go to any
   ``chat_fn(messages) -> str``; the reply is parsed back into turns.

Whichever route wrote it, a record is validated (:func:`validate_record`) and fact-checked
against the boxes (:class:`FactChecker`) before it enters the data set, and a rejected record
is kept with its reasons (:func:`generate_dataset`), so you can see *why* generated data gets
thrown away. InstructBLIP's cheaper route -- wrapping existing VQA and caption pairs in
instruction templates -- is here too (:data:`TASK_TEMPLATES`, :func:`from_vqa`,
:func:`from_caption`).

Record format (LLaVA's JSON)::

    {"id": "shapesworld_0_train_3-conversation",
     "image": "shapesworld_0_train_3.png",
     "conversations": [{"from": "human", "value": "<image>\\nHow many shapes are there?"},
                       {"from": "gpt", "value": "There are two shapes in the image."},
                       ...]}

``"<image>"`` appears exactly once, at the very start of the first human turn and followed by
a newline. LLaVA's released data puts it before or after the first question at random; we
always put it first, so the model always reads the image before the question.
:func:`validate_record` accepts both of LLaVA's placements, so released data validates too.

Boxes are ``(x0, y0, x1, y1)`` normalised to [0, 1], x growing to the right and y downwards
(image coordinates). K below is the number of boxes in a context.

The package reads bottom to top: ``context`` (what is known about an image, and the words for
it), ``records`` (the JSON format and its validation), ``sentences`` and ``facts`` (reading a
generated sentence and checking its claims), the two writers ``rules`` and ``llm``,
``templates`` (InstructBLIP's route), and ``dataset`` on top. Everything public is importable
from ``utils.instruct`` itself.
"""

from __future__ import annotations

from utils.tiny_lm import IMAGE_TOKEN
from utils.instruct.context import (
    CLEAR_MARGIN, COLOUR_WORDS, GENERIC_NOUNS, NUMBER_NAMES, NUMBER_VALUES, POSITION_TOLERANCE, SHAPE_WORDS,
    SIZE_TOLERANCE, SIZE_WORDS, SMALL_AREA, Box, ImageContext, LabelledBox, article, box_relation,
    image_stem, join_words, number_word, parse_label, plural,
)
from utils.instruct.records import (
    GPT, HUMAN, RESPONSE_TYPES, Generator, Turn, check_response_type, make_record, record_turns, record_type,
    strip_image, to_chat_messages, validate_dataset, validate_record,
)
from utils.instruct.sentences import (
    CLAUSE_BREAKS, TOKEN_PATTERN, Mention, Predicate, Sentence, SentenceReader, is_negation, split_sentences,
)
from utils.instruct.facts import (
    RELATION_PHRASES, SUPERLATIVES, FactChecker, check_facts,
)
from utils.instruct.rules import (
    DETAIL_INSTRUCTIONS, rule_based_turns,
)
from utils.instruct.llm import (
    EXAMPLE_REPLIES, EXAMPLE_SCENE, FEW_SHOT_SCENES, FEW_SHOT_SEED, SYSTEM_PROMPT, TASK_PROMPTS, ChatFn,
    ReplayChat, ReplyFormatError, build_messages, few_shot_contexts, format_reply, generate_with_llm,
    llm_generator, parse_reply, render_context,
)
from utils.instruct.templates import (
    TASK_TEMPLATES, from_caption, from_vqa,
)
from utils.instruct.dataset import (
    DatasetStats, dataset_stats, generate_dataset,
)
