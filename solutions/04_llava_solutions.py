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
