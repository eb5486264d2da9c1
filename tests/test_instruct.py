"""LLaVA-style instruction data: grounded generation, validation, fact checking, LLM prompting and parsing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from utils import instruct
from utils.instruct import (
    EXAMPLE_REPLIES,
    EXAMPLE_SCENE,
    IMAGE_TOKEN,
    RESPONSE_TYPES,
    SHAPE_WORDS,
    TASK_TEMPLATES,
    FactChecker,
    ImageContext,
    ReplayChat,
    ReplyFormatError,
    box_relation,
    build_messages,
    check_facts,
    dataset_stats,
    format_reply,
    from_caption,
    from_vqa,
    generate_dataset,
    generate_with_llm,
    llm_generator,
    make_record,
    parse_reply,
    record_turns,
    record_type,
    render_context,
    rule_based_turns,
    to_chat_messages,
    validate_dataset,
    validate_record,
)
from utils.shapes import COLOURS, SHAPES, Scene, make_scene, relation

OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def contexts() -> list[ImageContext]:
    return [ImageContext.from_scene(make_scene(i, seed=21)) for i in range(300)]


@pytest.fixture(scope="module")
def dataset(contexts: list[ImageContext]) -> tuple[list[dict], list]:
    return generate_dataset(contexts, RESPONSE_TYPES, seed=4)


def example_context() -> ImageContext:
    return ImageContext.from_scene(make_scene(*EXAMPLE_SCENE))


def with_answer(record: dict, answer: str) -> dict:
    """A copy of ``record`` whose first gpt answer is replaced by ``answer``."""
    conversations = [dict(turn) for turn in record["conversations"]]
    conversations[1]["value"] = answer
    return {**record, "conversations": conversations}


def categories(problems: list[str]) -> set[str]:
    return {p.split(":", 1)[0] for p in problems}


# --- the rule-based generator --------------------------------------------------------------------

def test_every_generated_record_validates_and_passes_the_fact_checker(contexts, dataset) -> None:
    records, rejected = dataset
    assert rejected == []
    assert len(records) == 300 * 3
    assert validate_dataset(records) == []
    assert Counter(record_type(r) for r in records) == {t: 300 for t in RESPONSE_TYPES}
    by_image = {c.image: c for c in contexts}
    checked: Counter[str] = Counter()
    for record in records:
        checker = FactChecker(by_image[record["image"]])
        assert checker.check_record(record) == [], record
        checked += checker.checked
        assert record["conversations"][0]["value"].startswith(IMAGE_TOKEN + "\n")
    # The checker really verified claims of every kind, so "no problems" is not vacuous.
    for kind in ("colour", "shape", "count", "relation", "size", "existence"):
        assert checked[kind] >= 50, (kind, checked)


def test_generated_records_have_the_shape_of_each_response_type(dataset) -> None:
    records, _ = dataset
    for record in records:
        turns = record_turns(record)
        kind = record_type(record)
        if kind == "conversation":
            assert 3 <= len(turns) <= 5
            assert len({q for q, _ in turns}) == len(turns)  # no question asked twice
        else:
            assert len(turns) == 1
        if kind == "detail":
            assert turns[0][0] in instruct.DETAIL_INSTRUCTIONS and len(turns[0][1].split()) >= 15
    # Templates vary: many distinct first questions and detail openings.
    assert len({record_turns(r)[0][0] for r in records if record_type(r) == "conversation"}) >= 20
    assert len({record_turns(r)[0][0] for r in records if record_type(r) == "complex_reasoning"}) >= 50


def test_a_hypothetical_move_never_describes_the_current_layout() -> None:
    import re

    from utils.instruct import rules

    asked = 0
    for i in range(300):
        context = ImageContext.from_scene(make_scene(i, seed=5))
        facts = rules._Facts(context, random.Random(i))
        turn = rules._reason_move(facts)
        if turn is None:
            continue
        match = re.match(r"If the (.+) were moved (to the right of|to the left of) the (.+), which", turn[0])
        assert match, turn[0]
        by_label = {o.label: o for o in context.objects}
        mover, target = by_label[match.group(1)], by_label[match.group(3)]
        if match.group(2) == "to the right of":
            assert mover.cx < target.cx, turn[0]  # it is left of the target now
        else:
            assert mover.cx > target.cx, turn[0]
        asked += 1
    assert asked > 100


def test_box_relations_and_sizes_agree_with_shapesworld() -> None:
    for i in range(200):
        scene = make_scene(i, seed=8)
        context = ImageContext.from_scene(scene)
        for obj, box in zip(scene.objects, context.objects):
            assert box.size == obj.size and box.colour == obj.colour and box.noun == obj.shape
        for a, box_a in zip(scene.objects, context.objects):
            for b, box_b in zip(scene.objects, context.objects):
                if a is not b:
                    assert box_relation(box_a.box, box_b.box) == relation(a, b)


def test_same_seed_same_records_in_any_order(contexts) -> None:
    first, _ = generate_dataset(contexts[:40], seed=7)
    again, _ = generate_dataset(contexts[:40], seed=7)
    backwards, _ = generate_dataset(contexts[:40][::-1], seed=7)
    other, _ = generate_dataset(contexts[:40], seed=8)
    assert first == again
    assert sorted(first, key=lambda r: r["id"]) == sorted(backwards, key=lambda r: r["id"])
    assert first != other


def test_cycled_types_give_one_record_per_context(contexts) -> None:
    records, rejected = generate_dataset(contexts[:30], seed=0, cycle_types=True)
    assert not rejected and len(records) == 30
    assert [record_type(r) for r in records] == [RESPONSE_TYPES[i % 3] for i in range(30)]


def test_rule_based_generator_works_on_a_coco_context() -> None:
    context = coco_context()
    records, rejected = generate_dataset([context], seed=3)
    assert rejected == [] and len(records) == 3
    answers = " ".join(a for r in records for _, a in record_turns(r))
    assert "car" not in answers  # a category of the file with no box in this image


# --- the fact checker catches planted mistakes ---------------------------------------------------

def planted(scene_index: int) -> tuple[ImageContext, dict[str, str], dict[str, str]]:
    """For one scene: wrong statements by category, and true statements of the same forms."""
    scene = make_scene(scene_index, seed=31, min_objects=2)
    context = ImageContext.from_scene(scene)
    a, b = scene.objects[0], scene.objects[1]
    n = len(scene.objects)
    absent_colour = next(c for c in COLOURS if all(o.colour != c for o in scene.objects))
    invented = next(s for s in SHAPE_WORDS if all(o.shape != s for o in scene.objects))
    flipped = {"small": "large", "large": "small"}
    rel = relation(a, b)
    wrong = {
        "colour": f"The {a.shape} is {absent_colour}.",
        "count": f"There are {n + 1} shapes in the image.",
        "count words": f"I can see {instruct.number_word(n - 1)} shapes in the picture.",
        "relation": f"The {a.colour} {a.shape} is {OPPOSITE[rel]} the {b.colour} {b.shape}.",
        "shape": f"Next to the {a.shape} there is a {invented}.",
        "size": f"The {a.colour} {a.shape} is {flipped[a.size]}.",
        "existence": f"There is no {a.colour} {a.shape} in the image.",
    }
    right = {
        "colour": f"The {a.shape} is {a.colour}.",
        "count": f"There are {n} shapes in the image.",
        "count words": f"I can see {instruct.number_word(n)} shapes in the picture.",
        "relation": f"The {a.colour} {a.shape} is {rel} the {b.colour} {b.shape}.",
        "shape": f"Next to the {a.shape} there is a {b.shape}.",
        "size": f"The {a.colour} {a.shape} is {a.size}.",
        "existence": f"There is no {absent_colour} {a.shape} in the image.",
    }
    return context, wrong, right


@pytest.mark.parametrize("scene_index", range(25))
def test_planted_wrong_answers_are_caught_and_true_ones_are_not(scene_index: int) -> None:
    context, wrong, right = planted(scene_index)
    record = generate_dataset([context], ["conversation"], seed=0)[0][0]
    for kind, sentence in wrong.items():
        problems = check_facts(with_answer(record, sentence), context)
        assert kind.split()[0] in categories(problems), (sentence, problems)
    for kind, sentence in right.items():
        assert check_facts(with_answer(record, sentence), context) == [], sentence


def test_hallucinated_reply_is_flagged_for_each_planted_error() -> None:
    context = example_context()
    kind, reply = EXAMPLE_REPLIES["conversation/hallucinated"]
    problems = check_facts(make_record("x", context.image, parse_reply(reply, kind)), context)
    assert {"count", "colour", "shape", "relation"} <= categories(problems)
    assert any("star" in p for p in problems) and any("blue" in p for p in problems)


def test_checker_reads_negations_hypotheticals_and_leaks() -> None:
    context = example_context()  # a large green square to the left of a small purple triangle
    checker = FactChecker(context)
    assert checker.check_text("No, there is no red circle in the picture.") == []
    assert checker.check_text("The square is not to the right of the triangle.") == []
    assert categories(checker.check_text("The square is not to the left of the triangle.")) == {"relation"}
    # A hypothetical describes another scene: its positions are not checked, its vocabulary is.
    assert checker.check_text("If the square were moved to the right of the triangle, it would be rightmost.") == []
    assert categories(checker.check_text("If a star were added, it would be on the left.")) == {"shape"}
    # Negation is read per clause: the first clause below still makes claims.
    assert categories(checker.check_text("The red square is large, and none of the other shapes is larger.")) == {"colour"}
    assert categories(checker.check_text("The square is large, not small.")) == set()
    # An aside after a noun phrase is about that noun phrase.
    assert categories(checker.check_text("The triangle, to the left of the square, is small.")) == {"relation"}
    leak = checker.check_text("The caption says there is a square at [0.14, 0.33].")
    assert categories(leak) == {"leak"}


def test_checker_can_be_extended_with_a_new_check() -> None:
    class RegionChecker(FactChecker):
        CHECKS = FactChecker.CHECKS + ("regions",)

        def check_regions(self, sentence: instruct.Sentence) -> list[str]:
            obj = self._one(sentence.mentions[0]) if sentence.mentions else None
            if obj is not None and "bottom" in sentence.tokens and obj.cy < 0.5:
                return [f"region: the {obj.label} is in the top half"]
            return []

    context = ImageContext("a.png", ["a red circle near the top"], [("red circle", (0.1, 0.05, 0.3, 0.25))])
    assert categories(RegionChecker(context).check_text("The red circle is near the bottom.")) == {"region"}
    assert RegionChecker(context).check_text("The red circle is near the top.") == []
    assert FactChecker(context).check_text("The red circle is near the bottom.") == []  # the base class has no such check

    class Broken(FactChecker):
        CHECKS = ("nonsense",)

    with pytest.raises(AttributeError, match="check_nonsense"):
        Broken(context).check_text("A square.")


# --- the LLM route -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in EXAMPLE_REPLIES if n.endswith(("/good", "/markdown"))])
def test_stored_good_replies_parse_and_pass_the_checker(name: str) -> None:
    kind, reply = EXAMPLE_REPLIES[name]
    context = example_context()
    record = generate_with_llm(context, kind, ReplayChat([reply]), seed=1)
    assert validate_record(record) == []
    assert check_facts(record, context) == []
    turns = record_turns(record)
    assert len(turns) == {"conversation": reply.count("Question"), "detail": 1, "complex_reasoning": 1}[kind]
    assert all(q and a and "Question" not in a and "**" not in a for q, a in turns)


def test_markdown_reply_keeps_multi_line_answers_and_drops_the_preamble() -> None:
    turns = parse_reply(EXAMPLE_REPLIES["conversation/markdown"][1], "conversation")
    assert turns[0] == ("Which shape is larger?", "The green square is larger than the purple triangle.")
    assert turns[1][1].endswith("green square,\nand it is small.")


@pytest.mark.parametrize("name, message", [
    ("malformed/no-labels", "found no line starting with 'Question:'"),
    ("malformed/missing-answer", "the last 'Question:' has no 'Answer:'"),
    ("malformed/answer-first", "'Answer:' with no 'Question:' before it"),
    ("malformed/two-questions", "exactly one question and one answer"),
    ("malformed/detail-as-qa", "expected one descriptive paragraph"),
    ("malformed/empty", "the reply is empty"),
])
def test_malformed_replies_raise_with_what_was_expected(name: str, message: str) -> None:
    kind, reply = EXAMPLE_REPLIES[name]
    with pytest.raises(ReplyFormatError, match=message):
        parse_reply(reply, kind)


def test_parser_rejects_the_image_token_and_short_details() -> None:
    with pytest.raises(ReplyFormatError, match="<image>"):
        parse_reply("Question: What is it?\nAnswer: <image> a square", "complex_reasoning")
    with pytest.raises(ReplyFormatError, match="at least 10 words"):
        parse_reply("A green square.", "detail")
    with pytest.raises(ReplyFormatError, match="at least two exchanges"):
        parse_reply("Question: What is it?\nAnswer: A square.", "conversation")


@pytest.mark.parametrize("kind", RESPONSE_TYPES)
def test_format_and_parse_are_inverses_on_generated_turns(contexts, kind: str) -> None:
    for i, context in enumerate(contexts[:40]):
        turns = rule_based_turns(context, kind, random.Random(i))
        instruction = turns[0][0] if kind == "detail" else None
        assert parse_reply(format_reply(turns, kind), kind, instruction=instruction) == turns


def test_messages_hold_system_prompt_examples_and_the_rendered_context() -> None:
    context = example_context()
    messages = build_messages(context, "conversation", shots=2)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "never mention" in messages[0]["content"].lower() and "Question:" in messages[0]["content"]
    assert messages[-1]["content"] == render_context(context)
    for example, reply in zip(messages[1:-1:2], messages[2:-1:2]):
        assert example["content"] != messages[-1]["content"]
        assert len(parse_reply(reply["content"], "conversation")) >= 3  # the examples obey the requested format
    assert [m["role"] for m in build_messages(context, "detail", shots=0)] == ["system", "user"]


def test_context_is_rendered_as_caption_lines_then_box_lines() -> None:
    context = ImageContext("a.png", ["a red circle", "one shape"], [("red circle", (0.1, 0.25, 0.3333333, 0.5))])
    assert render_context(context) == "a red circle\none shape\n\nred circle: [0.100, 0.250, 0.333, 0.500]"
    assert render_context(context, decimals=2).endswith("[0.10, 0.25, 0.33, 0.50]")


def test_llm_generator_feeds_the_dataset_and_its_rejections(contexts) -> None:
    replies = [EXAMPLE_REPLIES[n][1] for n in ("conversation/good", "conversation/hallucinated", "malformed/no-labels")]
    chat = ReplayChat(replies)
    context = example_context()
    records, rejected = generate_dataset([context] * 3, ["conversation"], seed=0, generator=llm_generator(chat))
    assert len(chat.calls) == 3 and chat.calls[0][-1]["content"] == render_context(context)
    assert len(records) == 1 and len(rejected) == 2
    assert validate_dataset(records) == []
    (bad_record, bad_reasons), (bad_id, format_reasons) = rejected
    assert {"count", "colour", "shape", "relation"} <= categories(bad_reasons)
    assert isinstance(bad_id, str) and categories(format_reasons) == {"format"}
    assert len({records[0]["id"], bad_record["id"], bad_id}) == 3  # repeated images still get distinct ids
    with pytest.raises(RuntimeError, match="ran out"):
        chat([])


# --- records, conversion, InstructBLIP's templates -----------------------------------------------

def test_validate_record_lists_each_schema_problem() -> None:
    good = make_record("a-detail", "a.png", [("Describe it.", "A red circle."), ("More?", "It is small.")])
    assert validate_record(good) == []
    after = {**good, "conversations": [{"from": "human", "value": "Describe it.\n<image>"}, *good["conversations"][1:]]}
    assert validate_record(after) == []  # LLaVA's other placement
    cases = {
        "keys must be": {k: v for k, v in good.items() if k != "image"},
        "id must be a non-empty string": {**good, "id": ""},
        "expected 'human'": {**good, "conversations": good["conversations"][1:] + good["conversations"][:1]},
        "no gpt answer": {**good, "conversations": good["conversations"][:3]},
        "empty value": with_answer(good, "  "),
        "exactly once": {**good, "conversations": [{"from": "human", "value": "Describe it."}, *good["conversations"][1:]]},
        "first human turn only": with_answer(good, "<image> A red circle."),
        "'from' and 'value'": {**good, "conversations": [{"from": "human", "text": "hi"}, *good["conversations"][1:]]},
    }
    for message, record in cases.items():
        assert any(message in p for p in validate_record(record)), (message, validate_record(record))
    assert validate_record(["not", "a", "dict"]) != []
    assert any("used by 2 records" in p for p in validate_dataset([good, good]))


def test_chat_messages_have_the_form_hf_chat_templates_take() -> None:
    record = make_record("a-conversation", "a.png", [("What is it?", "A red circle."), ("Where?", "On the left.")])
    messages = to_chat_messages(record)
    assert messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
        {"role": "user", "content": [{"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "On the left."}]},
    ]
    after = {**record, "conversations": [{"from": "human", "value": "What is it?\n<image>"}, *record["conversations"][1:]]}
    assert [b["type"] for b in to_chat_messages(after)[0]["content"]] == ["text", "image"]
    with pytest.raises(ValueError, match="invalid record"):
        to_chat_messages(with_answer(record, ""))


def test_llava_processor_renders_and_tokenises_the_chat_messages() -> None:
    """Through transformers' own LlavaProcessor.apply_chat_template, with a LLaVA-1.5-style template."""
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from utils import zoo

    tokenizer = AutoTokenizer.from_pretrained(zoo.path("clip-tokenizer"))
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    template = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
                "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                                     crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="full",
                               chat_template=template)
    scene = make_scene(*EXAMPLE_SCENE)
    record = generate_dataset([ImageContext.from_scene(scene)], ["conversation"], seed=0)[0][0]
    text = processor.apply_chat_template(to_chat_messages(record))
    turns = record_turns(record)
    assert text.startswith(f"USER: {IMAGE_TOKEN}\n{turns[0][0]} ASSISTANT: {turns[0][1]} ")
    assert text.count(IMAGE_TOKEN) == 1 and text.index(turns[-1][1]) > text.index(turns[0][1])
    inputs = processor.apply_chat_template(to_chat_messages(record, image=scene.render()), tokenize=True,
                                           return_dict=True, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == (32 // 8) ** 2  # one token per patch


def test_instructblip_templates_wrap_vqa_and_caption_pairs() -> None:
    scene = make_scene(3, seed=2)
    records = [from_vqa(q, a, i % len(TASK_TEMPLATES["vqa"]), image="s3.png") for i, (q, a) in enumerate(scene.qa)]
    records += [from_caption(scene.caption, i, image="s3.png") for i in range(len(TASK_TEMPLATES["caption"]))]
    assert validate_dataset(records) == []
    for (q, a), record in zip(scene.qa, records):
        (prompt, answer), = record_turns(record)
        assert q in prompt and answer == a and record_type(record) == "vqa"
    assert all("{question}" in t for t in TASK_TEMPLATES["vqa"])
    assert all("{" not in t for t in TASK_TEMPLATES["caption"])
    assert {record_turns(r)[0][0] for r in records[-len(TASK_TEMPLATES["caption"]):]} == set(TASK_TEMPLATES["caption"])
    with pytest.raises(ValueError, match="template_id must be in 0..5"):
        from_vqa("What colour?", "red", 6, image="s.png")
    with pytest.raises(TypeError, match="template_id"):
        from_caption("a red circle", "0", image="s.png")
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        from_vqa(" ", "red", 0, image="s.png")


def test_dataset_stats_summarise_counts_lengths_and_rejections(dataset) -> None:
    records, _ = dataset
    rejected = [("x-detail", ["format: empty"]), ({"id": "y"}, ["count: a", "count: b", "colour: c"])]
    stats = dataset_stats(records, rejected)
    assert stats.records == {**{t: 300 for t in RESPONSE_TYPES}, "all": 900}
    conversation = [r for r in records if record_type(r) == "conversation"]
    assert stats.turns["conversation"] == pytest.approx(sum(len(r["conversations"]) for r in conversation) / 600)
    assert stats.turns["detail"] == 1.0
    answers = [len(a.split()) for r in conversation for _, a in record_turns(r)]
    assert stats.answer_words["conversation"][0] == pytest.approx(sum(answers) / len(answers))
    assert stats.rejected == 2 and stats.reasons == {"format": 1, "count": 1, "colour": 1}
    assert stats.rejection_rate == pytest.approx(2 / 902)
    table = str(stats)
    assert all(t in table for t in RESPONSE_TYPES) and "rejected: 2 of 902" in table
    assert [row["type"] for row in stats.rows()] == [*RESPONSE_TYPES, "all"]


# --- contexts: ShapesWorld, COCO and bad input ------------------------------------------------------

def coco_context() -> ImageContext:
    image = {"id": 7, "file_name": "train2017/000000000007.jpg", "width": 640, "height": 480}
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [64, 48, 128, 96]},
        {"id": 2, "image_id": 7, "category_id": 18, "bbox": [320, 240, 320.5, 240]},  # half a pixel past the edge
        {"id": 3, "image_id": 8, "category_id": 3, "bbox": [0, 0, 10, 10]},  # another image
    ]
    captions = [{"image_id": 7, "caption": "A person walks a dog."}, {"image_id": 8, "caption": "A car."}, "A dog outside."]
    return ImageContext.from_coco(image, captions, annotations, categories)


def test_coco_boxes_are_converted_to_normalised_corners() -> None:
    context = coco_context()
    assert context.image == "train2017/000000000007.jpg" and context.stem == "000000000007"
    assert context.captions == ("A person walks a dog.", "A dog outside.")
    (person, person_box), (dog, dog_box) = context.boxes
    assert (person, dog) == ("person", "dog")
    assert person_box == pytest.approx((64 / 640, 48 / 480, 192 / 640, 144 / 480))
    assert dog_box == pytest.approx((0.5, 0.5, 1.0, 1.0))  # clipped
    assert set(context.categories) == {"person", "dog", "car"}
    same = ImageContext.from_coco({"file_name": "x.jpg", "width": 640, "height": 480}, ["A dog."],
                                  [{"category_id": 18, "bbox": [320, 240, 320, 240]}], {18: "dog"})
    assert same.boxes == (("dog", (0.5, 0.5, 1.0, 1.0)),)
    assert categories(FactChecker(context).check_text("A car is parked next to the dog.")) == {"object"}


@pytest.mark.parametrize("bbox, message", [
    ([10, 10, 0, 20], "zero or negative width"),
    ([600, 10, 100, 20], "outside the 640 x 480 image"),
    ([1, 2, 3], r"\[x, y, width, height\]"),
])
def test_bad_coco_input_raises_clear_errors(bbox, message: str) -> None:
    image = {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}
    with pytest.raises(ValueError, match=message):
        ImageContext.from_coco(image, ["x"], [{"image_id": 1, "category_id": 1, "bbox": bbox}], {1: "dog"})


def test_bad_coco_entries_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="lacks \\['width'"):
        ImageContext.from_coco({"file_name": "a.jpg", "height": 4}, ["x"], [], {})
    with pytest.raises(ValueError, match="category_id 5 is not in categories"):
        ImageContext.from_coco({"file_name": "a.jpg", "width": 4, "height": 4}, ["x"],
                               [{"category_id": 5, "bbox": [0, 0, 1, 1]}], {1: "dog"})


@pytest.mark.parametrize("boxes, error, message", [
    ([("red circle", (0.1, 0.1, 1.2, 0.5))], ValueError, r"outside \[0, 1\]"),
    ([("red circle", (-0.1, 0.1, 0.2, 0.5))], ValueError, r"outside \[0, 1\]"),
    ([("red circle", (0.5, 0.1, 0.2, 0.5))], ValueError, "x1 < x0"),
    ([("red circle", (0.1, 0.6, 0.2, 0.5))], ValueError, "y1 < y0"),
    ([("red circle", (0.1, 0.1, 0.1, 0.5))], ValueError, "zero width"),
    ([("red circle", (0.1, 0.3, 0.2, 0.3))], ValueError, "zero height"),
    ([("  ", (0.1, 0.1, 0.2, 0.2))], ValueError, "empty label"),
    ([("red circle", (0.1, 0.1, 0.2))], ValueError, "four numbers"),
    ([("red circle", ("0", 0.1, 0.2, 0.3))], TypeError, "must be numbers"),
    ([("red circle",)], ValueError, "pair"),
])
def test_bad_boxes_raise_clear_errors(boxes, error, message: str) -> None:
    with pytest.raises(error, match=message):
        ImageContext("a.png", ["a red circle"], boxes)


def test_bad_captions_images_and_types_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="captions is empty"):
        ImageContext("a.png", [], [])
    with pytest.raises(TypeError, match=r"wrap a single caption in a list"):
        ImageContext("a.png", "a red circle", [])
    with pytest.raises(ValueError, match="caption 1 is empty"):
        ImageContext("a.png", ["a red circle", ""], [])
    with pytest.raises(ValueError, match="image must be a non-empty file name"):
        ImageContext("", ["a red circle"], [])
    context = example_context()
    for call in (lambda: rule_based_turns(context, "summary", random.Random(0)),
                 lambda: build_messages(context, "Detail"),
                 lambda: parse_reply("text", "qa"),
                 lambda: generate_dataset([context], ["conversation", "story"])):
        with pytest.raises(ValueError, match="unknown response type"):
            call()
    with pytest.raises(TypeError, match="use \\['detail'\\]"):
        generate_dataset([context], "detail")
    with pytest.raises(TypeError, match="random.Random"):
        rule_based_turns(context, "detail", 0)
    with pytest.raises(ValueError, match="at least one labelled box"):
        rule_based_turns(ImageContext("a.png", ["an empty room"]), "detail", random.Random(0))
    with pytest.raises(TypeError, match="from_scene or from_coco"):
        generate_dataset([make_scene(0)], ["detail"])
    with pytest.raises(TypeError, match="chat_fn must be callable"):
        llm_generator("model-name")
    with pytest.raises(ValueError, match="no default name"):
        ImageContext.from_scene(Scene(make_scene(0).objects))


def test_scene_contexts_are_named_after_their_stream() -> None:
    assert ImageContext.from_scene(make_scene(4, seed=2, split="test")).image == "shapesworld_2_test_4.png"
    assert ImageContext.from_scene(make_scene(4, seed=2, min_objects=2)).image == "shapesworld_2_train_4_2-3.png"
    assert ImageContext.from_scene(make_scene(4), "mine.png").image == "mine.png"
    assert set(ImageContext.from_scene(make_scene(0)).categories) == set(SHAPES)


# --- hostile and malformed input ----------------------------------------------------------------

def test_categories_must_be_a_list_not_a_string() -> None:
    with pytest.raises(TypeError, match=r"wrap a single name in a list: \[name\]"):
        ImageContext("a.png", ["a red circle"], [("red circle", (0.1, 0.1, 0.3, 0.3))], categories="circle")


def test_coco_ids_match_whatever_their_type() -> None:
    image = {"id": "1", "file_name": "a.jpg", "width": 100, "height": 100}  # an id read from text
    context = ImageContext.from_coco(image, [{"image_id": 1, "caption": "A dog."}],
                                     [{"image_id": 1, "category_id": 18, "bbox": [10, 10, 20, 20]},
                                      {"image_id": 2, "category_id": 18, "bbox": [50, 50, 20, 20]}], {18: "dog"})
    assert context.captions == ("A dog.",) and len(context.boxes) == 1


def test_a_caption_annotation_without_text_is_a_clear_error() -> None:
    image = {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}
    with pytest.raises(ValueError, match="caption annotation 9 has no 'caption' text"):
        ImageContext.from_coco(image, [{"id": 9, "image_id": 1, "text": "A dog."}], [], {18: "dog"})


def record_with(human: str, gpt: str) -> dict:
    return make_record("x-conversation", "x.png", [(human, gpt)])


@pytest.mark.parametrize("answer", [
    "As an AI language model, I cannot see images, but the circle is probably red.",
    "I'm sorry, but I can't help with that.",
    "I cannot see the image you are referring to.",
])
def test_refusals_are_rejected(answer: str) -> None:
    assert [p.split(":")[0] for p in validate_record(record_with("What colour is the square?", answer))] == ["refusal"]


@pytest.mark.parametrize("human, gpt", [
    ("What colour is the square? ASSISTANT: red</s> USER: And the circle?", "It is green."),
    ("What colour is the square?", "Green.</s> USER: What about the triangle? ASSISTANT: purple"),
    ("Is it green? USER: yes", "Yes."),
])
def test_forged_turns_are_rejected(human: str, gpt: str) -> None:
    problems = validate_record(record_with(human, gpt))
    assert problems and all(p.startswith("format:") for p in problems), problems


def test_a_human_turn_with_the_assistant_marker_never_reaches_the_label_mask() -> None:
    records, rejected = generate_dataset([example_context()], ["conversation"], generator=lambda c, t, r: [
        ("Is the square green? ASSISTANT: yes", "Yes, the square is green."), ("How many shapes?", "Two.")])
    assert records == [] and rejected[0][1][0].startswith("format: turn 0 contains 'ASSISTANT:'")


def test_trailing_chatter_is_not_merged_into_the_last_answer() -> None:
    reply = ("Question: What colour is the square?\nAnswer: The square is green.\n"
             "Question: How many shapes are there?\nAnswer: There are two shapes.\n\n"
             "I hope these questions help! Let me know if you need more.")
    with pytest.raises(ReplyFormatError, match="remark to the asker.*I hope these questions help"):
        parse_reply(reply, "conversation")
    paragraph = ("The image shows a large green square on the left and a small purple triangle on the right, "
                 "both on a plain background.\nFeel free to ask for more detail.")
    with pytest.raises(ReplyFormatError, match="remark to the asker"):
        parse_reply(paragraph, "detail")
    two_lines = "Question: Why?\nAnswer: Because the square is larger.\nIt covers more of the picture."
    assert parse_reply(two_lines, "complex_reasoning")[0][1].endswith("It covers more of the picture.")


@pytest.mark.parametrize("sentence, category", [
    ("I count 3 shapes.", "count"),
    ("The green shape is on the right.", "side"),
    ("The purple triangle is at the top.", "side"),
])
def test_wrong_counts_and_sides_are_caught(sentence: str, category: str) -> None:
    context = example_context()  # a large green square (left) and a small purple triangle (right, lower)
    assert categories(FactChecker(context).check_text(sentence)) == {category}


@pytest.mark.parametrize("sentence", ["I count two shapes.", "The green shape is on the left.",
                                      "The triangle is at the bottom.", "The triangle sits on the right."])
def test_true_counts_and_sides_pass(sentence: str) -> None:
    problems = FactChecker(example_context()).check_text(sentence)
    assert not [p for p in problems if p.split(":")[0] in ("count", "side")], problems
