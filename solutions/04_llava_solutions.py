# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions: LLaVA and visual instruction tuning
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/04_llava_solutions.ipynb)

# %% tags=["hide-input"]
# Setup: on Colab, fetch the course and the packages Colab lacks; elsewhere, find the course folder.
import os, subprocess, sys
from pathlib import Path

if "google.colab" in sys.modules and not Path("/content/multimodal-llms-hands-on/utils/runtime.py").exists():
    # The course at the version this notebook was written for ("main": a branch, a tag or a commit).
    subprocess.run(["git", "init", "-q", "/content/multimodal-llms-hands-on"], check=True)
    subprocess.run(["git", "-C", "/content/multimodal-llms-hands-on", "fetch", "-q", "--depth", "1", "https://github.com/mmllm-course/multimodal-llms-hands-on", "main"], check=True)
    subprocess.run(["git", "-C", "/content/multimodal-llms-hands-on", "checkout", "-q", "FETCH_HEAD"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "/content/multimodal-llms-hands-on/requirements-colab.txt"], check=True)
if "google.colab" in sys.modules:
    os.chdir("/content/multimodal-llms-hands-on/chapters")
COURSE_ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "utils" / "runtime.py").exists())
sys.path.insert(0, str(COURSE_ROOT))

# %% [markdown]
# Worked answers to the exercises of [chapter 4](../chapters/04_llava.ipynb). Each answer is
# followed by the same checker the chapter uses, and by a comparison with the library.

# %%
import re

import torch
from transformers import AutoTokenizer

from utils import checks, instruct, llava, zoo
from utils.instruct import ImageContext, box_relation, generate_dataset
from utils.shapes import make_scene

# %% [markdown]
# ## Exercise 4.1 -- spatial questions from boxes
#
# Two loops over the boxes give the ordered pairs; skip a box paired with itself. The offsets
# are centre minus centre, $a$ minus $b$, so a negative $dx$ means $a$ is further left. When the
# two offsets are nearly equal the relation is a coin toss, and a data generator should say
# nothing rather than guess.

# %%
def spatial_questions(boxes: list, margin: float = 0.05) -> list[tuple[str, str]]:
    turns = []
    for i, (label_a, a) in enumerate(boxes):
        for j, (label_b, b) in enumerate(boxes):
            if i == j:
                continue
            dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
            dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            if abs(abs(dx) - abs(dy)) < margin:
                continue
            if abs(dx) >= abs(dy):
                relation = "to the left of" if dx < 0 else "to the right of"
            else:
                relation = "above" if dy < 0 else "below"  # y grows downwards
            turns.append((f"Where is the {label_a} relative to the {label_b}?",
                          f"The {label_a} is {relation} the {label_b}."))
    return turns


checks.check_spatial_questions(spatial_questions)

# %% [markdown]
# The relations agree with the library's `instruct.box_relation` on a ShapesWorld scene:

# %%
boxes = make_scene(7, seed=1, min_objects=3).boxes
for question, answer in spatial_questions(boxes):
    label_a, label_b = re.match(r"Where is the (.+) relative to the (.+)\?", question).groups()
    library = box_relation(dict(boxes)[label_a], dict(boxes)[label_b])
    print(f"{answer:<50} library: {library}")

# %% [markdown]
# ## Exercise 4.2 -- the label mask
#
# Scan for the whole marker; after each match copy ids into the labels until the end-of-turn
# token, which is copied too, so the model learns to stop. Everything else stays -100.

# %%
def mask_labels(input_ids: torch.Tensor, marker: list[int], eos_id: int) -> torch.Tensor:
    ids = input_ids.tolist()
    labels = torch.full_like(input_ids, -100)
    m, i = len(marker), 0
    while i <= len(ids) - m:
        if ids[i:i + m] != marker:
            i += 1
            continue
        i += m
        while i < len(ids):
            labels[i] = ids[i]
            i += 1
            if ids[i - 1] == eos_id:
                break
    return labels


checks.check_mask_labels(mask_labels)

# %% [markdown]
# On a real conversation through the tiny LLaVA's tokenizer and chat template, it gives the same
# labels as `llava.mask_labels`, which the training script uses:

# %%
tokenizer = AutoTokenizer.from_pretrained(zoo.path("llava", mode="tiny"))
messages = llava.qa_messages([("What colour is the square?", "green"), ("How many shapes are there?", "2")])
encoded = llava.encode_conversation(tokenizer, messages, image_tokens=64)
marker = tokenizer(llava.ASSISTANT, add_special_tokens=False)["input_ids"]
mine = mask_labels(encoded.input_ids, marker, tokenizer.eos_token_id)
print("equal to the library:", torch.equal(mine, encoded.labels))
print("learned:", repr(tokenizer.decode(encoded.input_ids[mine != -100])))

# %% [markdown]
# ## Exercise 4.3 -- extend the fact checker
#
# The pattern's two groups are the vertical word (top/bottom) and the horizontal word
# (left/right); either may be missing. Each word that is present must hold for the object's
# centre.

# %%
REGION = re.compile(checks.REGION_PATTERN, re.IGNORECASE)


class RegionChecker(instruct.FactChecker):
    CHECKS = instruct.FactChecker.CHECKS + ("regions",)

    def check_regions(self, sentence) -> list[str]:
        match = REGION.search(sentence.text)
        if match is None or sentence.negated or not sentence.mentions:
            return []
        obj = self._one(sentence.mentions[0])
        if obj is None:
            return []
        self.checked["region"] += 1
        row, column = (g.lower() if g else None for g in match.groups())
        holds = {"left": obj.cx < 0.5, "right": obj.cx > 0.5, "top": obj.cy < 0.5, "bottom": obj.cy > 0.5}
        wrong = [word for word in (row, column) if word and not holds[word]]
        if not wrong:
            return []
        return [f"region: {sentence.text!r} puts the {obj.label} {' '.join(wrong)}, but its centre is at "
                f"({obj.cx:.2f}, {obj.cy:.2f})"]


checks.check_region_checker(RegionChecker)

# %% [markdown]
# The new check catches a wrong region claim that the library's checker lets through, and
# passes every record the rule-based writer produces:

# %%
context = ImageContext.from_scene(make_scene(*instruct.EXAMPLE_SCENE))
record = instruct.make_record("demo-detail", context.image, [
    ("<image>\nDescribe the image.", "A large green square is in the top right part of the picture.")])
print("library:", instruct.check_facts(record, context) or "no problem found")
print("with regions:", RegionChecker(context).check_record(record))
records, rejected = generate_dataset([ImageContext.from_scene(make_scene(i, seed=3)) for i in range(200)],
                                     seed=0, checker=RegionChecker)
print(f"rule-based records on 200 scenes: {len(records)} kept, {len(rejected)} rejected")

# %% [markdown]
# ## Exercise 4.4 -- more pixels, more tokens
#
# PIL measures an image as `(width, height)` and crops with a box `(left, upper, right, lower)`
# whose right and lower edges are left out, so tile $(r, c)$ runs from $\lfloor cW/g \rfloor$ to
# $\lfloor (c+1)W/g \rfloor$ across and the same way down: neighbouring tiles share an edge, never
# a pixel, and together they cover the image even when $g$ does not divide $W$. The global view
# goes first; the tiles follow row by row, the order in which the language model reads them.

# %%
from PIL import Image


def sub_images(image: Image.Image, grid: int, size: int) -> list[Image.Image]:
    W, H = image.size  # PIL: width first
    if grid < 1 or size < 1:
        raise ValueError(f"grid and size must be at least 1, got grid={grid}, size={size}")
    if grid > min(W, H):
        raise ValueError(f"a {W} x {H} image has too few pixels for {grid} x {grid} tiles")
    views = [image.resize((size, size))]  # the global view: the whole image, squeezed to size x size
    for r in range(grid):  # row-major: the top row first, left to right
        for c in range(grid):
            box = (c * W // grid, r * H // grid, (c + 1) * W // grid, (r + 1) * H // grid)  # right, lower left out
            views.append(image.crop(box).resize((size, size)))
    return views


checks.check_sub_images(sub_images)

# %% [markdown]
# A photo cut for a 336-pixel encoder, the way LLaVA-NeXT cuts a square one: the global view, then
# the four tiles, each of which the encoder sees at the full 336 pixels.

# %%
from utils import images, plotting

photo = images.sample_image("astronaut", mode="tiny")  # the copy shipped with scikit-image, in every mode
photo_views = sub_images(photo, 2, 336)
print(f"photo {photo.width} x {photo.height} -> {len(photo_views)} views of {photo_views[0].width} x {photo_views[0].height}")
fig = plotting.show_images(photo_views, ["global view"] + [f"tile (row {k // 2}, column {k % 2})" for k in range(4)],
                          columns=5, size=2.2, title="sub_images(photo, 2, 336): the global view, then the tiles row by row")

# %% [markdown]
# Side by side the tiles are twice as wide as the global view, but that is more encoder pixels, not
# more detail: this photo has fewer pixels across than the two tiles, so each tile is enlarged to
# fill its view, and enlarging adds nothing. The grid reads the photo at its own resolution where
# the global view squeezes it, about 1.5 times the detail in each direction:

# %%
tile_side = photo.width // 2  # the pixels of the photo across one tile
print(f"each tile: {tile_side} x {photo.height // 2} pixels of the photo, enlarged to {photo_views[1].width} x {photo_views[1].height}")
print(f"encoder pixels across: {2 * photo_views[1].width} for the tiles, {photo_views[0].width} for the global view "
      f"(x{2 * photo_views[1].width / photo_views[0].width:.0f})")
print(f"detail across: {min(photo.width, 2 * photo_views[1].width)} photo pixels for the tiles, {photo_views[0].width} for "
      f"the global view (x{min(photo.width, 2 * photo_views[1].width) / photo_views[0].width:.2f})")

# %% [markdown]
# Each view becomes $(\text{size}/P)^2$ image tokens. The counts, with the patch size and the
# context length read from LLaVA-1.5-7B's recorded configuration and the tiny LLaVA's. Every row is
# measured against LLaVA-1.5's context, the question being how many tokens each layout leaves for
# the text; LLaVA-1's language model had half that context.

# %%
from transformers import LlavaConfig

from utils import t4plan


def visual_tokens(views: list[Image.Image], patch: int) -> int:
    return sum((v.width // patch) * (v.height // patch) for v in views)


big = LlavaConfig.from_pretrained(t4plan.config_folder("llava"))
P, side, context_length = big.vision_config.patch_size, big.vision_config.image_size, big.text_config.max_position_embeddings
layouts = {"LLaVA: one view at 224 px": [photo.resize((224, 224))],
           f"LLaVA-1.5: one view at {side} px": [photo.resize((side, side))],
           f"AnyRes: 2 x 2 tiles + global at {side} px": sub_images(photo, 2, side)}
LLAVA_1_CONTEXT = 2048  # LLaVA-1's language model, Vicuna on LLaMA-1: 2,048 positions (no recorded config here)
first = visual_tokens(layouts["LLaVA: one view at 224 px"], P)
print(f"against LLaVA-1.5's context of {context_length:,} tokens (LLaVA-1's had {LLAVA_1_CONTEXT:,}):")
for name, layout in layouts.items():
    n = visual_tokens(layout, P)
    print(f"{name:<40} {n:>5,} image tokens (x{n / first:>6.2f}), {n / context_length:>4.0%} used, "
          f"{context_length - n:>5,} left for text")
tiny = LlavaConfig.from_pretrained(zoo.path("llava", mode="tiny"))
tiny_side, tiny_P = tiny.vision_config.image_size, tiny.vision_config.patch_size
scene_views = sub_images(make_scene(0).render(), 2, tiny_side)
print(f"the tiny LLaVA ({tiny_side} px, P = {tiny_P}): {visual_tokens(scene_views[:1], tiny_P)} tokens per view, "
      f"{visual_tokens(scene_views, tiny_P)} with 2 x 2 tiles + global, of a {tiny.text_config.max_position_embeddings}-token context")

# %% [markdown]
# Going from 224 to 336 pixels multiplies the tokens by $(336/224)^2$, the 2.25 in the second
# row; the grid multiplies them again by $g^2 + 1$, the five views of a $2 \times 2$ grid. The
# picture then fills most of the context LLaVA-1.5 was trained with, the prompt and the answer
# must share what is left, and in LLaVA-1's context the grid's tokens would not fit at all. The
# cost of attention grows with the square of the sequence, too. That is why LLaVA-NeXT caps the grid, and why later
# models pool or merge the tokens of each tile; SPHINX's sub-images are the same idea, tiles and a
# downsampled global view. (LLaVA-NeXT also picks the grid's shape from the image's aspect ratio,
# so a wide photo gets a wide grid; the square grid here is the simplest case.)
#
# ## Exercise 4.5 -- does it look? (an experiment)
#
# A forward hook on the projector sees its output, $(B, N, D)$, and whatever tensor it returns
# goes on to the language model in its place. Shuffling uses one permutation of the $N$ positions
# for every image; the mean keeps $N$ copies of each image's mean token, since the prompt holds
# $N$ `<image>` positions to fill. Swapping needs no hook: it shows each scene's questions the
# next scene's picture. The `finally:` removes the hook even when answering fails, so the model
# is left as it was.

# %%
from transformers import AutoProcessor, LlavaForConditionalGeneration


def ablated_answers(model, processor, scenes: list, how: str) -> list[str]:
    if how not in ("intact", "shuffled", "mean", "swapped"):
        raise ValueError(f"unknown ablation {how!r}: choose intact, shuffled, mean or swapped")
    pictures = [s.render() for s in scenes]
    if how == "swapped":
        pictures = pictures[1:] + pictures[:1]  # scene i's questions see scene (i + 1) mod n
    pairs = [(picture, llava.short_question(q.text)) for s, picture in zip(scenes, pictures) for q in s.questions]

    def change(module, inputs, features):  # features: (B, N, D), the projected patches
        if how == "shuffled":
            perm = torch.randperm(features.shape[1], generator=torch.Generator().manual_seed(0))
            return features[:, perm.to(features.device)]  # (B, N, D), the N tokens reordered
        if how == "mean":
            return features.mean(dim=1, keepdim=True).expand_as(features)  # (B, N, D), N copies of the mean
        return None  # unchanged

    handle = model.model.multi_modal_projector.register_forward_hook(change)
    try:
        return llava.answer_questions(model, processor, [p for p, _ in pairs], [q for _, q in pairs])
    finally:
        handle.remove()


# %% [markdown]
# The checker needs a LLaVA to ask; the tiny one from the zoo, in every mode, so the experiment
# runs in seconds on a CPU:

# %%
tiny_path = zoo.path("llava", mode="tiny")
tiny_processor = AutoProcessor.from_pretrained(tiny_path)
tiny_llava = LlavaForConditionalGeneration.from_pretrained(tiny_path, dtype=torch.float32).eval()
checks.check_ablated_answers(ablated_answers, tiny_llava, tiny_processor)

# %% [markdown]
# The experiment: the held-out questions of 40 scenes (the first 40 of the chapter's section 4.5)
# under each condition, accuracy by question kind.

# %% tags=["nbval-ignore-output"]
from utils import claims
from utils.shapes import ShapesWorld

held_out = ShapesWorld(40, seed=23, split="test").scenes
questions = [(i, q) for i, s in enumerate(held_out) for q in s.questions]
kinds = list(dict.fromkeys(q.kind for _, q in questions))


def by_kind(right: list[bool], asked: list) -> dict[str, float]:
    """The share of right answers for each kind of question, and for all of them."""
    shares = {kind: [r for r, q in zip(right, asked) if q.kind == kind] for kind in kinds}
    return {kind: sum(r) / len(r) for kind, r in shares.items() if r} | {"all": sum(right) / len(right)}


answers = {how: [llava.first_word(a) for a in ablated_answers(tiny_llava, tiny_processor, held_out, how)]
           for how in ("intact", "shuffled", "mean", "swapped")}
accuracy = {how: by_kind([a == q.answer for a, (_, q) in zip(got, questions)], [q for _, q in questions])
            for how, got in answers.items()}
# Swapped, judged against the scene the model was shown, on the questions that scene can answer too.
shown = held_out[1:] + held_out[:1]
also = [(a, q, {q2.text: q2.answer for q2 in shown[i].questions}.get(q.text)) for a, (i, q) in zip(answers["swapped"], questions)]
also = [(a, q, other) for a, q, other in also if other is not None]
of_shown = by_kind([a == other for a, _, other in also], [q for _, q, _ in also])
intact = accuracy["intact"]["all"]
claims.at_most("the change in accuracy when the tokens are shuffled", abs(accuracy["shuffled"]["all"] - intact), 0.05)
shuffle_shift = max(abs(accuracy["shuffled"][kind] - accuracy["intact"][kind]) for kind in kinds)
claims.at_most("the largest change of one kind's accuracy when the tokens are shuffled", shuffle_shift, 0.03)
claims.at_least("relation questions with shuffled tokens", accuracy["shuffled"]["relation"], 0.85)
claims.at_most("accuracy with the mean token, below intact by 0.3 or more", accuracy["mean"]["all"], intact - 0.3)
claims.at_most("accuracy with the next scene's image, below intact by 0.3 or more", accuracy["swapped"]["all"], intact - 0.3)
claims.at_least("count questions with the mean token, above those with the next scene's image by 0.15 or more",
                accuracy["mean"]["count"], accuracy["swapped"]["count"] + 0.15)
claims.at_least("swapped answers that are right about the scene shown, within 0.05 of intact", of_shown["all"], intact - 0.05)
print(f"{len(questions)} questions about {len(held_out)} scenes; accuracy by kind:")
print(f"{'':18s}" + "".join(f"{kind:>9s}" for kind in kinds + ["all"]))
rows = dict(accuracy, **{"swapped, of shown": of_shown})
for how, row in rows.items():
    print(f"{how:18s}" + "".join(f"{row[kind]:>9.0%}" if kind in row else f"{'-':>9s}" for kind in kinds + ["all"]))
print(f"(the last row: the {len(also)} swapped questions that the scene shown can answer too, judged by its answers)")
print(f"shuffled against intact: the largest change of one kind is {100 * shuffle_shift:.1f} points")

# %% [markdown]
# **Shuffled:** no kind moves by more than 3 points, relations included (the cell checks it, and
# prints the largest change under the table). The language model does not read *where* from
# the order of the image tokens. It does not need to: the vision tower added a position embedding
# to every patch before its blocks (chapter 1), and the patch lesson of section 4.5 trained each
# patch to say where its object lies relative to the other shapes. Position travels inside the
# tokens, so this result is partly built into the tiny recipe; whether LLaVA-1.5 shrugs off a
# shuffle as well, on real photos, is the same experiment in full mode.
#
# **Mean:** with every token replaced by the image's average, the answers collapse to about the
# level of a wrong picture. Counting keeps some of its accuracy, presumably because the average of
# the patches still tells how much of the picture the shapes cover; it says nothing about which
# colour belongs to which shape, or where each one is.
#
# **Swapped:** shown another scene, the model is mostly wrong about the scene it was asked about,
# and the two-answer kinds (size, existence) fall to about half, a coin toss. The last row says
# why: judged against the scene it *was* shown, on the questions that scene can answer too, it is
# about as accurate as with the right picture. It answers about what it sees, so its right answers
# come from the image tokens, not from habits of the question text.
