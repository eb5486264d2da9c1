"""The shipped CLIP tokenizer gives the real CLIP ids, offline.

The expected ids were produced by open_clip's reference `SimpleTokenizer` (open-clip-torch 3.3.0,
`open_clip/tokenizer.py` run on its own `bpe_simple_vocab_16e6.txt.gz`), wrapped in
<|startoftext|> = 49406 and <|endoftext|> = 49407.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, CLIPTokenizer

from utils import zoo

REFERENCE_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a puppy playing in the snow": [49406, 320, 6829, 1629, 530, 518, 2583, 49407],
    "A RED circle to the left of a small blue square.":
        [49406, 320, 736, 7117, 531, 518, 1823, 539, 320, 2442, 1746, 3999, 269, 49407],
    "it's 2 o'clock!": [49406, 585, 568, 273, 334, 262, 6716, 256, 49407],
    "café crème 🐱": [49406, 15304, 1075, 12138, 614, 22979, 49407],
    "  multiple   spaces\tand\nnewlines  ": [49406, 6470, 9006, 537, 1218, 3418, 49407],
    "ViT-B/32 @ 224x224 px": [49406, 35580, 268, 321, 270, 274, 273, 287, 273, 273, 275, 343, 273, 273, 275, 10262, 49407],
}


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(zoo.path("clip-tokenizer"))


def test_vocabulary_and_special_tokens(tokenizer: CLIPTokenizer) -> None:
    assert len(tokenizer) == 49408
    assert tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.model_max_length == 77


@pytest.mark.parametrize("text", list(REFERENCE_IDS))
def test_ids_equal_open_clip_reference(tokenizer: CLIPTokenizer, text: str) -> None:
    assert tokenizer(text)["input_ids"] == REFERENCE_IDS[text]


def test_auto_tokenizer_loads_the_same_folder(tokenizer: CLIPTokenizer) -> None:
    auto = AutoTokenizer.from_pretrained(zoo.path("clip-tokenizer"))
    assert type(auto).__name__ == "CLIPTokenizer"
    assert all(auto(t)["input_ids"] == ids for t, ids in REFERENCE_IDS.items())


def test_tokens_mark_word_ends(tokenizer: CLIPTokenizer) -> None:
    ids = tokenizer("a puppy playing in the snow")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<|startoftext|>", "a</w>", "puppy</w>", "playing</w>", "in</w>", "the</w>", "snow</w>", "<|endoftext|>"]


def test_padding_and_truncation_to_the_context_length(tokenizer: CLIPTokenizer) -> None:
    padded = tokenizer("a photo of a cat", padding="max_length", max_length=77)
    assert len(padded["input_ids"]) == 77 and padded["input_ids"][7:] == [49407] * 70
    assert sum(padded["attention_mask"]) == 7
    long = tokenizer("cat " * 200, truncation=True, max_length=77)["input_ids"]
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407


def test_rebuild_is_deterministic(tmp_path) -> None:
    from scripts import build_clip_tokenizer

    wheels = list(build_clip_tokenizer.WHEEL_CACHE.glob("open_clip_torch-*.whl"))
    if not wheels:
        pytest.skip("the open-clip-torch wheel is not cached (make assets downloads it)")
    built = build_clip_tokenizer.build(tmp_path / "clip-tokenizer")
    shipped = zoo.entry("clip-tokenizer").local_dir
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (built / name).read_bytes() == (shipped / name).read_bytes(), name
