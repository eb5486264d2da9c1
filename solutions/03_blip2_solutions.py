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
# # Solutions: BLIP-2 and the Q-Former
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/03_blip2_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 3](../chapters/03_blip2.ipynb). Each answer is
# followed by the same checker the chapter uses, and by a comparison with the library.

# %%
import torch
import torch.nn.functional as F

from utils import blip2, chat, checks, claims, qformer, zoo

# %% [markdown]
# ## Exercise 3.1 -- the ITG mask
#
# Start from "nobody sees anything" and open the three blocks one by one: every row sees the
# queries (the first Q columns); the query rows must not see the text, so that block stays
# closed; the text block is a lower triangle, token $t$ seeing $0..t$.

# %%
def itg_mask(Q: int, L: int) -> torch.Tensor:
    allowed = torch.zeros(Q + L, Q + L, dtype=torch.bool)
    allowed[:, :Q] = True  # queries are visible to every row
    allowed[Q:, Q:] = torch.tril(torch.ones(L, L, dtype=torch.bool))  # causal text
    return allowed  # allowed[:Q, Q:] stays False: queries never read the caption


checks.check_itg_mask(itg_mask)

# %% [markdown]
# The library's version gives the same matrix; printed for Q = 2 queries and L = 3 text tokens
# (1 = may attend):

# %%
print(itg_mask(2, 3).int())
print("equal to utils.qformer.itg_mask:", torch.equal(itg_mask(2, 3), qformer.itg_mask(2, 3)))

# %% [markdown]
# ## Exercise 3.2 -- the chat prompt
#
# Format each finished turn, then the open question, and join with spaces. Checking the
# question *before* building anything means an empty message fails fast with a message that
# says what is wrong.

# %%
def build_prompt(history: list[tuple[str, str]], question: str) -> str:
    if not question.strip():
        raise ValueError("the question is empty: type some words")
    turns = [f"Question: {q.strip()} Answer: {a.strip()}." for q, a in history]
    return " ".join(turns + [f"Question: {question.strip()} Answer:"])


checks.check_build_prompt(build_prompt)

# %%
history = [("How many shapes are there?", "2"), ("What colour is the square?", "green")]
print(build_prompt(history, "Where is the square relative to the circle?"))
print("same as utils.chat.build_prompt:",
      build_prompt(history, "Is it large?") == chat.build_prompt(history, "Is it large?"))

# %% [markdown]
# ## Exercise 3.3 -- cross-attention
#
# Queries come from one sequence, keys and values from another: that is the only difference
# from self-attention. The scores are (B, Q, N) -- one row per query, one column per image
# token -- and the softmax runs over the last axis, the N keys.

# %%
def cross_attention(queries: torch.Tensor, keys_values: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor,
                    Wv: torch.Tensor) -> torch.Tensor:
    q = queries @ Wq  # (B, Q, D)
    k = keys_values @ Wk  # (B, N, D)
    v = keys_values @ Wv  # (B, N, D)
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, Q, N)
    return scores.softmax(dim=-1) @ v  # (B, Q, D)


checks.check_cross_attention(cross_attention)

# %% [markdown]
# However many image tokens N there are, the output has one row per query: with 4 queries
# and 50 image tokens, 4 vectors come out.

# %%
torch.manual_seed(0)
D = 8
out = cross_attention(torch.randn(1, 4, D), torch.randn(1, 50, D), *(torch.randn(D, D) for _ in range(3)))
print(tuple(out.shape))

# %% [markdown]
# ## Exercise 3.4 -- ITC's similarity, the best of the queries
#
# Normalise both sides along the feature axis $d$, so that a dot product is a cosine. Then
# `z @ t.T` compares every query of every image with every text at once, (B, Q, d) @ (d, M) ->
# (B, Q, M), and the max over the query axis keeps, for each (image, text) pair, the query that
# matches that text best:
#
# $$s_{ij} = \max_{q} \cos(z_{iq}, t_j).$$

# %%
def itc_similarity(query_feats: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
    z = F.normalize(query_feats, dim=-1)  # (B, Q, d) unit vectors; dim=-1, not F.normalize's default dim=1
    t = F.normalize(text_feat, dim=-1)  # (M, d)
    cosines = z @ t.T  # (B, Q, M): cos(z_iq, t_j) for every query and text
    return cosines.max(dim=1).values  # (B, M): the best query of image i for text j


checks.check_itc_similarity(itc_similarity)

# %% [markdown]
# Three images of five queries each against seven texts: the same (B, M) matrix as the library's.

# %%
torch.manual_seed(0)
z, t = torch.randn(3, 5, 16), torch.randn(7, 16)
print(tuple(itc_similarity(z, t).shape), "equal to utils.qformer.itc_similarity:",
      torch.allclose(itc_similarity(z, t), qformer.itc_similarity(z, t), atol=1e-6))

# %% [markdown]
# **The experiment.** A `Blip2ForConditionalGeneration` keeps no ITC head to test the similarity
# on (the projections stage 1 trains for it belong to `Blip2ForImageTextRetrieval`), but the tiny
# one has a pair that plays the same part: its soft prompts were trained to sit near the LM's
# embeddings of the words of the scene's note. So the 32 soft prompts of a scene serve as its
# query features, and the LM's input embedding of one word as a text. For each colour, size and shape word we score the 60 held-out scenes of
# section 3.7 and ask how well the score separates the scenes that contain the word from the
# rest: the AUC, the share of (scene with the word, scene without) pairs in which the first
# scores higher (1 is a perfect separation, 0.5 chance). Max over the queries against the mean.
# The model is the tiny one in every mode.

# %%
from transformers import AutoProcessor, Blip2ForConditionalGeneration

from utils.shapes import COLOURS, SHAPES, SIZES, ShapesWorld

tiny_path = zoo.path("blip2", mode="tiny")
tiny_processor = AutoProcessor.from_pretrained(tiny_path)
tiny = Blip2ForConditionalGeneration.from_pretrained(tiny_path, dtype=torch.float32).eval()
held_out = ShapesWorld(60, seed=23, split="test").scenes
with torch.no_grad():
    pixels = tiny_processor(images=[s.render() for s in held_out], return_tensors="pt")["pixel_values"]
    prompts = blip2.soft_prompts(tiny, pixels)  # (60, Q, H): the query features
words = [*COLOURS, *SIZES, *SHAPES]
word_embeds = tiny.get_input_embeddings().weight[blip2.note_ids(tiny_processor.tokenizer, words)].detach()  # (M, H)
print(f"query features {tuple(prompts.shape)}, text features {tuple(word_embeds.shape)} for {len(words)} words")

# %% [markdown]
# The AUC of both scores for every word:

# %% tags=["nbval-ignore-output"]
def auc(scores: torch.Tensor, has: torch.Tensor) -> float:
    """The share of (with, without) pairs of scenes that the score puts in the right order."""
    return (scores[has][:, None] > scores[~has][None, :]).float().mean().item()


best = itc_similarity(prompts, word_embeds)  # (60, M): max over the queries
average = (F.normalize(prompts, dim=-1) @ F.normalize(word_embeds, dim=-1).T).mean(dim=1)  # (60, M): mean over them
aucs = {}
for j, word in enumerate(words):
    has = torch.tensor([any(word in (o.colour, o.size, o.shape) for o in s.objects) for s in held_out])
    aucs[word] = (auc(best[:, j], has), auc(average[:, j], has))
    print(f"{word:>9} (in {int(has.sum()):2d} scenes): AUC max {aucs[word][0]:.3f}, mean {aucs[word][1]:.3f}")
for word in [*COLOURS, *SIZES]:
    claims.at_least(f"the AUC of the max score for '{word}'", aucs[word][0], 0.98)
    claims.holds(f"the max beats the mean for '{word}'", aucs[word][0] > aucs[word][1])
for word in SHAPES:
    claims.at_most(f"the AUC of the max score for '{word}'", aucs[word][0], 0.8)
    claims.at_least(f"the AUC of the mean score for '{word}'", aucs[word][1], 0.9)

# %% [markdown]
# For colours and sizes the max separates the scenes perfectly or nearly so, and the mean less
# well: one soft prompt that reads "red" is the whole evidence that the scene holds something red,
# and averaging it with 31 prompts about other things dilutes it. That is what the max buys: a
# query can specialise in one aspect of the image and still match the caption that talks
# about it.
#
# For shapes it is the other way round: the max separates the scenes poorly (the cell checks an
# AUC below 0.8 for every shape, where colours and sizes get 0.98 or more) and the mean well
# (above 0.9). Section 3.7's note explains it: the by-shape table writes every shape's name
# in every scene ("circle none none" when there is no circle), so in every scene some soft prompt
# reads "circle", and the max, which asks only whether *one* query looks like the word, sees it
# everywhere. A scene that does contain a circle says "circle" in more slots (left to right, and
# as the shape of its colour), and the mean counts them. The max is a good similarity when a
# query that matches a word is evidence for it; a query that always says the same thing breaks
# it. This turn is particular to the tiny model's note; the lesson -- the max trusts its single
# best query -- is not.
#
# ## Exercise 3.5 -- splicing the soft prompts in
#
# A boolean mask of the image-token positions, (B, T), unsqueezed to (B, T, 1) so that it
# covers the whole hidden vector at each such position. `masked_scatter` fills the True entries
# in order, row by row and left to right, from the source read in its own order: a contiguous
# (B, Q, H) tensor gives image 0's Q prompt vectors first, then image 1's. It returns a new
# tensor (the in-place `masked_scatter_` would change the caller's embeddings). We count first,
# row by row: given more prompt vectors than positions, `masked_scatter` drops the surplus without
# a word, and since it reads the prompts as one stream, a row with one image token too many takes
# the next image's first vector. Right totals do not make right rows, so every row must hold
# exactly Q.

# %%
def splice_prompts(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, prompts: torch.Tensor,
                   image_token_id: int) -> torch.Tensor:
    B, Q, H = prompts.shape
    if input_ids.shape[0] != B:
        raise ValueError(f"input_ids has {input_ids.shape[0]} rows, but there are prompts for {B} images")
    slots = input_ids == image_token_id  # (B, T): True at the <image> placeholders
    for b, n in enumerate(slots.sum(dim=1).tolist()):  # image tokens in each row
        if n != Q:
            raise ValueError(f"row {b} of input_ids holds {n} image tokens, but each image has Q = {Q} prompt vectors")
    return inputs_embeds.masked_scatter(slots.unsqueeze(-1), prompts.to(inputs_embeds.dtype))  # (B, T, H), new


checks.check_splice_prompts(splice_prompts, tiny, tiny_processor)

# %% [markdown]
# A batch whose total is right but whose rows are not, row 0 with Q + 1 image tokens and row 1
# with Q - 1, is refused with the row named; `masked_scatter` alone would have put image 1's first
# vector into row 0:

# %%
B, Q, T, H, image_id = 2, 3, 6, 4, 9
ids = torch.zeros(B, T, dtype=torch.long)  # (B, T), ordinary tokens
ids[0, :Q + 1], ids[1, :Q - 1] = image_id, image_id  # Q + 1 and Q - 1: B * Q in all
print("image tokens per row:", ids.eq(image_id).sum(dim=1).tolist(), "for", B * Q, "prompt vectors")
try:
    splice_prompts(torch.zeros(B, T, H), ids, torch.randn(B, Q, H), image_id)
except ValueError as exc:
    print("ValueError:", exc)

# %% [markdown]
# **The experiment.** Section 3.7 showed that while the LM is about to answer, its attention
# sits on the one soft prompt whose note slot holds the answer. Attention says where the model
# looks, not what it uses. A transplant tests it: take scene A and one of its questions, and a
# scene B in which the same question has another answer; give the LM A's 32 soft prompts with
# only the answer's slot (`blip2.answer_slot`) replaced by B's, and read the first answer word
# (the argmax of the logits at the prompt's last token). As a control, transplant instead
# another slot on which A's and B's notes differ. We try 300 such (A, B, question) triples,
# drawn from the 60 held-out scenes; "How many shapes are there?" has no slot and is left out.

# %%
generator = torch.Generator().manual_seed(35)
notes = [blip2.scene_notes(s) for s in held_out]
triples = []  # (A, B, question, answer slot, control slot)
for a, scene_a in enumerate(held_out):
    for b, scene_b in enumerate(held_out):
        answers_b = dict(scene_b.qa)
        for question, answer in scene_a.qa:
            slot = blip2.answer_slot(question)
            if a == b or slot is None or answers_b.get(question, answer) == answer:
                continue
            others = [k for k in range(len(notes[a])) if k != slot and notes[a][k] != notes[b][k]]
            triples.append((a, b, question, slot, others[int(torch.randint(len(others), (1,), generator=generator))]))
picked = torch.randperm(len(triples), generator=generator)[:300].tolist()
triples = [triples[i] for i in picked]
print(f"{len(triples)} (A, B, question) triples; questions beginning "
      + ", ".join(f"'{w}' {sum(q.startswith(w) for _, _, q, _, _ in triples)}" for w in ("What", "Is", "Where")))


# %% [markdown]
# One forward pass of the frozen LM per batch of questions. The tiny tokenizer pads on the right,
# so each row's answer is predicted at its last real token.

# %%
@torch.no_grad()
def first_answer_words(soft: torch.Tensor, questions: list[str]) -> list[str]:
    """The LM's first answer word for each question, reading the given soft prompts (n, Q, H) as the image."""
    assert tiny_processor.tokenizer.padding_side == "right"
    blank = held_out[0].render()  # the processor wants images to write the <image> slots; their pixels go unused
    inputs = tiny_processor(images=[blank] * len(questions), text=[chat.build_prompt([], q) for q in questions],
                            return_tensors="pt", padding=True)
    ids = inputs["input_ids"]  # (n, Q + L)
    embeds = splice_prompts(tiny.get_input_embeddings()(ids), ids, soft, tiny.config.image_token_index)
    logits = tiny.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits  # (n, T, V)
    last = inputs["attention_mask"].sum(dim=1) - 1  # (n,): each row's last real token
    next_ids = logits[torch.arange(len(ids)), last].argmax(dim=-1)  # (n,)
    return [w.lstrip("Ġ") for w in tiny_processor.tokenizer.convert_ids_to_tokens(next_ids.tolist())]


def transplanted(which: str) -> torch.Tensor:
    """A's soft prompts for every triple, with the answer slot or the control slot (or none) taken from B."""
    soft = prompts[[a for a, *_ in triples]].clone()  # (n, Q, H)
    for row, (a, b, _, slot, control) in enumerate(triples):
        k = {"answer slot": slot, "control slot": control}.get(which)
        if k is not None:
            soft[row, k] = prompts[b, k]
    return soft


# %% [markdown]
# The answers, compared with A's and with B's:

# %% tags=["nbval-ignore-output"]
questions = [q for _, _, q, _, _ in triples]
answer_a = [dict(held_out[a].qa)[q] for a, _, q, _, _ in triples]
answer_b = [dict(held_out[b].qa)[q] for _, b, q, _, _ in triples]
follows = {}
for which in ("nothing", "answer slot", "control slot"):
    got = first_answer_words(transplanted(which), questions)
    follows[which] = tuple(sum(g == x for g, x in zip(got, truth)) / len(got) for truth in (answer_a, answer_b))
claims.at_least("the share of A's answers with nothing transplanted", follows["nothing"][0], 0.95)
claims.at_least("the share of B's answers with the answer slot transplanted", follows["answer slot"][1], 0.9)
claims.at_least("the share of A's answers with the control slot transplanted", follows["control slot"][0], 0.9)
for which, (share_a, share_b) in follows.items():
    print(f"from B, {which:<12}: the answer is A's {share_a:.1%}, B's {share_b:.1%}")

# %% [markdown]
# With nothing transplanted the LM gives A's answer, as it should. With the one answer slot
# taken from B -- one vector of 32, the other 31 still describing A's image -- the answer becomes
# B's in nearly every triple, and with a control slot transplanted instead it stays A's (the cell
# checks at least 90% each way). So the attention of section 3.7 was not a side show: the LM
# takes the answer from that one soft prompt, and changing another one, on which the two scenes
# differ as well, does not move it.
#
# This holds for the tiny model because its bridge was taught a note with one fixed slot per
# fact. The real BLIP-2's 32 soft prompts follow no such layout, and a transplant there would
# likely move several facts at once or none; but the method -- change one input, hold the rest, and
# watch the output -- is how one tests what a model uses rather than where it looks.
