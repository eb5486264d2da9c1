"""The shipped tiny LLaVA: it loads as on Colab and meets chapter 4's targets."""

from __future__ import annotations

import json

import pytest
import torch

from utils import llava, zoo
from utils.shapes import ShapesWorld

TINY = zoo.entry("llava").local_dir


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(TINY)
    model = LlavaForConditionalGeneration.from_pretrained(TINY, dtype=torch.float32).eval()
    return model, processor


def test_shipped_checkpoint_is_small_and_records_its_recipe() -> None:
    assert zoo.own_size(TINY) <= 5 * 2**20
    recipe = json.loads((TINY / "training.json").read_text())
    assert recipe["qa_accuracy"]["all"] >= 0.80 and recipe["pope"]["f1"] >= 0.80
    assert (TINY / "variant_descriptions.safetensors").exists()


@pytest.mark.slow  # generates answers to hundreds of questions
def test_shipped_checkpoint_meets_the_chapter_targets(tiny) -> None:
    model, processor = tiny
    assert model.config.image_first is True  # LLaVA-1.5's layout
    qa = llava.qa_accuracy(model, processor, ShapesWorld(60, seed=23, split="test").scenes)
    assert qa["all"] >= 0.80, qa
    scores = llava.pope(model, processor, ShapesWorld(200, seed=24, split="test").scenes)
    assert scores.f1 >= 0.80 and 0.3 <= scores.yes_ratio <= 0.7, scores
