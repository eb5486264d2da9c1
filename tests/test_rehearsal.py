"""Full mode, rehearsed: the stand-ins keep the real checkpoints' interface, every notebook runs on them,
and the T4 plan is computed from the recorded configurations and the recorded workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import llava, rehearsal, t4plan, zoo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stand_ins() -> dict[str, Path]:
    return {name: rehearsal.stand_in(name) for name in rehearsal.BUILDERS}


def recorded(name: str, file: str = "config.json") -> dict:
    return rehearsal.recorded(zoo.entry(name).hub_id, file)


def test_every_full_mode_model_has_a_stand_in_and_recorded_configs() -> None:
    full_mode = {name for name, item in zoo.REGISTRY.items() if not item.tiny_only} | set(zoo.FULL_ONLY)
    assert set(rehearsal.BUILDERS) == full_mode - {"clip-tokenizer"}
    sources = (rehearsal.CONFIGS_DIR / "SOURCES.md").read_text()
    for file in rehearsal.CONFIGS_DIR.rglob("*.json"):
        if file.name != t4plan.WORKLOAD_FILE.name:
            assert file.relative_to(rehearsal.CONFIGS_DIR).as_posix() in sources, f"{file} has no line in SOURCES.md"


def test_llava_stand_in_keeps_the_interface(stand_ins: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoProcessor

    folder = stand_ins["llava"]
    real, config = recorded("llava"), AutoConfig.from_pretrained(folder)
    assert config.architectures == real["architectures"] and config.image_token_index == 32000
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)
    assert config.text_config.vocab_size == 32064 and config.vision_feature_layer == -2
    assert config.text_config.hidden_size == rehearsal.NARROW["hidden_size"]  # only the widths shrink
    processor = AutoProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    assert type(processor).__name__ == "LlavaProcessor" and len(tokenizer) == 32002
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>", "<image>", "<pad>")} == \
        {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001}
    assert processor.chat_template == recorded("llava", "chat_template.json")["chat_template"]
    prompt = processor.apply_chat_template([llava.user_message("What colour is the circle?")], add_generation_prompt=True)
    assert prompt == "USER: <image>\nWhat colour is the circle? ASSISTANT:"
    from utils.shapes import make_scene

    inputs = processor(images=make_scene(1, seed=0).render(), text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == 32000).sum()) == 576  # (336 / 14)^2 patches, [CLS] dropped
    assert inputs["input_ids"][0, 0] == 1  # <s>
    assert json.loads((folder / "generation_config.json").read_text()) == recorded("llava", "generation_config.json")


def test_blip2_clip_and_diffusion_stand_ins_keep_the_interface(stand_ins: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoProcessor, CLIPProcessor

    blip2 = AutoProcessor.from_pretrained(stand_ins["blip2"])
    config = AutoConfig.from_pretrained(stand_ins["blip2"])
    assert (config.num_query_tokens, config.image_token_index, config.vision_config.image_size) == (32, 50265, 224)
    assert config.text_config.eos_token_id == 50118  # BLIP-2's OPT stops at a newline
    ids = blip2(images=[torch.zeros(3, 224, 224)], text="Question: what? Answer:", return_tensors="pt")["input_ids"][0]
    assert int((ids == 50265).sum()) == 32 and int(ids[32]) == 2  # 32 image slots, then OPT's </s> as BOS
    clip = CLIPProcessor.from_pretrained(stand_ins["clip"])
    assert clip.tokenizer.eos_token_id == 49407 and AutoConfig.from_pretrained(stand_ins["clip"]).text_config.eos_token_id == 2
    assert clip(images=[torch.zeros(3, 64, 64)], return_tensors="pt")["pixel_values"].shape[-1] == 224
    sd = stand_ins["sd"]
    for part in ("unet", "vae"):
        assert list((sd / part).glob("*.fp16.safetensors")), f"Stable Diffusion's {part} ships an fp16 variant"
    assert json.loads((sd / "model_index.json").read_text()) == recorded("sd", "model_index.json")


def test_four_bit_loading_quantises_the_language_model_only(stand_ins: dict[str, Path]) -> None:
    pytest.importorskip("bitsandbytes")
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(stand_ins["llava"], dtype=torch.float16, device_map="cpu",
                                                          quantization_config=llava.four_bit_config())
    quantised = {name for name, m in model.named_modules() if type(m).__name__ == "Linear4bit"}
    assert quantised and all(name.startswith("model.language_model.layers.") for name in quantised)
    assert type(model.model.multi_modal_projector.linear_1).__name__ == "Linear"
    assert llava.count_parameters(model) == sum(p.numel() for p in LlavaForConditionalGeneration(model.config).parameters())


def test_the_plan_counts_parameters_from_the_recorded_configs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    counts = t4plan.parameter_counts("llava")
    assert 7.0e9 < counts["total"] < 7.1e9 and 300e6 < counts["image encoder"] < 310e6
    assert t4plan.parameter_counts("blip2")["total"] > 3.7e9
    # The numbers follow the file: a copy of LLaVA's config with 16 language-model layers halves them.
    copy = tmp_path / "configs"
    hub = zoo.entry("llava").hub_id
    (copy / hub).mkdir(parents=True)
    config = recorded("llava")
    config["text_config"]["num_hidden_layers"] = 16
    (copy / hub / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(rehearsal, "CONFIGS_DIR", copy)
    t4plan.meta_parts.cache_clear()
    t4plan.meta_model.cache_clear()
    try:
        smaller = t4plan.parameter_counts("llava")
    finally:
        monkeypatch.undo()
        t4plan.meta_parts.cache_clear()
        t4plan.meta_model.cache_clear()
    blocks = counts["language model"] - smaller["language model"]
    assert 16 * 200e6 < blocks < 16 * 205e6  # 16 Llama-7B blocks of 202M parameters each


@pytest.mark.parametrize("name", ["clip", "sd", "llava"])
def test_the_plan_costs_each_part_with_the_whole_models_weights(name: str) -> None:
    parts = sum(sum(t4plan.weight_bytes_of(name, part)) for part in t4plan.meta_parts(name))
    assert parts == t4plan.weight_bytes(name) > 0


def test_every_chapter_fits_the_t4_plan() -> None:
    plans = t4plan.plan()
    assert {p.chapter for p in plans} >= {f.stem for f in (ROOT / "chapters").glob("*.py")}
    for p in plans:
        assert p.fits, f"{p.chapter}: peak GPU {p.peak_gpu_gib:.1f} GiB, host {p.host_gib:.1f} GiB"
        assert p.gpu_minutes < 10, f"{p.chapter}: {p.gpu_minutes:.1f} minutes on a T4"
    llava_plan = next(p for p in plans if p.chapter == "04_llava")
    assert "llava" in llava_plan.models and llava_plan.weights_gib < 5


@pytest.mark.slow
def test_every_notebook_runs_in_the_rehearsal_and_the_workload_is_current(tmp_path: Path) -> None:
    """The whole rehearsal: every chapter and solution, top to bottom, on the stand-ins (about 3 minutes)."""
    workload = tmp_path / "workload.json"
    env = {**os.environ, "MMLLM_THREADS": "1"}
    result = subprocess.run([sys.executable, "scripts/rehearse.py", "--jobs", "2", "--workload", str(workload)],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert json.loads(workload.read_text()) == t4plan.workload(), (
        "the chapters' calls differ from configs/t4_workload.json, which the T4 plan costs: run "
        "`python scripts/rehearse.py --workload configs/t4_workload.json` and commit the file")


# --- Kosmos-2: full mode only (no tiny checkpoint), so the stand-in is all CI ever runs of it ------------------

KOSMOS2_IDS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 64001, "</doc>": 64002, "<image>": 64003,
               "</image>": 64004, "<phrase>": 64007, "</phrase>": 64008, "<object>": 64009, "</object>": 64010,
               "</delimiter_of_multi_objects/>": 64011, "<grounding>": 64012, "<patch_index_0000>": 64013,
               "<patch_index_1023>": 65036}  # as in the real tokenizer (added_tokens.json, checked against the Hub's)


def test_kosmos2_stand_in_keeps_the_interface(stand_ins: dict[str, Path]) -> None:
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from utils.shapes import make_scene

    folder = stand_ins["kosmos2"]
    model = Kosmos2ForConditionalGeneration.from_pretrained(folder, dtype=torch.float16)
    config, real = model.config, recorded("kosmos2")
    assert model.dtype == torch.float16 and config.architectures == real["architectures"]
    assert (config.vision_config.image_size, config.vision_config.patch_size, config.latent_query_num) == (224, 14, 64)
    assert config.text_config.vocab_size == 65037 and config.text_config.embed_dim == rehearsal.NARROW["hidden_size"]
    processor = AutoProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    assert type(processor).__name__ == "Kosmos2Processor" and len(tokenizer) == 65037
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in KOSMOS2_IDS} == KOSMOS2_IDS
    added = recorded("kosmos2", "added_tokens.json")
    assert all(tokenizer.convert_tokens_to_ids(t) == i for t, i in added.items())  # all 1,035 tags and patch indices
    inputs = processor(text="<grounding>An image of", images=make_scene(1, seed=0).render(), return_tensors="pt")
    ids, mask = inputs["input_ids"][0].tolist(), inputs["image_embeds_position_mask"][0].tolist()
    assert ids[:2] == [0, 64003] and ids[2:66] == list(range(4, 68)) and ids[66:68] == [64004, 64012]
    assert mask[2:66] == [1] * 64 and sum(mask) == 64  # the 64 image slots, between <image> and </image>
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    assert json.loads((folder / "generation_config.json").read_text()) == recorded("kosmos2", "generation_config.json")


def test_kosmos2_stand_in_generates_from_a_grounding_prompt(stand_ins: dict[str, Path]) -> None:
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from utils.shapes import make_scene

    model = Kosmos2ForConditionalGeneration.from_pretrained(stand_ins["kosmos2"], dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(stand_ins["kosmos2"])
    inputs = processor(text="<grounding>An image of", images=make_scene(2, seed=1).render(), return_tensors="pt")
    generated = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                               attention_mask=inputs["attention_mask"], image_embeds=None,
                               image_embeds_position_mask=inputs["image_embeds_position_mask"], max_new_tokens=8)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 8
    text = processor.batch_decode(generated, skip_special_tokens=True)[0]
    caption, entities = processor.post_process_generation(text)
    assert caption.startswith("An image of") and isinstance(entities, list)  # random weights: the words are noise


def test_kosmos2_post_processing_reads_patch_index_tokens(stand_ins: dict[str, Path]) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(stand_ins["kosmos2"])
    # The model card's output for its snowman photo, as token ids and back, as generate's output is decoded.
    written = ("<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863>"
               "</object> warming himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911>"
               "</object>.")
    ids = processor.tokenizer(written, add_special_tokens=False)["input_ids"]
    assert KOSMOS2_IDS["<patch_index_0000>"] + 44 in ids and KOSMOS2_IDS["<grounding>"] in ids  # one token each
    caption, entities = processor.post_process_generation(processor.decode(ids, skip_special_tokens=True))
    assert caption == "An image of a snowman warming himself by a fire."
    assert entities == [("a snowman", (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)]),
                        ("a fire", (41, 47), [(0.171875, 0.015625, 0.484375, 0.890625)])]


def test_kosmos2_fits_the_t4_plan() -> None:
    counts = t4plan.parameter_counts("kosmos2")
    assert 1.34e9 < counts["language model"] < 1.35e9 and 300e6 < counts["image encoder"] < 310e6
    # float32 on the Hub: model.safetensors at the pinned revision is 6,658,052,808 bytes, the tensors plus a header
    assert 0 < 6_658_052_808 - t4plan.download_bytes("kosmos2") < 2**20
    # Chapter 6's full-mode cell, as the rehearsal records it (Kosmos-2's generate runs its image tower, then its
    # language model's generate): two photos, the default grounding prompt (71 tokens with the real vocabulary:
    # <s> <image> 64 slots </image> <grounding> "▁An" "▁image" "▁of"), 64 new tokens.
    calls = [{"call": "load", "model": "kosmos2"},
             {"call": "forward", "model": "Kosmos2VisionModel", "inputs": {"arg0": [2, 3, 224, 224]},
              "training": False},
             {"call": "generate", "model": "Kosmos2TextForCausalLM", "max_new_tokens": 64,
              "inputs": {"input_ids": [2, 71], "attention_mask": [2, 71], "image_embeds": [2, 64, 2048],
                         "image_embeds_position_mask": [2, 71]}}]
    plan = t4plan.chapter_plan("06_beyond_text", calls)
    assert t4plan.call_cost(calls[1], {"kosmos2"}).flops > 0 and t4plan.call_cost(calls[2], {"kosmos2"}).flops > 0
    assert plan.models == ["kosmos2"] and plan.fits and plan.gpu_minutes < 10
    assert 3.0 < plan.weights_gib < 3.2 and plan.peak_gpu_gib <= t4plan.GPU_LIMIT_GIB
    assert plan.host_gib <= t4plan.HOST_LIMIT_GIB
