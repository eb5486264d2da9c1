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
# # 4. LLaVA and visual instruction tuning
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/chapters/04_llava.ipynb)

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
# BLIP-2 built an elaborate bridge between a frozen image encoder and a frozen language model.
# LLaVA asks how little bridge one can get away with: a single linear layer (later a two-layer
# MLP) that maps every image patch into the language model's embedding space, so the LLM reads
# the picture as a few hundred extra "words". What made LLaVA work was not the bridge but the
# data: 158k visual instructions that GPT-4 wrote from captions and bounding boxes, without ever
# seeing a pixel. This chapter builds that pipeline, trains a tiny LLaVA with the data it
# generates in the mix, measures what that data taught it, and measures how often the model sees
# things that are not there.
#
# **What you will learn**
# - LLaVA's architecture: penultimate-layer patch features, the projector, and the `<image>` token
#   expanded to one position per patch;
# - the two training stages, which parameters each one trains, and the label mask that teaches
#   only the assistant's answers;
# - how to generate visual instruction data (conversation, detailed description, complex reasoning)
#   from captions and boxes, with rules or with an LLM, and how to validate and fact-check it;
# - how to measure a model's answers and its hallucinations (POPE, in its three settings);
# - what came after the projector: CogVLM's visual expert, SPHINX's weight and encoder mixing,
#   tool use.
#
# **Prerequisites**: chapter 1 (ViT patches), chapter 2 (CLIP's image tower, which LLaVA reuses);
# chapter 3's Q-Former helps as a contrast but is not needed.

# %%
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils import beyond_projector, claims, instruct, llava, patches, plotting, runtime, tiny_lm, zoo  # first: runtime silences known-harmless warnings
from utils.instruct import ImageContext, generate_dataset, validate_record
from utils.shapes import COLOURS, ShapesWorld, make_scene, relation

from transformers import AutoProcessor, CLIPModel, LlavaConfig, LlavaForConditionalGeneration  # noqa: E402

runtime.seed_everything(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 4.1 The architecture
#
# LLaVA has three parts: a CLIP image encoder, a projector, and a decoder-only LLM. On Colab the
# cell below loads LLaVA-1.5-7B (CLIP ViT-L/14 at 336 pixels and Vicuna-7B); offline it loads the
# course's tiny LLaVA, which has the same classes and the same files, trained on ShapesWorld in
# section 4.5. Both come through the same two calls.

# %%
device = runtime.DEVICE
dtype = runtime.DTYPE  # float16 in full mode, float32 in tiny mode
model_path = zoo.path("llava")
processor = AutoProcessor.from_pretrained(model_path)
# Full mode: the language model in 4 bits, so the 7B model fits a T4 (section 4.1 shows the arithmetic).
quantization = llava.four_bit_config() if runtime.MODE == "full" else None
model = LlavaForConditionalGeneration.from_pretrained(model_path, dtype=dtype, device_map=device,
                                                      quantization_config=quantization).eval()
config = model.config
print(f"{runtime.MODE} mode: {type(model).__name__} from {zoo.entry('llava').folder if runtime.MODE == 'tiny' else zoo.entry('llava').hub_id}")
for name, part in [("vision tower", model.model.vision_tower), ("projector", model.model.multi_modal_projector),
                   ("language model", model.model.language_model)]:
    print(f"  {name:<15}{type(part).__name__:<26}{llava.count_parameters(part):>13,} parameters")

# %% [markdown]
# ### Patch features from the penultimate layer
#
# The image tower is a ViT, exactly as in chapter 1: the image is cut into patches, each patch
# becomes a token, and a [CLS] token is prepended. LLaVA does not use CLIP's pooled output. It
# takes the hidden states of *every patch* from the second-to-last layer
# (`vision_feature_layer = -2`) and drops [CLS] (`vision_feature_select_strategy = "default"`).
# The last layer is trained to serve CLIP's contrastive loss through [CLS]; the layer before it
# keeps more of each patch's local detail.

# %%
scene = make_scene(1, seed=0)
image = scene.render()
pixel_values = processor.image_processor(images=image, return_tensors="pt")["pixel_values"].to(device, dtype)
with torch.no_grad():
    tower_out = model.model.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
hidden = tower_out.hidden_states[config.vision_feature_layer]  # (1, 1 + patches, D_vision)
patch_feats = hidden[:, 1:]  # drop [CLS]
vision = config.vision_config
print(f"image {vision.image_size} x {vision.image_size}, patches of {vision.patch_size}: "
      f"{(vision.image_size // vision.patch_size) ** 2} patches")
print(f"hidden_states holds {len(tower_out.hidden_states)} tensors (embeddings + one per block); "
      f"layer {config.vision_feature_layer}: {tuple(hidden.shape)} -> without [CLS]: {tuple(patch_feats.shape)}")

# %% [markdown]
# ### The projector
#
# The projector maps each patch feature $z_i \in \mathbb{R}^{D_v}$ to a token embedding
# $h_i \in \mathbb{R}^{D_{LM}}$. The first LLaVA used one matrix, $h_i = W z_i$; LLaVA-1.5
# found that a two-layer MLP works clearly better:
#
# $$h_i = W_2\, \mathrm{GELU}(W_1 z_i + b_1) + b_2 .$$
#
# We apply the loaded projector's weights by hand and compare with the model's own
# `get_image_features`, which runs tower, layer choice, [CLS] removal and projector in one call.

# %%
projector = model.model.multi_modal_projector
W1, b1 = projector.linear_1.weight, projector.linear_1.bias
W2, b2 = projector.linear_2.weight, projector.linear_2.bias
h_by_hand = torch.nn.functional.gelu(patch_feats @ W1.T + b1) @ W2.T + b2  # (1, patches, D_LM)
with torch.no_grad():
    h_model = model.model.get_image_features(pixel_values=pixel_values)
h_model = h_model.pooler_output if hasattr(h_model, "pooler_output") else h_model
h_model = torch.cat(list(h_model), dim=0) if isinstance(h_model, (list, tuple)) else h_model
print(f"W1 {tuple(W1.shape)}, W2 {tuple(W2.shape)}: D_vision = {W1.shape[1]} -> D_LM = {W2.shape[0]}")
tolerance = 10 * claims.rounding(dtype)  # the projected values reach about 10, so float rounding reaches 1e-5 x 10
claims.close("the projector by hand vs get_image_features", h_by_hand.reshape(-1), h_model.reshape(-1), atol=tolerance)
print(f"projected patches: {tuple(h_by_hand.shape)}; by hand and get_image_features agree to within {tolerance:g}")
linear_projector = torch.nn.Linear(W1.shape[1], W2.shape[0])
print(f"parameters: linear projector (LLaVA) {sum(p.numel() for p in linear_projector.parameters()):,}, "
      f"MLP projector (LLaVA-1.5) {sum(p.numel() for p in projector.parameters()):,}")

# %% [markdown]
# ### `<image>` becomes one token per patch
#
# The prompt marks where the image goes with a single `<image>` placeholder. The processor
# repeats it once per patch feature, and the model overwrites those positions with the projected
# patches before the LLM runs. The special tokens live in one place, `utils.tiny_lm.SPECIAL_TOKENS`
# (the same five strings LLaVA-1.5's tokenizer uses), and the processor's chat template writes
# LLaVA-1.5's `USER: ... ASSISTANT:` format.

# %%
tokenizer = processor.tokenizer
print({token: tokenizer.convert_tokens_to_ids(token) for token in tiny_lm.SPECIAL_TOKENS})
print("model's image_token_index:", config.image_token_index)
prompt = processor.apply_chat_template([llava.user_message("What colour is the circle?")], add_generation_prompt=True)
print(repr(prompt))
inputs = processor(images=image, text=prompt, return_tensors="pt")
n_image = int((inputs["input_ids"] == config.image_token_index).sum())
print(f"input_ids: {inputs['input_ids'].shape[1]} positions, of which {n_image} hold <image> "
      f"(= {llava.num_image_tokens(config)} patches); text tokens: {inputs['input_ids'].shape[1] - n_image}")

# %% [markdown]
# The full-size model pays for its simplicity in sequence length: CLIP ViT-L/14 at 336 pixels
# has $(336/14)^2 = 576$ patches, so every image costs 576 positions of the LLM's context. (A
# BLIP-2 Q-Former squeezes any image into 32.) We build LLaVA-1.5-7B from its real configuration
# (`llava-hf/llava-1.5-7b-hf`'s `config.json`, kept in the course's `configs/` folder) and count
# its parameters on PyTorch's `meta` device, which allocates no memory, to see what a Colab T4
# (15 GB) has to hold.

# %%
from utils import t4plan

big_config = LlavaConfig.from_pretrained(t4plan.config_folder("llava"))
with torch.device("meta"):
    big = LlavaForConditionalGeneration(big_config)
parts = {"vision tower": big.model.vision_tower, "projector": big.model.multi_modal_projector,
         "language model": big.model.language_model, "lm_head": big.lm_head}
counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
total = sum(counts.values())
for name, count in counts.items():
    print(f"{name:<15}{count / 1e6:>10,.1f} M")
print(f"{'total':<15}{total / 1e9:>10.2f} B parameters; image tokens per picture: {llava.num_image_tokens(big_config)}")
print(f"weights in float16: {total * 2 / 2**30:.1f} GiB; with the language model's blocks in 4 bits: "
      f"{t4plan.weight_bytes('llava') / 2**30:.1f} GiB")
here = t4plan.chapter_plan("04_llava", t4plan.workload()["04_llava"])
print(f"this chapter in full mode on a T4: batches of {llava.full_mode_batch(big_config, 6)} questions, peak GPU memory "
      f"{here.peak_gpu_gib:.1f} GiB of the plan's {t4plan.GPU_LIMIT_GIB:g}, about {here.gpu_minutes:.0f} minutes of GPU time")

# %% [markdown]
# In fp16 the weights alone take about 13 GiB (the cell printed the exact figure), leaving almost
# nothing of a T4's 15 GB for activations: a batch of questions, each 576 image tokens plus the
# text, needs a KV cache of half a mebibyte per token (2 x 32 layers x 4,096 numbers x 2 bytes). Full
# mode therefore loads the language model's 32 blocks in 4 bits (`llava.four_bit_config`:
# bitsandbytes' NF4) and keeps the vision tower, the projector, the embeddings and `lm_head` in
# float16: the second figure above. Chapter 0's T4 plan gives the whole budget, and the batch sizes
# full mode uses follow from it.

# %% [markdown]
# ### LLaVA-1 and LLaVA-1.5: what changed
#
# LLaVA-1.5 is the model this chapter loads in full mode, and most of what the chapter says about
# LLaVA holds for both versions. Five things changed between them (Liu et al., *Improved
# Baselines*, 2023). The projector became the MLP above. The image side moved from CLIP ViT-L/14
# at 224 pixels to the same tower at 336 pixels. The language model moved from a Vicuna built on
# LLaMA to Vicuna v1.5, built on Llama 2. Stage 1 switched caption sets. And stage 2 grew from the
# 158K generated instructions of section 4.3 to a mixture that adds ShareGPT's text-only
# conversations and academic data with short answers (VQA, OCR and region-level sets), each
# question carrying a *response-format prompt* such as "Answer the question using a single word
# or phrase.", so that the model learns when to be brief instead of answering every benchmark
# question with a paragraph. The cell counts what the numbers mean for the LLM.

# %%
D_vision, D_llm = 1024, 4096  # CLIP ViT-L/14 features; Vicuna-7B's embedding width
with torch.device("meta"):
    linear_big = torch.nn.Linear(D_vision, D_llm)
    mlp_big = torch.nn.Sequential(torch.nn.Linear(D_vision, D_llm), torch.nn.GELU(), torch.nn.Linear(D_llm, D_llm))
versions = {
    "LLaVA-1": dict(pixels=224, projector=linear_big, stage1=595_000, stage2=158_000,
                    data="CC3M captions (filtered) / LLaVA-Instruct: conversations, descriptions, reasoning"),
    "LLaVA-1.5": dict(pixels=336, projector=mlp_big, stage1=558_000, stage2=665_000,
                      data="LCS-558K (LAION, CC, SBU; BLIP captions) / LLaVA-Instruct + ShareGPT + academic VQA"),
}
for name, v in versions.items():
    tokens = (v["pixels"] // 14) ** 2  # ViT-L/14: one token per 14 x 14 patch
    params = sum(p.numel() for p in v["projector"].parameters())
    print(f"{name:<10} {v['pixels']} px -> {tokens} image tokens; projector {params / 1e6:.1f}M parameters; "
          f"stage 1 {v['stage1'] / 1e3:.0f}K pairs, stage 2 {v['stage2'] / 1e3:.0f}K instructions "
          f"({(v['stage1'] + v['stage2']) / 1e6:.2f}M in all)\n{'':<11}{v['data']}")
ratio = ((336 // 14) / (224 // 14)) ** 2
print(f"336 px instead of 224: {ratio:.2f} times the image tokens per picture, so {ratio:.2f} times the LLM's "
      f"work on them per layer, and {ratio ** 2:.2f} times the attention scores among them")
layers = sum(isinstance(m, torch.nn.Linear) for m in model.model.multi_modal_projector.modules())
print(f"the model loaded in 4.1: {llava.num_image_tokens(config)} image tokens per picture, a projector of "
      f"{layers} linear layers (the LLaVA-1.5 form)")

# %% [markdown]
# LLaVA-1.5's 1.22M examples are the "1.2M publicly available data" of its abstract; training the
# 13B model on them took about a day on one node of eight A100s. The jump from 224 to 336 pixels
# costs the LLM 2.25 times the image tokens, and going further with the same tower means cutting
# the picture into sub-images, each costing a full set of image tokens (576 per 336-pixel tile for
# LLaVA-NeXT; SPHINX does the same with 224-pixel views, section 4.6; exercise 4.4 builds them).

# %% [markdown]
# ## 4.2 Two training stages and the label mask
#
# LLaVA trains in two stages:
#
# 1. **Feature alignment.** Vision tower and LLM frozen; only the projector learns, on
#    image-caption pairs (595K filtered CC3M pairs for LLaVA; LLaVA-1.5 uses LCS-558K, drawn
#    from LAION, CC and SBU). The projector learns to put
#    patches where the LLM can read them.
# 2. **Visual instruction tuning.** The vision tower stays frozen; projector *and* LLM learn, on
#    the instruction data of section 4.3.
#
# `llava.set_stage` sets `requires_grad` the way each stage does; the counts come from the model.

# %%
for stage in (1, 2):
    trainable = llava.set_stage(model, stage)
    print(f"stage {stage}: " + ", ".join(f"{k} {v:,}" for k, v in trainable.items()))
for p in model.parameters():
    p.requires_grad_(False)  # back to inference

# %% [markdown]
# In both stages the loss is next-token prediction, but only on what the assistant says: the
# user's question and the image tokens are context, not targets. The labels copy the input ids
# inside each answer (up to and including its end-of-turn token `</s>`, so the model learns to
# stop) and hold $-100$ elsewhere, the index `cross_entropy` ignores. Here is a two-turn
# conversation tokenised the way training sees it, the image before the first question as in
# LLaVA-1.5.

# %%
turns = [(llava.short_question("What colour is the square?"), "green"),
         (llava.short_question("Is the triangle small or large?"), "small")]
messages = llava.qa_messages(turns, image_first=getattr(config, "image_first", True))
encoded = llava.encode_conversation(tokenizer, messages, llava.num_image_tokens(config))
tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids.tolist())
learned = encoded.labels != tiny_lm.IGNORE_INDEX
print(f"{len(tokens)} positions, {int(learned.sum())} learned:", tokenizer.decode(encoded.input_ids[learned]))

# %% [markdown]
# The picture below shows the same sequence with the 64 image positions folded into one cell.
# Green cells are learned; grey ones are only read.

# %%
image_id = config.image_token_index
shown, keep = [], []
for i, (tok, lab) in enumerate(zip(tokens, learned.tolist())):
    if encoded.input_ids[i] == image_id and i > 0 and encoded.input_ids[i - 1] == image_id:
        continue
    shown.append(f"<image> x{llava.num_image_tokens(config)}" if encoded.input_ids[i] == image_id else tok.replace("Ġ", "·").replace("Ċ", "\\n"))
    keep.append(lab)
columns = 12
rows = -(-len(shown) // columns)
fig, ax = plt.subplots(figsize=(12, 0.55 * rows + 0.6))
for k, (text, lab) in enumerate(zip(shown, keep)):
    r, c = divmod(k, columns)
    ax.add_patch(plt.Rectangle((c, -r), 0.95, 0.9, color="#8fd18f" if lab else "#dddddd"))
    ax.text(c + 0.475, -r + 0.45, text, ha="center", va="center", fontsize=7)
ax.set_xlim(0, columns)
ax.set_ylim(-rows + 0.9, 1)
ax.axis("off")
ax.set_title("Labels of a two-turn conversation: green = learned (the token id), grey = -100")
plt.show()

# %% [markdown]
# ## 4.3 Generating visual instruction data
#
# In 2023 there was almost no image-grounded instruction data. LLaVA's authors gave GPT-4 what
# a text-only model *can* read about an image, its captions and its object boxes, and asked
# for three kinds of responses:
#
# - **conversation**: several questions and answers, written as if the assistant saw the image;
# - **detailed description**: a rich paragraph answering a "describe the image" instruction;
# - **complex reasoning**: one question whose answer needs reasoning beyond what is visible.
#
# We do the same for ShapesWorld, where captions and boxes come with every scene, or for any
# COCO-style annotation you bring (`ImageContext.from_coco`). First the context a writer sees:

# %%
example = make_scene(*instruct.EXAMPLE_SCENE)
context = ImageContext.from_scene(example)
print(instruct.render_context(context))
fig = plotting.show_scenes([example], columns=1, title="the scene behind the context (the writer never sees it)")

# %% [markdown]
# ### A grounded rule-based writer
#
# The offline writer computes every fact from the boxes: colours and nouns from the labels,
# counts, sizes from box areas, and left/right/above/below from box centres (only where the
# offset is clear). It writes all three response types in LLaVA's JSON format: an `id`, the
# `image` file name, and `conversations` alternating `human` and `gpt`, with `<image>` once in the
# first human turn.

# %%
records, rejected = generate_dataset([context], seed=0)
print(json.dumps(records[0], indent=1)[:900])
for r in records[1:]:
    print(f"\n[{instruct.record_type(r)}]")
    for q, a in instruct.record_turns(r):
        print(f"  human: {q}\n  gpt:   {a}")

# %% [markdown]
# ### An LLM-prompted writer
#
# LLaVA's own route asks an instruction-tuned LLM. `instruct.build_messages` writes the system
# prompt (what the boxes mean, to write as if seeing the image, never to mention coordinates),
# a few worked examples built from other scenes, and then this scene's context. Only text goes
# in; the image never does.

# %%
chat_messages = instruct.build_messages(context, "conversation", shots=1)
for m in chat_messages:
    print(f"--- {m['role']} ---\n{m['content'][:400]}{' ...' if len(m['content']) > 400 else ''}")

# %% [markdown]
# The reply comes back as text and must be parsed into turns. Offline we replay stored replies
# (`instruct.ReplayChat`); in full mode the next cell calls an instruction-tuned open model
# through the same function. A reply that ignores the format is rejected with a reason rather
# than turned into a bad record.

# %%
stored = {name: reply for name, (_, reply) in instruct.EXAMPLE_REPLIES.items()}
for name in ("conversation/good", "conversation/markdown", "malformed/no-labels", "malformed/missing-answer"):
    response_type = instruct.EXAMPLE_REPLIES[name][0]
    try:
        record = instruct.generate_with_llm(context, response_type, instruct.ReplayChat([stored[name]]))
        print(f"{name:<28} parsed: {len(instruct.record_turns(record))} turns")
    except instruct.ReplyFormatError as error:
        print(f"{name:<28} rejected: {str(error)[:110]}")

# %% [markdown]
# ### Validate, then fact-check
#
# A parsed record can still be wrong in two ways. The **validator** checks the form: the schema,
# roles alternating human/gpt, `<image>` exactly once and in the first turn. The **fact
# checker** reads each answer and checks its claims against the boxes: colours, counts, sizes and
# relations, and objects that are not in the scene. LLM-written data sets needed exactly this
# clean-up. Here is a reply with planted mistakes:

# %%
bad = instruct.generate_with_llm(context, "conversation", instruct.ReplayChat([stored["conversation/hallucinated"]]))
print("validator:", validate_record(bad) or "ok")
for problem in instruct.check_facts(bad, context):
    print("fact checker:", problem)
broken = dict(bad, conversations=bad["conversations"][1:])  # drop the first human turn
print("validator on a record that starts with gpt:", validate_record(broken)[:2])

# %% [markdown]
# ### A thousand records
#
# Now 1,000 scenes, one response type each (cycled), through the whole pipeline. To see the
# fact checker at work we also wrap the writer in a careless one that, like a real LLM now and
# then, changes one fact in 30% of the records (a colour swapped for another) and count what
# is caught. The table lists the types, turns per record, lengths in words, and the rejections
# by reason.

# %%
contexts = [ImageContext.from_scene(make_scene(i, seed=0)) for i in range(1000)]
start = time.perf_counter()
clean, clean_rejected = generate_dataset(contexts, seed=0, cycle_types=True)
seconds = time.perf_counter() - start
print(f"rule-based: {len(clean)} records in {seconds:.2f} s ({len(contexts) / seconds:,.0f} records/s), "
      f"{len(clean_rejected)} rejected")


def careless_writer(context, response_type, rng):
    """The rule-based writer, but 30% of records get one colour word changed."""
    turns = instruct.rule_based_turns(context, response_type, rng)
    if rng.random() < 0.3:
        i = rng.randrange(len(turns))
        present = [c for c in COLOURS if f" {c} " in f" {turns[i][1]} "]
        if present:
            old = rng.choice(present)
            new = rng.choice([c for c in COLOURS if c != old])
            changed = f" {turns[i][1]} ".replace(f" {old} ", f" {new} ", 1).strip()
            careless_writer.planted[context.image] = (turns[i][1], changed)
            turns[i] = (turns[i][0], changed)
    return turns


careless_writer.planted = {}
noisy, noisy_rejected = generate_dataset(contexts, seed=0, cycle_types=True, generator=careless_writer)
rejected_images = {r["image"] if isinstance(r, dict) else r for r, _ in noisy_rejected}
planted = careless_writer.planted
missed = [image for image in planted if image not in rejected_images]
print(f"careless writer: {len(planted)} records changed, {len(planted) - len(missed)} of them rejected "
      f"({1 - len(missed) / len(planted):.0%}); unchanged records rejected: {len(rejected_images - set(planted))}")
for image in missed[:2]:
    print(f"  missed in {image}:\n    written: {planted[image][0][:150]}\n    changed: {planted[image][1][:150]}")
print()
print(instruct.dataset_stats(noisy, noisy_rejected))

# %% [markdown]
# The few changed records that pass are worth a look (the cell prints two): a colour swapped in a
# list of colours, or a colour moved into a sentence that only names it, can leave a sentence
# that is still true of the scene. No unchanged record was flagged: the checker only reports a
# problem when the boxes contradict the text.
#
# ## 4.4 InstructBLIP's route: templates over existing data sets
#
# InstructBLIP took another road to instruction data: 26 existing data sets (VQA, captioning,
# classification, ...) rewritten through hand-written task templates such as "Given the image,
# answer the following question with no more than three words. {Question}". No LLM writes
# anything, so nothing can be hallucinated, but the answers stay as short as the original labels.

# %%
for i in range(3):
    q, a = scene.qa[i]
    record = instruct.from_vqa(q, a, i, image="scene.png")
    print(instruct.record_turns(record)[0])
print(instruct.record_turns(instruct.from_caption(scene.caption, 1, image="scene.png"))[0])

# %% [markdown]
# ## 4.5 A tiny LLaVA, trained mostly on one-word questions
#
# The tiny model loaded in 4.1 was trained on a CPU: LLaVA's two stages, after two steps that
# prepare the parts a real LLaVA gets ready-made (the vision tower's patch lesson, explained below,
# and the language model's pretraining on ShapesWorld text). Its record, kept next to the weights:

# %%
recipe = json.loads((Path(model_path) / "training.json").read_text()) if runtime.MODE == "tiny" else None
if recipe:
    steps, seconds, trainable = recipe["steps"], recipe["seconds"], recipe["trainable_parameters"]
    print(f"{recipe['train_scenes']:,} training scenes, {recipe['instruction_records']:,} generated instruction "
          f"records, batches of {recipe['batch_size']}")
    print(f"before: the patch lesson {steps['patch lesson']:,} steps, text pretraining {steps['text pretraining']:,}")
    print(f"stage 1: {steps['stage 1']:,} steps training the projector's {trainable['stage 1']['total']:,} parameters")
    phases = {"stage 2 colour warm-up": "colour warm-up", "stage 2 relation warm-up": "relation warm-up",
              "stage 2 warm-up": "all-kinds warm-up", "stage 2 focus": "focus", "stage 2": "mixed last part"}
    print(f"stage 2: {trainable['stage 2']['total']:,} parameters (projector and language model); steps:")
    names = [f"{name} {steps[k]:,}" for k, name in phases.items()]
    print("  " + ", ".join(names[:3]) + ",\n  " + ", ".join(names[3:]))
    c, q = recipe["compact_share"], recipe["qa_share"]
    print(f"the last part's batches: {c:.0%} compact questions, {(1 - c) * q:.0%} one-word chat questions,")
    print(f"  {(1 - c) * (1 - q):.0%} instruction records (about {steps['stage 2'] * (1 - c) * (1 - q):.0f} batches of "
          f"{recipe['batch_size']})")
    print(f"the patch lesson's relation term weighted {recipe['relation_weight']:g} times")
    print(f"{sum(seconds[k] for k in seconds if k != 'variant') / 60:.0f} minutes on {recipe['threads']} CPU threads")

# %% [markdown]
# Beyond LLaVA's recipe, this small model needed help before it answered about the *right*
# object. The box "How this differs from LLaVA" at the end of this section lists each departure
# with what the model scores without it; the first is in the vision tower.
#
# **The patch lesson.** A big CLIP has seen 400M captions and its patch features say what is where.
# Our 3-block CLIP saw one caption per scene. A linear probe on the patch under each object's
# centre finds its colour almost perfectly but its shape much less well: features that do not say
# which patch shows the circle leave the LLM nothing to look up when asked for the circle's colour.
# So before stage 1, the tower's lower layers train a little further to predict dense targets at
# every patch (which colour-shape pair covers it, its size, where its object lies relative to each
# other shape, `utils/patches.py`), and then the tower freezes. Most relation targets are "none"
# (background patches, shapes that are not in the scene) and easy, so the relation term of that
# loss counts four times (the record's last line); at equal weight, in an earlier run, the tower
# learned the relations of far fewer object patches and the LLM could not learn to read them. The
# probe below repeats the centre-patch measurement on the original CLIP tower and on the LLaVA
# tower.

# %% tags=["nbval-ignore-output"]
# Full mode's tower makes 576 features of width 1024 per image: fewer scenes keep them in memory.
n_train, n_test = (1500, 300) if runtime.MODE == "tiny" else (300, 100)
probe_train, probe_test = ShapesWorld(n_train, seed=40, split="train"), ShapesWorld(n_test, seed=41, split="test")
clip_model = CLIPModel.from_pretrained(zoo.path("clip"), dtype=torch.float32) if runtime.MODE == "tiny" else None
towers = {"tiny CLIP's tower": clip_model.vision_model if clip_model is not None else None,
          "LLaVA's tower (after the lesson)" if runtime.MODE == "tiny" else "LLaVA-1.5's CLIP ViT-L/14-336": model.model.vision_tower}
tower_probe = {}
for name, tower in towers.items():
    if tower is None:
        continue
    # The processor brings each scene to the tower's input size (336 px in full mode) and normalisation.
    feats = [torch.cat([patches.patch_features(tower, processor.image_processor(
                 images=[s.render() for s in w.scenes[i:i + 64]], return_tensors="pt")["pixel_values"].to(device, dtype),
                 layer=config.vision_feature_layer, batch_size=64).float().cpu() for i in range(0, len(w), 64)])
             for w in (probe_train, probe_test)]
    result = patches.object_probe(feats[0], probe_train.scenes, feats[1], probe_test.scenes)
    tower_probe[name] = result
    print(f"{name:<34} centre-patch probe: colour {result['colour']:.1%}, shape {result['shape']:.1%}")
    if runtime.MODE != "tiny":
        continue  # the claims below are about the tiny towers
    claims.at_least(f"{name}: the probe's colour accuracy", result["colour"], 0.95)
    if name.startswith("LLaVA"):
        claims.at_least(f"{name}: the probe's shape accuracy", result["shape"], 0.95)
    else:
        claims.at_most(f"{name}: the probe's shape accuracy (the text says: much less well)", result["shape"], 0.85)
if recipe:
    print("the lesson's own held-out per-patch accuracy: "
          + ", ".join(f"{k} {v:.1%}" for k, v in recipe["patch_lesson"]["per_patch_accuracy"].items()))

# %% [markdown]
# ### Held-out questions
#
# Now the test: every ShapesWorld question (count, colour, shape, size, existence, relation)
# about 60 scenes the model never saw, asked through the processor and `generate`, with
# LLaVA-1.5's "Answer the question using a single word or phrase." (Full mode asks about 20
# scenes: LLaVA-1.5-7B reads the 576 image tokens and the question for every one of its answers.)

# %% tags=["nbval-ignore-output"]
test_scenes = ShapesWorld(60 if runtime.MODE == "tiny" else 20, seed=23, split="test").scenes
start = time.perf_counter()
qa = llava.qa_accuracy(model, processor, test_scenes)
print(f"{sum(len(s.qa) for s in test_scenes)} questions in {time.perf_counter() - start:.0f} s: "
      f"accuracy {qa['all']:.1%} (target 80%)")
print("by kind: " + ", ".join(f"{k} {v:.0%}" for k, v in qa.items() if k != "all"))
if runtime.MODE == "tiny":
    claims.at_least("the held-out QA accuracy", qa["all"], 0.80)
    claims.holds("shape questions are the weakest kind", min(qa, key=qa.get) == "shape")

# %% [markdown]
# The kinds are far from equal. Shape questions ("What shape is the red one?") are the weak spot;
# the answers the model gives to them show how it fails:

# %% tags=["nbval-ignore-output"]
from collections import Counter

shape_questions = [(s, q.text, q.answer) for s in test_scenes for q in s.questions if q.kind == "shape"]
shape_answers = llava.answer_questions(model, processor, [s.render() for s, _, _ in shape_questions],
                                       [llava.short_question(q) for _, q, _ in shape_questions])
true_shapes, answered_shapes = Counter(a for _, _, a in shape_questions), Counter(llava.first_word(g) for g in shape_answers)
print("true shapes:   ", dict(true_shapes.most_common()))
print("model answered:", dict(answered_shapes.most_common()))
if runtime.MODE == "tiny":
    claims.at_least("'square' answers per true square", answered_shapes["square"] / true_shapes["square"], 1.3)

# %% [markdown]
# It says "square" far more often than the answer is a square: in the chat layout the shape
# questions mostly collapsed into that one guess. The focus phase, which spends its steps on the
# kinds still answered wrongly most often, ran to its 2,500-step limit in this run without
# passing its gate (the record at the top of this section). A rebuild with the same script,
# measured at the end of this section, passed the gate after 2,250 focus steps and answers 94.8%
# of the shape questions, so this weak row reflects the shipped run's path through the gates
# more than the phase's length.
#
# A few answers, with the scenes they are about:

# %%
shown_scenes = test_scenes[:4]
questions = [llava.short_question(s.qa[k][0]) for s in shown_scenes for k in (1, -1)]
answers = llava.answer_questions(model, processor, [s.render() for s in shown_scenes for _ in (1, -1)], questions)
titles = []
for i, s in enumerate(shown_scenes):
    lines = [f"{s.qa[k][0]} -> {answers[2 * i + j]}" for j, k in enumerate((1, -1))]
    titles.append("\n".join(plotting.wrap(line, 30) for line in lines))
fig = plotting.show_images([s.render() for s in shown_scenes], titles, columns=4, size=2.6)
for ax, title in zip(fig.axes, titles):
    ax.set_title(title, fontsize=8)  # one line per question, as wrapped above

# %% [markdown]
# ### Hallucination: the POPE probe
#
# A model that answers "yes" to "Is there a ...?" whatever it sees would look fine on present
# objects. POPE (Li et al., 2023) asks balanced yes/no questions, half about objects that are
# there and half about objects that are not, and reports accuracy, precision, recall, F1 and the
# **yes-ratio**: a model that hallucinates says yes far more than half the time. It draws the
# absent objects in three settings: **random**; **popular**, the objects most frequent in the
# training data (a model that has learned "there is usually a person" says yes to them);
# **adversarial**, the objects that co-occur most often with those in the picture. On ShapesWorld
# the objects are colour-shape pairs, and what co-occurs with a red circle and a blue square is
# their attributes: the adversarial negatives swap them ("Is there a red square?", "a blue
# circle?"), which tests whether the model binds each colour to its shape.

# %% tags=["nbval-ignore-output"]
pope_scenes = ShapesWorld(200 if runtime.MODE == "tiny" else 50, seed=24, split="test").scenes
training_counts = llava.object_counts(ShapesWorld(2000, seed=5, split="train").scenes)  # the training data's objects
print(f"objects in 2000 training scenes: each colour-shape pair {min(training_counts.values())} to "
      f"{max(training_counts.values())} times")
pope_by_setting = {}
for setting in llava.POPE_SETTINGS:
    scores = pope_by_setting[setting] = llava.pope(model, processor, pope_scenes, setting=setting, counts=training_counts)
    if runtime.MODE == "tiny":
        claims.at_least(f"the POPE F1 ({setting})", scores.f1, 0.95)
        claims.between(f"the POPE yes-ratio ({setting})", scores.yes_ratio, 0.4, 0.6)
print(f"{scores.n} probes per setting ('Is there a {{colour}} {{shape}} in the image?'), half of them absent")
for setting, scores in pope_by_setting.items():
    print(f"{setting:12s} accuracy {scores.accuracy:.1%}, precision {scores.precision:.3f}, recall {scores.recall:.3f}, "
          f"F1 {scores.f1:.3f}, yes-ratio {scores.yes_ratio:.2f}")

# %% [markdown]
# The tiny LLaVA says yes about half the time, as often as the answer is yes, and its F1 is above
# 0.95 in all three settings: on ShapesWorld's closed set of 15 colour-shape pairs it neither
# hallucinates objects nor swaps attributes between them. The popular setting is no harder than
# the random one here because ShapesWorld draws every pair about equally often (the counts
# above); on COCO, where a few objects dominate, it is the setting that exposes a model's priors.
#
# ### Long answers, fact-checked
#
# One-word answers and yes/no probes are what the model mostly trained on. The generated records
# ask for more: a sentence in a conversation, a paragraph of description, a reasoned answer. To
# score such answers without a judge we reuse the fact checker of 4.3. Each of 120 held-out scenes
# gets the first question of a record the rule-based writer makes for it (the three types taking
# turns, as in the training data), the model answers in up to 80 tokens, and the checker reads the
# answer against the scene's boxes. An answer counts as **right** when it is a sentence (three
# words or more) in which the checker verified at least one claim and found none false. The word
# floor is there because the checker reads a bare "red" as a true colour claim; the score checks
# facts, not grammar or completeness. The table gives, per response type, the share of answers
# counted right, the share with at least one *false claim*, and the mean number of checked
# *claims* and of *words* per answer. The writer's own answers, scored the same way, are the
# ceiling; they are right by construction (the same boxes wrote and check them), which also shows
# that the checker raises no false alarms on good answers. (Full mode asks about 30 scenes.)

# %% tags=["nbval-ignore-output"]
import textwrap

long_scenes = ShapesWorld(120 if runtime.MODE == "tiny" else 30, seed=29, split="test").scenes
long_prompts = llava.instruction_prompts(long_scenes)
start = time.perf_counter()
long_answers = llava.answer_questions(model, processor, [long_scenes[i].render() for i, *_ in long_prompts],
                                      [question for _, _, question, _ in long_prompts], max_new_tokens=80)
print(f"{len(long_prompts)} prompts answered in {time.perf_counter() - start:.0f} s")
long_scores = {"the model": llava.fact_check_answers(long_scenes, long_prompts, long_answers),
               "the writer (ceiling)": llava.fact_check_answers(long_scenes, long_prompts,
                                                                [reference for *_, reference in long_prompts])}
print(f"{'answers of':<22}{'type':<19}{'right':>6}{'false claim':>12}{'claims':>7}{'words':>6}")
for who, by_type in long_scores.items():
    for kind, scores in by_type.items():
        print(f"{who:<22}{kind:<19}{scores.right:6.0%}{scores.contradicted:12.0%}{scores.claims:7.1f}"
              f"{scores.words:6.1f}")
for (i, kind, question, _), answer in list(zip(long_prompts, long_answers))[:3]:
    problems, checked = llava.fact_check(long_scenes[i], question, answer)
    verdict = problems[0] if problems else ("no checkable claim" if not checked else f"{checked} claims, all true")
    print(f"\n[{kind}] {long_scenes[i].caption}\n  Q: {question}\n  A: {answer}")
    print(textwrap.fill(f"checker: {verdict}", 95, initial_indent="  ", subsequent_indent="    "))
if runtime.MODE == "tiny":
    ceiling, tiny_scores = long_scores["the writer (ceiling)"], long_scores["the model"]
    claims.holds("the writer's answers are all right", all(s.right == 1.0 for s in ceiling.values()))
    claims.at_most("the model's best right share over the three types", max(s.right for s in tiny_scores.values()), 0.6)
    claims.at_least("the model's answers with a false claim, all types", np.mean(
        [s.contradicted for s in tiny_scores.values()]), 0.5)
    claims.at_most("the model's description length over the writer's", tiny_scores["detail"].words
                   / ceiling["detail"].words, 0.5)

# %% [markdown]
# The tiny LLaVA has not learned to do what the records ask. Its answers are a sentence or two of
# ShapesWorld words, often broken ("is lies in the left"), its descriptions less than half as long
# as the writer's, and more than half of its answers say something the boxes contradict. Some of
# those counted right are not good answers either: the checker verifies facts, so a garbled
# sentence with one true colour in it passes. Read the examples with the table. The reason is in
# the record at the top of this section: the records are 8% of the batches of the last part of
# stage 2, the rest being one-word and compact questions, and a language model of about a million
# parameters that read 600 steps of text does not learn to write a paragraph from about 150 batches
# of examples. So the heading of this section says what the model was trained on mostly. Whether
# the records taught it anything at all is the first question for the next table, which scores a
# rebuild of the model and its variants the same way.
#
# ### What the tiny recipe adds, measured
#
# To see what each departure from LLaVA's recipe buys, the pipeline was run again up to the end of
# the focus phase, keeping the weights after stage 1, after the all-kinds warm-up and after the
# focus phase. From them, the last part of stage 2 was retrained for the shipped model's 2,000
# steps with one part of the recipe undone at a time, and each run was scored like the shipped
# model: one-word QA on the 60 held-out scenes (all questions, and the shape questions), POPE's F1
# and yes-ratio on 200 (random negatives), and, in a second table, the long answers on the 120
# scenes above (right per type, the share with a false claim averaged over the types, and the words
# per description; the shipped model's are in the table of the previous subsection). The line
# *recipe* is the rebuild's own last part, the one to compare with. The column *compact* counts the
# compact-question steps each run had before its last part (the warm-ups and the focus phase stop
# at a gate, so the rebuild's counts differ from the shipped run's). The shipped line is its
# training record, measured on the float32 weights before they were saved in float16; the held-out
# cell above, on the float16 file, prints a slightly different accuracy. One run each, and the
# noise is large: a long-answer share rests on 40 answers (the last line), and the one repeat of
# the whole recipe, shipped against rebuild, differs by 11 points of QA. Read only large gaps.

# %%
tiny_folder = Path(zoo.path("llava", mode="tiny"))  # the tiny model's records, in either mode
tiny_record = json.loads((tiny_folder / "training.json").read_text())
llava_ablations = json.loads((tiny_folder / "ablations.json").read_text())
long_kinds = ("conversation", "detail", "complex_reasoning")
compact_phases = ("stage 2 colour warm-up", "stage 2 relation warm-up", "stage 2 warm-up", "stage 2 focus")
labels = {"no instruction records": "no records"}  # shorter, so that the tables fit the page
print(f"{'':<18}{'compact':>8}{'QA':>7}{'QA':>7}{'POPE':>6}{'POPE':>6}")
print(f"{'run':<18}{'steps':>8}{'all':>7}{'shape':>7}{'F1':>6}{'yes':>6}")
print(f"{'shipped':<18}{sum(tiny_record['steps'][k] for k in compact_phases):>8,}"
      f"{tiny_record['qa_accuracy']['all']:7.1%}{tiny_record['qa_accuracy']['shape']:7.1%}"
      f"{tiny_record['pope']['f1']:6.2f}{tiny_record['pope']['yes_ratio']:6.2f}")
for name, entry in llava_ablations.items():
    print(f"{labels.get(name, name):<18}{sum(entry['compact steps before'].values()):>8,}{entry['qa']['all']:7.1%}"
          f"{entry['qa']['shape']:7.1%}{entry['pope f1']:6.2f}{entry['pope yes-ratio']:6.2f}")
print(f"\n{'long answers':<18}{'right':>7}{'right':>7}{'right':>7}{'false':>7}{'words':>7}")
print(f"{'run':<18}{'conv.':>7}{'detail':>7}{'reason':>7}{'claim':>7}{'detail':>7}")
for name, entry in llava_ablations.items():
    long = entry["instructions"]
    print(f"{labels.get(name, name):<18}" + "".join(f"{long[k]['right']:7.0%}" for k in long_kinds)
          + f"{np.mean([long[k]['contradicted'] for k in long_kinds]):7.0%}{long['detail']['words']:7.1f}")
n_long = llava_ablations["recipe"]["instructions"]["detail"]["n"]
print(f"each long-answer share rests on {n_long} answers: its 95% interval reaches "
      f"±{196 * (0.25 / n_long) ** 0.5:.0f} points")

# %% [markdown]
# ```{admonition} How this differs from LLaVA, and why
# :class: note
# - **A patch lesson for the vision tower.** LLaVA keeps CLIP's tower frozen from the first step.
#   Ours learned from one caption per scene, and a probe on the patch under an object read its
#   shape for about two objects in three. So the tower's lower layers trained on dense per-patch
#   targets, then froze; after that the same probe reads nearly every shape (the probe earlier in
#   this section). That is close to guaranteed, since the lesson trained the tower on this very
#   label, and it is not an end-to-end ablation: running the whole pipeline without the lesson was
#   not done.
# - **A language model that has read ShapesWorld, not the web.** 600 steps of text stand in for an
#   LLM's pretraining. Not ablated: without them there is no language to align the pictures to.
# - **Compact questions before the last part of stage 2.** LLaVA asks its questions in the chat
#   layout only. Ours opens stage 2 with questions whose answer comes right after the object's
#   name: colour alone, relations alone, every kind, then the focus phase, each until a gate on
#   held-out scenes (6,050 steps in the rebuild). Started straight from stage 1, the last part
#   (whose batches are still half compact questions) answers 54.7% of the questions and reaches a
#   POPE F1 of 0.56, against 97.9% and 0.99. That run had 6,050 fewer steps; one with as many steps
#   in all was not made, and the aside tells how the phases were found.
# - **The focus phase.** Started from the all-kinds warm-up instead, the last part answers 85.9%
#   of the questions against the recipe's 97.9% (shape 76.5%), and its POPE F1 falls from 0.99 to
#   0.75 as it says yes too often (yes-ratio 0.67). That run also had 2,250 fewer compact steps,
#   and whether the phase's weighting beats as many more all-kinds steps was not tested.
# - **Half of the last part's batches compact.** Without them the rebuild answers 98.5% of the
#   questions (recipe 97.9%), so one-word QA no longer needs them in this setup. (The aside below
#   says the look-up was forgotten without them; that happened in an earlier setup.) Its long
#   answers are not comparable: without compact batches the records' share of the batches doubles.
# - **Mostly one-word questions; the generated records are 8% of the last part.** LLaVA-1 trained
#   stage 2 on its 158K generated records alone. LLaVA-1.5's 665K mix keeps them, about a quarter
#   of it, beside ShareGPT's text conversations, VQA and OCR data sets under the one-word prompt,
#   multiple choice, short captions and region data. Without the records, one-word QA is
#   unchanged (97.8%), but the model answers every long prompt in about one word (1.3 words per
#   description): below the score's three-word floor, so none counts as right, and only 9% make
#   a false claim; they are not wrong so much as not answers. With the records it writes
#   sentences, 31.7 words per description, and 55%, 30% and 38% of its conversation, description
#   and reasoning answers count as right, while half carry a false claim. The records taught the
#   form of a long answer, not yet its content.
# - **The rebuild is not the shipped run.** The warm-ups and the focus phase stop at gates, and the
#   rebuild passed them at other steps (the *compact* column). Its last part answers 97.9% of the
#   questions, shape 94.8%, where the shipped model answers 86.5%, shape 50.4%: same script, same
#   seeds, and a different path through the gates. We do not know what changed the path
#   (floating-point sums differ between machines and library versions), only that the curriculum
#   is sensitive to it. The shipped model stays because chapter 6's FROMAGe is trained on its
#   language model.
# - **Six blocks in the language model.** Kept from the trials in the aside; not ablated in this
#   edition.
# - **Size.** About 1.1M parameters trained in stage 2 (the record above) and 64-pixel pictures,
#   against LLaVA-1.5-7B's 7B; it is what lets the model train on a CPU (69 minutes, the record
#   at the top of this section).
# - **The same as LLaVA-1.5:** patch features of the tower's penultimate layer without [CLS]; a
#   two-layer GELU projector; stage 1 training only the projector, on captions, and stage 2 the
#   projector and the language model; the label mask; the chat template with the image first; the
#   one-word prompt.
# ```
#
# ```{admonition} The compact curriculum: how it was found
# :class: dropdown
# The compact phases came out of trials that failed, told here in the order they happened. Those
# runs were not kept, so this aside has no numbers; the box above has the ones that were measured.
#
# **A compact warm-up.** In the chat layout the word that names the object ("circle") sits more
# than a dozen tokens before the answer, behind "?", the request for a one-word answer and
# "ASSISTANT:". Trained on that layout alone, the model learned to name *some* colour in the scene
# and stayed there for thousands of steps: it never found the two-step look-up (carry "circle" to
# the answer position, then find the circle's patches). Mixing every kind of question from the
# first step stalled it in the same way. So stage 2 opens with a curriculum of compact questions,
# the patches followed by "What colour is the circle" and the answer right after the object's
# name: colour questions alone until the look-up forms, then relations alone (mixed with the other
# kinds from the start they stayed at chance), then every kind, then the kinds still answered
# wrongly most often.
#
# **Keeping the look-up.** In an earlier setup (a four-block language model, the image after the
# question) the look-up did not simply carry over to the chat layout: trained on chat questions
# alone, the model forgot the compact form and answered in the chat layout little better than
# before. So half of the batches of the last part of stage 2 stayed compact, the image came first
# in both forms (LLaVA-1.5's layout, so a compact and a chat question start alike), and the
# language model got six blocks, leaving room for the extra step from the answer position back to
# the object's name. In the setup that came out of it, one-word QA no longer needs the compact
# batches (the box above). A big LLM arrives with such look-ups already learned from text.
# ```
#
# ## 4.6 Beyond the projector
#
# ### CogVLM: a visual expert in every layer
#
# LLaVA's alignment is *shallow*: image features enter only at the input, and the LLM processes
# them with the same weights as text (tuned in stage 2, but shared by both kinds of token). CogVLM adds a **visual expert** to each
# transformer block: image tokens get their own QKV matrices $W_I^Q, W_I^K, W_I^V$ and their own
# FFN, text tokens keep the LLM's frozen ones, and all tokens still attend to each other under
# one causal mask:
#
# $$\mathrm{FFN}(X) = \mathrm{concat}\big(\mathrm{FFN}_I(X_I),\ \mathrm{FFN}_T(X_T)\big).$$
#
# `beyond_projector.VisualExpertBlock` is one such block. Started as a copy of the text weights, it
# computes the frozen block's output (to float rounding); only training moves it away.

# %%
torch.manual_seed(0)
block = beyond_projector.VisualExpertBlock(dim=64, heads=4, hidden=256)
x = torch.randn(2, 10, 64)
is_image = torch.zeros(2, 10, dtype=torch.bool)
is_image[:, 1:5] = True  # positions 1-4 hold image tokens
print("output shape:", tuple(block(x, is_image).shape))
block.copy_text_to_image()
claims.close("the visual-expert block with copied weights vs the plain block", block(x, is_image), block.plain_forward(x),
             atol=1e-5)
print("expert = copy of text weights: the same output as the plain block (to within 1e-5)")
expert = sum(p.numel() for m in (block.qkv_image, block.ffn_image) for p in m.parameters())
print(f"trainable expert parameters per block: {expert:,} of {sum(p.numel() for p in block.parameters()):,}")

# %% [markdown]
# The price: the expert roughly doubles the parameters of every block (CogVLM-17B's ten billion
# vision parameters are these experts together with its EVA2-CLIP-E image encoder, beside a 7B
# LLM), but the text path is untouched, so the LLM's language skills cannot degrade.
#
# ### SPHINX: mixing weights and encoders
#
# SPHINX trains a model on one kind of data, $\theta_{a}$, trains a copy of it further on another
# kind, $\theta_{b}$, and then simply averages the two:
#
# $$\theta_{mix} = \beta\, \theta_a + (1 - \beta)\, \theta_b .$$
#
# The hope is a model with both skills, without training on both kinds of data at once. The tiny
# checkpoint ships a second copy of stage 2, trained from the same stage-1 weights on the
# instruction records only (so our two models branch from a common start, where SPHINX's second
# grows out of the first): long answers, no one-word QA. So the two models have different
# skills. The model of 4.5 answers one-word questions; the variant writes descriptions that open,
# as the records' detailed descriptions do, with a sentence that counts the shapes. For several
# $\beta$ we measure both skills on 20 held-out scenes: one-word QA accuracy on their questions, and
# the share of "Describe the image in detail." answers that open in the records' style *and* give
# the right number of shapes (so the score measures the format as well as the counting). As a
# rough measure of how far apart the two models are, we also print the distance between their
# language models' weights relative to the size of those weights.

# %% tags=["nbval-ignore-output"]
import re

from safetensors.torch import load_file
from utils.instruct.context import number_word


def counts_shapes_right(description, scene):
    """Does the first sentence open as the records' descriptions do and give the right number of shapes?"""
    first = description.split(".")[0].lower()
    if not re.match(r"(the image shows|there are|there is only one|this picture contains)\b", first):
        return False
    n = len(scene.objects)
    return "single" in first or "only one" in first if n == 1 else number_word(n) in first.split()


variant_file = Path(model_path) / "variant_descriptions.safetensors"
if variant_file.exists():  # (the float32 copies below are for the tiny model: 7B parameters would need 26 GiB)
    theta_a = {k: v.float() for k, v in model.state_dict().items()}
    theta_b = dict(theta_a, **{k: v.float() for k, v in load_file(str(variant_file)).items()})
    theta_b["lm_head.weight"] = theta_b["model.language_model.embed_tokens.weight"]  # tied
    mixer = LlavaForConditionalGeneration(config).to(device).eval()
    mixer.config.image_first = getattr(config, "image_first", True)
    betas, accuracy, describes = [0.0, 0.25, 0.5, 0.75, 1.0], [], []
    sweep_scenes = test_scenes[:20]
    for beta in betas:
        mixer.load_state_dict(beyond_projector.mix_state_dicts(theta_a, theta_b, beta))
        mixer.to(dtype)
        accuracy.append(llava.qa_accuracy(mixer, processor, sweep_scenes)["all"])
        said = llava.answer_questions(mixer, processor, [s.render() for s in sweep_scenes],
                                      ["Describe the image in detail."] * len(sweep_scenes), max_new_tokens=40)
        describes.append(np.mean([counts_shapes_right(d, s) for d, s in zip(said, sweep_scenes)]))
        print(f"beta = {beta:.2f}: QA accuracy {accuracy[-1]:6.1%}; record-style descriptions with the right count "
              f"{describes[-1]:6.1%}; e.g. {said[0][:60]!r}")
    claims.at_most("QA accuracy at beta = 0 (the variant never learned one-word answers)", accuracy[0], 0.05)
    claims.at_least("QA accuracy at beta = 1 (the model of 4.5)", accuracy[-1], 0.80)
    claims.holds("QA accuracy grows with beta", all(a <= b for a, b in zip(accuracy, accuracy[1:])))
    claims.at_least("descriptions that count right at beta = 0", describes[0], 0.9)
    claims.at_most("descriptions that count right at beta = 1", describes[-1], 0.2)
    claims.at_most("the better of the two skills at beta = 0.5", max(accuracy[2], describes[2]), 0.5)
    stage2_steps = sum(n for phase, n in recipe["steps"].items() if phase.startswith("stage 2"))
    record_steps = recipe["steps"]["stage 2"] * (1 - recipe["compact_share"]) * (1 - recipe["qa_share"])
    print(f"stage-2 steps from the shared start: the model of 4.5 {stage2_steps:,} (about {record_steps:.0f} of "
          f"them on records), the variant {recipe['steps']['variant']:,} (all on records); text pretraining "
          f"before both: {recipe['steps']['text pretraining']:,} steps")
    lm_keys = [k for k in theta_a if k.startswith("model.language_model.")]
    gap = torch.sqrt(sum(((theta_a[k] - theta_b[k]) ** 2).sum() for k in lm_keys))
    size = torch.sqrt(sum((theta_a[k] ** 2).sum() for k in lm_keys))
    print(f"|theta_QA - theta_records| / |theta_QA| over the language model: {gap / size:.2f}")
    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.plot(betas, accuracy, marker="o", label="one-word QA accuracy")
    ax.plot(betas, describes, marker="s", label="record-style descriptions, right count")
    ax.set_xlabel(r"$\beta$ (weight of the QA-tuned model)")
    ax.set_ylabel("share right (20 held-out scenes)")
    ax.set_title(r"$\theta_{mix} = \beta\,\theta_{QA} + (1 - \beta)\,\theta_{records}$")
    ax.set_ylim(0, 1.05)
    ax.legend()
    plt.show()
else:
    print("full mode: no second checkpoint to mix; the tiny model's files include one")

# %% [markdown]
# Each end keeps its own skill: at $\beta = 0$ the variant describes and cannot answer in a word; at
# $\beta = 1$ the model of 4.5 answers and has lost the records' descriptions (only its last 2,000
# stage-2 steps saw records at all, about 150 of them, the second line from the bottom). In between
# is not the hoped-for mixture. The description skill is gone already at $\beta = 0.25$, while QA
# climbs slowly: 29% at $\beta = 0.5$, 71% at $\beta = 0.75$. At $\beta = 0.5$ the descriptions
# are word salad.
#
# Averaging can only give both skills when the straight line between the two models keeps the
# loss low for both, as it does when they stay in one basin around a strong common start. The
# "model soups" of Wortsman et al. (2022) average copies of one big pretrained model fine-tuned
# with different settings on the same task. SPHINX pre-trains its LLM on image captions from the
# web (LAION-400M's alt-texts), trains a copy further on model-written captions (LAION-COCO), and
# averages the two: one task, two caption styles, two models that stay close. Ours are far apart:
# the two language models differ by 0.87 of their own size (the last line), and their common start
# had seen only 600 steps of text. We have not measured the loss along the line, so take the basin
# as the likely reason rather than a shown one. What the sweep does show is the trade-off mixing is
# for, and that it can fail outright.
#
# Weights are one of three things SPHINX mixes. It also mixes **tasks**, training one model on
# captions, VQA, grounding and more at once, and **visual embeddings**: the patch features of three
# frozen encoders (CLIP's ViT-L/14, OpenCLIP's ConvNeXt-XXL and DINOv2) are concatenated along the
# channel axis before one projector (ConvNeXt's coarser feature map is first brought to the ViTs'
# grid), so the LLM gets the semantics of one encoder and the fine detail of another, and the 32
# query outputs of a BLIP-2 Q-Former, projected separately, join them in the sequence.
#
# The embedding mix is easy to try in miniature. The course has two small towers that saw the same
# kind of 64-pixel pictures for different reasons: chapter 2's CLIP tower learned from captions,
# chapter 1's ViT learned to name the one object of a one-object picture (15 colour-shape classes;
# it never saw the probe's scenes of two or three objects). Both cut a picture into the same 8 x 8
# grid of patches, so their features can be stacked channel by channel, patch by patch. The cell
# repeats 4.5's centre-patch probe on each tower alone and on the stack (both towers as they were
# shipped, before any patch lesson; the tiny ones in either mode), then puts the stack through one
# untrained linear projector to see what the LLM would be handed.

# %% tags=["nbval-ignore-output"]
from transformers import ViTForImageClassification

mix_train, mix_test = ShapesWorld(1500, seed=40, split="train"), ShapesWorld(300, seed=41, split="test")
mix_towers = {
    "CLIP tower (ch. 2)": CLIPModel.from_pretrained(zoo.path("clip", mode="tiny"), dtype=torch.float32).vision_model,
    "ViT (ch. 1)": ViTForImageClassification.from_pretrained(zoo.path("vit", mode="tiny"), dtype=torch.float32).vit,
}
mix_features = {name: [patches.patch_features(tower.eval(), w.images() * 2 - 1, batch_size=256) for w in (mix_train, mix_test)]
                for name, tower in mix_towers.items()}
mix_features["both, stacked"] = [torch.cat([f[k] for f in mix_features.values()], dim=-1) for k in range(2)]
mix_probe = {}
for name, (train_features, test_features) in mix_features.items():
    mix_probe[name] = patches.object_probe(train_features, mix_train.scenes, test_features, mix_test.scenes)
    print(f"{name:<20}features {tuple(test_features.shape)}: colour {mix_probe[name]['colour']:.1%}, "
          f"shape {mix_probe[name]['shape']:.1%}")
stacked = mix_features["both, stacked"][1]
mix_projector = torch.nn.Linear(stacked.shape[-1], config.text_config.hidden_size)
with torch.no_grad():
    tokens = mix_projector(stacked)
    widths = "+".join(str(f[1].shape[-1]) for name, f in mix_features.items() if name in mix_towers)
    print(f"stack: {stacked.shape[1]} patches x ({widths}) channels -> one projector -> {tokens.shape[1]} tokens "
          f"of width {tokens.shape[-1]} (the LM's)")
    print(f"one tower's tokens after the other's would give {2 * stacked.shape[1]} tokens instead")
gain = mix_probe["both, stacked"]["shape"] - max(mix_probe[name]["shape"] for name in mix_towers)
print(f"shape: stack minus the better tower {gain * 100:+.1f} points")
alone = [mix_probe[name]["shape"] for name in mix_towers]
claims.at_least("each tower's colour probe", min(p["colour"] for p in mix_probe.values()), 0.95)
claims.at_most("the better tower's shape probe", max(alone), 0.75)
claims.at_least("the stack's shape probe over the better tower's", gain, 0.03)
taught = tower_probe.get("LLaVA's tower (after the lesson)")  # tiny mode
if taught:
    print(f"for comparison, 4.5's LLaVA tower after its patch lesson: shape {taught['shape']:.1%}")

# %% [markdown]
# Each tower alone reads every object's colour and the shape of about two objects in three; the
# stack reads shapes better than either (the gain is printed, and the cell asks for at least 3
# points). A probe on the stack can do anything a probe on one tower can, so the gain means each
# tower holds something about shape that the other's features do not hand a linear read-out.
# Whether that comes from their different training or simply from being two different networks, a
# stack of two towers trained the same way with different seeds would tell; we have not run it.
# That is SPHINX's argument in small. The stack costs the LLM no extra tokens; its cost is a second
# encoder to run. The patch lesson of 4.5 did far more for one tower (the last line), but it
# trained the tower on this very label, while the stack adds its points with no labels at all.
#
# For high resolution, SPHINX feeds the encoders the whole picture shrunk to their 224-pixel
# input *and* the four sub-images of a 448-pixel version, each at full detail: every view costs
# its own set of tokens. Exercise 4.4 builds such views and counts what they cost.
#
# ### Tools: a program that calls the models
#
# Visual ChatGPT and ViperGPT take another route to complex questions: instead of training one
# model to answer them, an LLM writes a program that calls simpler vision tools. The question
# "What colour is the shape to the left of the square?" was never in the training data. As a
# program it becomes: *find* the objects, *ask* where each one is relative to the square, *ask*
# the colour of the one on its left. Our tools are the tiny LLaVA itself (`beyond_projector.ShapeTools`):
# `find` asks the 15 existence questions, `ask` any one-word question. We compare the program
# with asking the model the composed question directly, on scenes that have an answer.

# %% tags=["nbval-ignore-output"]
tools = beyond_projector.ShapeTools(model, processor)
cases = []
for s in ShapesWorld(400, seed=25, split="test").scenes:
    square = next((o for o in s.objects if o.shape == "square"), None)
    left = [o for o in s.objects if square is not None and o is not square and relation(o, square) == "to the left of"]
    if len(left) == 1:
        cases.append((s, left[0].colour))
    if len(cases) == (20 if runtime.MODE == "tiny" else 10):  # full mode: each program calls the 7B model ~20 times
        break
program = [beyond_projector.colour_left_of(tools, s.render(), "square") for s, _ in cases]
direct = [llava.first_word(a) for a in llava.answer_questions(
    model, processor, [s.render() for s, _ in cases],
    [llava.short_question("What colour is the shape to the left of the square?")] * len(cases))]
truth = [colour for _, colour in cases]
program_accuracy, direct_accuracy = np.mean([p == t for p, t in zip(program, truth)]), np.mean([d == t for d, t in zip(direct, truth)])
print(f"{len(cases)} scenes; program: {program_accuracy:.0%} right with {tools.calls / len(cases):.1f} model calls "
      f"per question; direct question: {direct_accuracy:.0%} right")
if runtime.MODE == "tiny":
    claims.at_least("the program's accuracy", program_accuracy, 0.8)
    claims.at_most("the direct question's accuracy (the text says the model cannot answer it)", direct_accuracy, 0.2)
    claims.at_least("model calls per question the program makes", tools.calls / len(cases), 5)

# %% [markdown]
# The program pays with many more model calls but turns a question the model cannot answer
# into several it can. ViperGPT writes such programs with a code LLM, against an API of
# `find`, `simple_query`, `exists` and friends.
#
# ## 4.7 Full mode: LLaVA-1.5 on real photos
#
# On a GPU with `MMLLM_MODE=full`, section 4.1 loaded `llava-hf/llava-1.5-7b-hf` at a pinned
# revision, and the cell below asks it about a photo. Offline the same code runs the tiny model
# on a ShapesWorld scene.

# %%
if runtime.MODE == "full":
    from utils import images
    photo, question = images.sample_image("astronaut"), "What is the person in this photo wearing?"
else:  # the tiny model was taught one-word answers with LLaVA-1.5's request for them, so we ask that way
    scene = make_scene(3, seed=26, split="test")
    photo, question = scene.render(), llava.short_question("What colour is the circle?")
answer = llava.answer_questions(model, processor, [photo], [question], max_new_tokens=60 if runtime.MODE == "full" else 6)[0]
print(f"Q: {question}\nA: {answer}")
if runtime.MODE == "tiny":
    circle = next(o for o in scene.objects if o.shape == "circle")
    claims.holds(f"the tiny LLaVA names the circle's colour ({circle.colour})", llava.first_word(answer) == circle.colour)
fig = plotting.show_images([photo], [plotting.wrap(answer, 40)], columns=1, size=3.0)

# %% [markdown]
# ## Summary
# - LLaVA = CLIP patch features (penultimate layer, no [CLS]) + a projector (linear, then a
#   two-layer GELU MLP in 1.5) + an LLM; `<image>` expands to one position per patch.
# - Stage 1 trains only the projector on captions; stage 2 trains projector and LLM on
#   instructions. Labels are -100 everywhere except the assistant's answers and their `</s>`.
# - Instruction data can be written from captions and boxes alone, by an LLM or by rules; either
#   way it needs a validator for its form and a fact checker for its content.
# - A model is judged on held-out questions and on hallucination (POPE's yes-ratio and F1).
# - The tiny model needed features that say what is where and a curriculum of compact questions
#   ending in a focus phase: reminders of what a big pretrained encoder and LLM bring for free. The
#   generated records, 8% of its last stage-2 batches, taught it the form of a long answer but not
#   its content (the table in 4.5).
# - Beyond the projector: deep fusion with a visual expert (CogVLM), weight and encoder mixing
#   (SPHINX), and programs that call vision tools (ViperGPT, Visual ChatGPT).
#
# ## Where this goes next
# Chapter 5 turns the direction around: instead of reading images into a language model, it
# generates images from noise, steered by CLIP's text encoder.
#
# ## Further reading
# - H. Liu, C. Li, Q. Wu, Y. J. Lee, *Visual Instruction Tuning* (LLaVA), 2023, [arXiv:2304.08485](https://arxiv.org/abs/2304.08485).
# - H. Liu, C. Li, Y. Li, Y. J. Lee, *Improved Baselines with Visual Instruction Tuning* (LLaVA-1.5), 2023, [arXiv:2310.03744](https://arxiv.org/abs/2310.03744).
# - W. Dai et al., *InstructBLIP: Towards General-purpose Vision-Language Models with Instruction Tuning*, 2023, [arXiv:2305.06500](https://arxiv.org/abs/2305.06500).
# - Y. Li et al., *Evaluating Object Hallucination in Large Vision-Language Models* (POPE), 2023, [arXiv:2305.10355](https://arxiv.org/abs/2305.10355).
# - W. Wang et al., *CogVLM: Visual Expert for Pretrained Language Models*, 2023, [arXiv:2311.03079](https://arxiv.org/abs/2311.03079).
# - Z. Lin et al., *SPHINX: The Joint Mixing of Weights, Tasks, and Visual Embeddings for Multi-modal Large Language Models*, 2023, [arXiv:2311.07575](https://arxiv.org/abs/2311.07575).
# - M. Wortsman et al., *Model soups: averaging weights of multiple fine-tuned models improves accuracy without increasing inference time*, 2022, [arXiv:2203.05482](https://arxiv.org/abs/2203.05482).
# - D. Surís, S. Menon, C. Vondrick, *ViperGPT: Visual Inference via Python Execution for Reasoning*, 2023, [arXiv:2303.08128](https://arxiv.org/abs/2303.08128).
# - C. Wu et al., *Visual ChatGPT: Talking, Drawing and Editing with Visual Foundation Models*, 2023, [arXiv:2303.04671](https://arxiv.org/abs/2303.04671).
#
# ## Exercises
# Each exercise has a stub that raises `NotImplementedError` and a checker under it. Replace the
# stub with your code and re-run the two cells. Worked answers are in
# `solutions/04_llava_solutions.ipynb`.
#
# **Exercise 4.1 -- spatial questions from boxes.** Write `spatial_questions(boxes, margin)`: for
# boxes `[(label, (x0, y0, x1, y1)), ...]` (normalised, y down), one turn
# `("Where is the {a} relative to the {b}?", "The {a} is {relation} the {b}.")` per ordered pair
# of different boxes, the relation read from the box centres along the axis where they differ
# more ("to the left of", "to the right of", "above", "below"), skipping pairs whose $|dx|$ and
# $|dy|$ differ by less than `margin`.

# %%
from utils import checks


def spatial_questions(boxes: list, margin: float = 0.05) -> list[tuple[str, str]]:
    raise NotImplementedError


checks.check_spatial_questions(spatial_questions)

# %% [markdown]
# **Exercise 4.2 -- the label mask.** Write `mask_labels(input_ids, marker, eos_id)`: for one
# tokenised conversation (a LongTensor), return labels that hold the token id from right after
# each occurrence of the whole assistant `marker` up to and including the next `eos_id`, and
# -100 everywhere else.

# %%
def mask_labels(input_ids: torch.Tensor, marker: list[int], eos_id: int) -> torch.Tensor:
    raise NotImplementedError


checks.check_mask_labels(mask_labels)

# %% [markdown]
# **Exercise 4.3 -- extend the fact checker.** Subclass `instruct.FactChecker` with a check for
# region claims such as "in the top left part of the picture": add `"regions"` to `CHECKS` and
# write `check_regions(self, sentence)`. Use `checks.REGION_PATTERN` to find the claim; it is
# about the sentence's first mention (`self._one(sentence.mentions[0])`), is skipped in negated
# sentences, and is wrong when the object's centre is not in the named half ('left': cx < 0.5,
# 'top': cy < 0.5). Count each claim in `self.checked["region"]` and start each problem with
# `"region:"`.

# %%
class RegionChecker(instruct.FactChecker):
    CHECKS = instruct.FactChecker.CHECKS + ("regions",)

    def check_regions(self, sentence) -> list[str]:
        raise NotImplementedError


checks.check_region_checker(RegionChecker)

# %% [markdown]
# **Exercise 4.4 -- more pixels, more tokens.** LLaVA-1.5 sees every picture at 336 pixels, so
# small objects and small print are blurred to a few pixels before the language model reads
# anything. SPHINX and LLaVA-NeXT ("AnyRes") cut a larger image into tiles, encode each tile as an
# image of its own, and add a *global view*, the whole image shrunk to the encoder's size, which keeps the layout. Write
# `sub_images(image, grid, size)`: for a PIL image of $W \times H$ pixels and a grid of
# $g \times g$ tiles, a list of $g^2 + 1$ PIL images of `size` x `size` pixels. First the global
# view, `image.resize((size, size))`; then the tiles in row-major order (the top row from left to
# right, then the next row), tile $(r, c)$ being the box from $(\lfloor cW/g \rfloor,
# \lfloor rH/g \rfloor)$ to $(\lfloor (c+1)W/g \rfloor, \lfloor (r+1)H/g \rfloor)$, resized the
# same way. Raise a `ValueError` for a grid or a size below 1, and for a grid with more tiles per
# side than the image has pixels. Then count: each view becomes $(\text{size}/P)^2$ image tokens.
# Predict first: how many tokens does one picture cost LLaVA (one view at 224 pixels, $P = 14$),
# LLaVA-1.5 (one view at 336), and a $2 \times 2$ grid with its global view at 336? How much of
# LLaVA-1.5's context (`big_config.text_config.max_position_embeddings`) does each leave for text?

# %%
from PIL import Image


def sub_images(image: Image.Image, grid: int, size: int) -> list[Image.Image]:
    raise NotImplementedError


checks.check_sub_images(sub_images)

# %% [markdown]
# **Exercise 4.5 -- does it look? (an experiment).** A held-out accuracy says the model answers
# well, not how it uses its image tokens. Change the tokens and watch the answers. Write
# `ablated_answers(model, processor, scenes, how)`: ask every question of every scene (scene by
# scene, in the order of `scene.questions`, each as `llava.short_question(q.text)` through
# `llava.answer_questions`) and return the answers, with the image tokens changed by `how`:
# `"intact"` leaves them alone; `"shuffled"` puts each image's $N$ tokens in the order
# `torch.randperm(N, generator=torch.Generator().manual_seed(0))`, the same for every image;
# `"mean"` replaces each of an image's $N$ tokens by the mean of its $N$ tokens; `"swapped"` asks
# scene $i$'s questions with the image of scene $(i + 1) \bmod n$. Anything else raises a
# `ValueError`. The place to change the tokens is the projector's output, $(B, N, D)$:
# `model.model.multi_modal_projector.register_forward_hook(fn)` calls `fn(module, inputs, output)`
# after each forward pass, and a tensor `fn` returns replaces the output. Remove the hook when you
# are done (`handle.remove()` in a `finally:` block). The checker reads the tokens the language
# model receives. Then measure the accuracy by question kind under each condition on 40 of section
# 4.5's held-out scenes (`test_scenes[:40]`; full mode keeps only 20 of them, so there you get 20).
# Predict first: which kinds of question survive the
# shuffle, which the mean token, and what would it mean if `"swapped"` scored as well as `"intact"`?

# %%
def ablated_answers(model, processor, scenes: list, how: str) -> list[str]:
    raise NotImplementedError


checks.check_ablated_answers(ablated_answers, model, processor)
