"""LLaVA in miniature: the conversation format, the tiny model's parts, batching with masked labels, evaluation.

The pieces, in the order the chapter uses them:

- LLaVA-1.5's chat template ("USER: <image>\\n... ASSISTANT: ...</s>"); the special tokens are the
  tiny LM's (:mod:`utils.tiny_lm`);
- :func:`mask_labels`: -100 everywhere except the assistant's answers;
- :func:`tiny_llava_config` / :func:`build_tokenizer` / :func:`build_processor`: a real
  ``LlavaForConditionalGeneration`` with a 3-block CLIP tower and the 6-block tiny LM;
- :func:`encode_conversation` / :func:`collate`: token ids with the image expanded to one
  token per patch, exactly as ``LlavaProcessor`` expands it;
- :func:`answer_questions`, :func:`qa_accuracy` and :func:`pope`: batched greedy answers, their
  accuracy, and the POPE hallucination probe.

What came after the projector (CogVLM, SPHINX, tools) is in :mod:`utils.beyond_projector`.

Shapes ledger (see ``utils/__init__.py``): B batch, L tokens, N patches, D width, V vocabulary size.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from utils import runtime, tiny_lm
from utils.chat import check_user_text
from utils.shapes import COLOURS, SHAPES, Scene
from utils.tiny_lm import IGNORE_INDEX, IMAGE_TOKEN, SPECIAL_TOKENS

# --- the conversation format's strings (the special tokens are the tiny LM's, utils.tiny_lm) ----
USER, ASSISTANT = "USER:", " ASSISTANT:"  # the assistant marker starts with a space, as it follows the user's text
SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's suffix for short answers
CAPTION_PROMPT = "Write a short caption for the image."
RESERVED = (*SPECIAL_TOKENS, USER, ASSISTANT.strip())  # a question holding one of these would forge the format

# LLaVA-1.5's conversation format as a Jinja chat template. The image block renders as "<image>\n"
# when it opens a turn and as "\n<image>" when it follows the question.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if not loop.first %} {% endif %}USER: "
    "{% for block in message['content'] %}"
    "{% if block['type'] == 'image' %}{% if loop.first %}<image>\n{% else %}{{ '\\n' }}<image>{% endif %}"
    "{% else %}{{ block['text'] }}{% endif %}"
    "{% endfor %}"
    "{% else %}"
    " ASSISTANT: {% for block in message['content'] %}{{ block['text'] }}{% endfor %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


# --- messages -----------------------------------------------------------------------------------
def user_message(question: str, image: Any = None, *, image_first: bool = True) -> dict[str, Any]:
    """One user turn in chat-template form, with an image block before or after the question.

    ``image=None`` leaves an empty image block (the processor gets the pixels separately);
    ``image=False`` means no image in this turn.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"the question is empty ({question!r}); type a question about the image")
    check_user_text(question, "question", RESERVED)
    content: list[dict[str, Any]] = [{"type": "text", "text": question.strip()}]
    if image is not False:
        block = {"type": "image"} if image is None else {"type": "image", "image": image}
        content.insert(0 if image_first else 1, block)
    return {"role": "user", "content": content}


def assistant_message(answer: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


def qa_messages(turns: Sequence[tuple[str, str]], *, image_first: bool = True) -> list[dict[str, Any]]:
    """A conversation about one image: the image goes with the first question only."""
    if not turns:
        raise ValueError("a conversation needs at least one (question, answer) turn")
    messages = []
    for i, (question, answer) in enumerate(turns):
        messages.append(user_message(question, None if i == 0 else False, image_first=image_first))
        messages.append(assistant_message(answer))
    return messages


def image_after_question(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The same messages with the first turn's image block moved after its question."""
    out = [dict(m, content=list(m["content"])) for m in messages]
    if out and out[0]["role"] == "user":
        blocks = out[0]["content"]
        out[0]["content"] = [b for b in blocks if b["type"] != "image"] + [b for b in blocks if b["type"] == "image"]
    return out


def short_question(question: str) -> str:
    """A question with LLaVA-1.5's request for a one-word answer appended."""
    return f"{question.strip()}\n{SHORT_ANSWER}"


# --- the label mask -------------------------------------------------------------------------------
def mask_labels(input_ids: torch.Tensor, marker: Sequence[int], eos_id: int) -> torch.Tensor:
    """Labels for one tokenised conversation: the token id inside assistant answers, -100 elsewhere.

    An answer starts right after each occurrence of the whole ``marker`` (the ids of
    " ASSISTANT:") and runs up to and including the next ``eos_id``, or to the end of a cut
    sequence. The model shifts labels by one itself, so label i belongs to token i.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 1:
        raise ValueError("input_ids must be a 1-D tensor of token ids (one conversation)")
    marker = list(marker)
    if not marker:
        raise ValueError("the assistant marker is empty; pass the ids of ' ASSISTANT:'")
    ids = input_ids.tolist()
    labels = torch.full_like(input_ids, IGNORE_INDEX)  # (L,)
    i, m = 0, len(marker)
    while i <= len(ids) - m:
        if ids[i:i + m] != marker:
            i += 1
            continue
        j = i + m
        while j < len(ids):
            labels[j] = ids[j]
            j += 1
            if ids[j - 1] == eos_id:
                break
        i = j
    return labels


# --- the tiny model -------------------------------------------------------------------------------
def tokenizer_corpus(scenes: Sequence[Scene], records: Sequence[Mapping[str, Any]], *, qa_scenes: int = 3000,
                     repeats: int = 50) -> list[str]:
    """Every kind of text a ShapesWorld LLaVA reads, for :func:`build_tokenizer` to learn its merges from.

    Captions of ``scenes``, the questions and answers of the first ``qa_scenes`` of them, every turn
    of the instruction ``records``, and the fixed prompt words repeated ``repeats`` times.
    """
    turns = [t["value"] for r in records for t in r["conversations"]]
    fixed = [SHORT_ANSWER, CAPTION_PROMPT, "USER: ASSISTANT:", "in the image?"]
    return tiny_lm.tokenizer_corpus(scenes, "{q} {a}", turns, fixed, qa_scenes=qa_scenes, repeats=repeats)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """The tiny LM's byte-level BPE trained on ``texts``, with ``<image>`` as its image token and
    LLaVA-1.5's conversation format (:data:`CHAT_TEMPLATE`) as its chat template."""
    tokenizer = tiny_lm.build_tokenizer(texts, vocab_size, name_image_token=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llava_config(vision_config: Any, vocab_size: int, **text_overrides: Any):
    """LlavaConfig: the given CLIP vision config, the tiny LM named "llava", LLaVA-1.5's MLP projector."""
    from transformers import LlavaConfig

    text = tiny_lm.TinyLMConfig.named("llava", **text_overrides).to_llama(vocab_size)
    return LlavaConfig(vision_config=vision_config, text_config=text, image_token_index=SPECIAL_TOKENS.index(IMAGE_TOKEN),
                       projector_hidden_act="gelu", vision_feature_select_strategy="default",
                       vision_feature_layer=-2, multimodal_projector_bias=True, tie_word_embeddings=True)


def build_processor(image_processor: Any, tokenizer: Any, patch_size: int):
    """LlavaProcessor that expands ``<image>`` to one token per patch ([CLS] is dropped: strategy 'default')."""
    from transformers import LlavaProcessor

    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN)


def four_bit_config() -> Any:
    """How full mode fits LLaVA-1.5-7B on a T4: the language model's layers in 4 bits (bitsandbytes NF4,
    computing in float16); the vision tower, projector and lm_head stay float16.

    In float16 the weights alone take 13.2 GiB of the T4's 15 GB, which leaves no room to run the
    model; with the 32 blocks in NF4 the whole model takes 4.5 GiB (``utils.t4plan.weight_bytes``).
    NF4 stores each weight as one of 16 levels placed at the quantiles of a normal distribution,
    with one float32 scale per 64 weights.
    """
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16,
                              # module paths from the top (transformers matches a name from its start or its end)
                              llm_int8_skip_modules=["model.vision_tower", "model.multi_modal_projector", "lm_head"])


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters of ``module``, counting a 4-bit weight (bitsandbytes packs two per byte) as the values it holds."""
    return sum(_values(p) for p in module.parameters())


def num_image_tokens(config: Any) -> int:
    """How many positions one image fills in the LM's input: patches, plus [CLS] unless it is dropped."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches + (0 if config.vision_feature_select_strategy == "default" else 1)


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_stage(model: Any, stage: int) -> dict[str, int]:
    """Freeze what a LLaVA training stage keeps fixed; returns the trainable count of each part.

    Stage 1 trains the projector only; stage 2 the projector and the language model. The
    vision tower stays frozen in both.

    A model loaded in 4 bits (full mode on a T4) has language-model weights that cannot take
    gradients at all: they are marked frozen and counted as the stage would train them. (Training
    on such a model needs small float16 adapters beside the 4-bit weights, as QLoRA does.)
    """
    if stage not in (1, 2):
        raise ValueError(f"LLaVA has two training stages, 1 and 2; got {stage!r}")
    parts = {"vision tower": model.model.vision_tower, "projector": model.model.multi_modal_projector,
             "language model": model.model.language_model}
    trained: dict[int, torch.nn.Parameter] = {}
    for name, part in parts.items():
        train = name == "projector" or (stage == 2 and name == "language model")
        for p in part.parameters():
            p.requires_grad_(train and p.is_floating_point())
            if train:
                trained[id(p)] = p
    for p in model.lm_head.parameters():  # tied to the input embeddings in the tiny model
        p.requires_grad_(stage == 2 and p.is_floating_point())
        if stage == 2:
            trained[id(p)] = p
    counts = {name: sum(_values(p) for p in part.parameters() if id(p) in trained) for name, part in parts.items()}
    counts["total"] = sum(_values(p) for p in trained.values())
    return counts


def _values(p: torch.nn.Parameter) -> int:
    return p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)


# --- batching ---------------------------------------------------------------------------------------
@dataclass
class Encoded:
    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,)


def encode_conversation(tokenizer: Any, messages: Sequence[Mapping[str, Any]], image_tokens: int,
                        max_length: int | None = None) -> Encoded:
    """Render ``messages`` with the chat template, tokenise, expand ``<image>`` and mask the labels.

    The result matches what ``LlavaProcessor`` produces for the same text (tested), so a model
    trained on it sees at inference time exactly the layout it was trained on.
    """
    # llava-hf's tokenizer has no chat template of its own (its processor has): fall back to ours, the same format.
    text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         chat_template=getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    expanded: list[int] = []
    for t in ids:
        expanded.extend([t] * image_tokens if t == image_id else [t])
    input_ids = torch.tensor(expanded[:max_length] if max_length else expanded)  # (L,): N image tokens in place of one
    marker = tokenizer(ASSISTANT, add_special_tokens=False)["input_ids"]
    return Encoded(input_ids, mask_labels(input_ids, marker, tokenizer.eos_token_id))  # labels (L,)


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids and attention_mask with the pad id and 0, labels with -100."""
    length = max(len(it.input_ids) for it in items)
    input_ids = torch.full((len(items), length), pad_id)  # (B, L)
    labels = torch.full((len(items), length), IGNORE_INDEX)  # (B, L)
    attention = torch.zeros((len(items), length), dtype=torch.long)  # (B, L): 1 on real tokens
    for row, it in enumerate(items):
        n = len(it.input_ids)
        input_ids[row, :n], labels[row, :n], attention[row, :n] = it.input_ids, it.labels, 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


# --- answering and evaluation -------------------------------------------------------------------
def answer_questions(model: Any, processor: Any, images: Sequence[Any], questions: Sequence[str], *,
                     image_first: bool | None = None, max_new_tokens: int = 6, batch_size: int | None = None) -> list[str]:
    """Greedy answers, one per (image, question) pair, through the processor and ``generate``.

    ``image_first`` defaults to the model's own habit (``config.image_first``, True for LLaVA-1.5).
    ``batch_size`` defaults to 64 in tiny mode, and in full mode to the largest batch the T4 plan
    fits (:func:`full_mode_batch`).
    Images may be anything ``utils.images.load_image`` reads (PIL, path, URL, array); an
    unreadable one raises ``ImageLoadError`` naming it.
    """
    from utils.images import load_image

    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, one per image; wrap a single question in a list")
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions: pass one question per image")
    if image_first is None:
        image_first = getattr(model.config, "image_first", True)
    if batch_size is None:
        batch_size = full_mode_batch(model.config, max_new_tokens) if runtime.MODE == "full" else 64
    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    answers: list[str] = []
    try:
        starts = range(0, len(questions), batch_size)
        # Full mode on a T4 takes seconds per batch: show a bar when there are several.
        for start in tqdm(starts, desc="LLaVA", unit="batch", disable=runtime.MODE == "tiny" or len(starts) < 2):
            chunk_q = questions[start:start + batch_size]
            chunk_i = [load_image(image) for image in images[start:start + batch_size]]
            prompts = [processor.apply_chat_template([user_message(q, image_first=image_first)],  # refuses blank questions
                                                     add_generation_prompt=True) for q in chunk_q]
            inputs = processor(images=chunk_i, text=prompts, return_tensors="pt", padding=True).to(model.device)  # (B, L)
            context = model.config.text_config.max_position_embeddings
            if inputs["input_ids"].shape[1] + max_new_tokens > context:
                raise ValueError(f"a prompt of {inputs['input_ids'].shape[1]} tokens (the image's included) and "
                                 f"{max_new_tokens} new ones do not fit the language model's {context} positions: "
                                 "shorten the question")
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # (B, C, H, W)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)  # (B, L + new tokens)
            new = out[:, inputs["input_ids"].shape[1]:]  # (B, new tokens)
            answers += [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = old_side
    return answers


QUESTION_TOKENS = 64  # room for the question and the chat format in a full-mode batch's prompts


def full_mode_batch(config: Any, max_new_tokens: int) -> int:
    """How many questions full mode asks LLaVA-1.5 at once: the largest batch whose KV cache and
    activations, next to the weights, stay within the T4 plan's 13 GiB (``utils.t4plan``)."""
    from utils import t4plan

    side = config.vision_config.image_size
    return t4plan.largest_batch("llava", num_image_tokens(config) + QUESTION_TOKENS, max_new_tokens, [3, side, side])


def first_word(answer: str) -> str:
    words = answer.lower().replace(".", " ").replace(",", " ").split()
    return words[0] if words else ""


def qa_accuracy(model: Any, processor: Any, scenes: Sequence[Scene], **kwargs: Any) -> dict[str, float]:
    """Accuracy of one-word answers to every question of ``scenes``: overall and by kind."""
    images, questions, truth = [], [], []
    for scene in scenes:
        for question in scene.questions:
            images.append(scene.render())
            questions.append(short_question(question.text))
            truth.append((question.kind, question.answer))
    answers = answer_questions(model, processor, images, questions, **kwargs)
    right: dict[str, list[bool]] = {}
    for (kind, a), got in zip(truth, answers):
        right.setdefault(kind, []).append(first_word(got) == a)
        right.setdefault("all", []).append(first_word(got) == a)
    return {k: sum(v) / len(v) for k, v in right.items()}


POPE_SETTINGS = ("random", "popular", "adversarial")


def object_counts(scenes: Sequence[Scene]) -> Counter:
    """How often each (colour, shape) pair appears in ``scenes``: POPE's "popular" negatives are the
    most frequent objects of the training data."""
    return Counter((o.colour, o.shape) for s in scenes for o in s.objects)


def _negatives(scene: Scene, setting: str, counts: Counter | None, rng: random.Random, k: int) -> list[tuple[str, str]]:
    """The k absent (colour, shape) pairs a POPE setting asks about."""
    absent = [(c, s) for c in COLOURS for s in SHAPES if not scene.has(c, s)]
    if setting == "random":
        return rng.sample(absent, k)
    rng.shuffle(absent)  # ties broken at random
    if setting == "popular":  # the most frequent objects of the training data first
        return sorted(absent, key=lambda pair: -counts[pair])[:k]
    # adversarial: ShapesWorld's co-occurring objects are the attributes already in the picture, so a
    # colour seen on one object with a shape seen on another comes first (a binding swap), then
    # pairs sharing a colour or a shape with an object, then the rest
    colours, shapes = {o.colour for o in scene.objects}, {o.shape for o in scene.objects}
    return sorted(absent, key=lambda pair: -((pair[0] in colours) + (pair[1] in shapes)))[:k]


def pope_questions(scenes: Sequence[Scene], per_scene: int = 2, seed: int = 0, setting: str = "random",
                   counts: Counter | None = None) -> list[tuple[int, str, str]]:
    """Balanced yes/no probes: per scene, ``per_scene // 2`` present and as many absent colour-shape pairs.

    Returns ``(scene index, question, "yes" | "no")`` triples with POPE's wording, "Is there a
    {colour} {shape} in the image?". The absent pairs follow POPE's ``setting``: "random";
    "popular" (the pairs most frequent in the training scenes, whose :func:`object_counts` must be
    given); "adversarial" (the pairs made of attributes present in the picture, see :func:`_negatives`).
    """
    if setting not in POPE_SETTINGS:
        raise ValueError(f"unknown POPE setting {setting!r}; choose one of {', '.join(POPE_SETTINGS)}")
    if setting == "popular" and not counts:
        raise ValueError("the popular setting needs the training scenes' object_counts(...)")
    rng = random.Random(seed)
    out = []
    for i, scene in enumerate(scenes):
        present = [(o.colour, o.shape) for o in scene.objects]
        k = min(per_scene // 2, len(present))
        chosen = rng.sample(present, k)
        negatives = _negatives(scene, setting, counts, rng, k)
        for (c, s), truth in [(p, "yes") for p in chosen] + [(a, "no") for a in negatives]:
            out.append((i, f"Is there a {c} {s} in the image?", truth))
    return out


@dataclass
class PopeScores:
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    n: int


def pope_scores(truth: Sequence[str], predicted: Sequence[str]) -> PopeScores:
    """POPE's five numbers with "yes" as the positive class; an answer that is not yes counts as no."""
    if len(truth) != len(predicted) or not truth:
        raise ValueError("pope_scores needs as many predictions as answers, and at least one")
    said_yes = [first_word(p) == "yes" for p in predicted]
    is_yes = [t == "yes" for t in truth]
    tp = sum(a and b for a, b in zip(said_yes, is_yes))
    fp = sum(a and not b for a, b in zip(said_yes, is_yes))
    fn = sum(b and not a for a, b in zip(said_yes, is_yes))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(a == b for a, b in zip(said_yes, is_yes)) / len(truth)
    return PopeScores(accuracy, precision, recall, f1, sum(said_yes) / len(truth), len(truth))


def pope(model: Any, processor: Any, scenes: Sequence[Scene], per_scene: int = 2, seed: int = 0,
         setting: str = "random", counts: Counter | None = None, **kwargs: Any) -> PopeScores:
    """Ask the POPE probes of :func:`pope_questions` (with the short-answer suffix) and score them."""
    probes = pope_questions(scenes, per_scene, seed, setting, counts)
    answers = answer_questions(model, processor, [scenes[i].render() for i, _, _ in probes],
                               [short_question(q) for _, q, _ in probes], **kwargs)
    return pope_scores([t for _, _, t in probes], answers)


# --- long answers, fact-checked ---------------------------------------------------------------------
SENTENCE_WORDS = 3  # the shortest answer fact_check_answers counts as right: "It is red."


@dataclass
class InstructionScores:
    """How one response type's answers fare against the fact checker (utils.instruct.FactChecker)."""

    right: float  # share of answers of SENTENCE_WORDS or more with at least one checked claim and none contradicted
    contradicted: float  # share of answers with at least one claim the boxes contradict
    claims: float  # checked claims per answer
    words: float  # words per answer
    n: int


def instruction_prompts(scenes: Sequence[Scene], seed: int = 0) -> list[tuple[int, str, str, str]]:
    """``(scene index, response type, question, reference answer)``: the first turn of a rule-written
    record per scene, the types (conversation, detail, complex reasoning) taking turns as in the
    training data."""
    from utils.instruct import ImageContext, generate_dataset, record_turns, record_type

    contexts = [ImageContext.from_scene(scene) for scene in scenes]
    records, _ = generate_dataset(contexts, seed=seed, cycle_types=True)
    index = {context.image: i for i, context in enumerate(contexts)}
    return [(index[r["image"]], record_type(r), *record_turns(r)[0]) for r in records]


def fact_check(scene: Scene, question: str, answer: str) -> tuple[list[str], int]:
    """What the fact checker finds false in one answer about ``scene``, and how many claims it checked.

    The 'leak' check (mentions of boxes or captions) reads every sentence, so it is not counted as
    a claim; a leak is still reported as a problem.
    """
    from utils.instruct import FactChecker, ImageContext, make_record

    checker = FactChecker(ImageContext.from_scene(scene))
    problems = checker.check_record(make_record("answer", "scene.png", [(question, answer)]))
    return problems, sum(n for check, n in checker.checked.items() if check != "leak")


def fact_check_answers(scenes: Sequence[Scene], prompts: Sequence[tuple[int, str, str, str]],
                       answers: Sequence[str]) -> dict[str, InstructionScores]:
    """Score one answer per prompt of :func:`instruction_prompts` with :func:`fact_check`, per response type.

    An answer counts as right when it is a sentence of at least :data:`SENTENCE_WORDS` words in
    which the fact checker verified at least one claim (a colour, a count framed as a total, a
    relation, a size ...) and found none the boxes contradict. The word floor matters: the checker
    reads a bare "red" as a colour claim, so without it a model answering every prompt with one
    true colour would score well. It checks facts, not grammar.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: pass one answer per prompt")
    rows: dict[str, list[tuple[int, int, int, int]]] = {}
    for (i, kind, question, _), answer in zip(prompts, answers):
        problems, claims = fact_check(scenes[i], question, answer)
        words = len(answer.split())
        rows.setdefault(kind, []).append((int(claims > 0 and not problems and words >= SENTENCE_WORDS),
                                          int(bool(problems)), claims, words))
    return {kind: InstructionScores(*(sum(r[k] for r in rs) / len(rs) for k in range(4)), len(rs))
            for kind, rs in rows.items()}
