"""Stand-ins for the real checkpoints, so full mode can be rehearsed offline on a CPU.

``MMLLM_MODE=rehearsal`` runs every chapter's full-mode code (see :mod:`utils.runtime`), and
:func:`utils.zoo.path` hands ``from_pretrained`` the folder this module builds instead of the
downloaded checkpoint. A stand-in keeps everything a chapter's code depends on and shrinks only
what it does not:

* **kept**, from the real checkpoint's files recorded in ``configs/<hub id>/`` (see
  ``configs/SOURCES.md``): the model and processor classes, image size, patch size, number of
  query and image tokens, vocabulary size, special tokens and their ids, the chat template, the
  generation config, which files exist (e.g. Stable Diffusion's ``*.fp16.safetensors`` variant),
  and the dtype the weights are stored in;
* **shrunk**: widths, depths and numbers of heads (:data:`NARROW`), so a forward pass costs
  milliseconds; the weights are random;
* **synthesised**: the vocabularies of OPT, Llama and Kosmos-2 (XLM-R's SentencePiece), which the
  course cannot ship. The stand-in tokenizer has the real size, the real special tokens at their
  real ids and the real tokenizer class, and a small vocabulary learned from the course's own text.

Stand-ins are built on first use, by :func:`utils.zoo.path` in rehearsal mode, into
``MMLLM_REHEARSAL_DIR`` (default ``~/.cache/mmllm-course/rehearsal``); a folder is rebuilt when the
recorded files or this module change. Nothing here is committed as weights. One size is not kept:
Stable Diffusion's stand-in samples at 1/:data:`SD_SHRINK` of the real image side (64 px for 512),
and its recorded calls are scaled back to the real size, so the T4 plan costs 512 px.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
CACHE_DIR = Path(os.environ.get("MMLLM_REHEARSAL_DIR", Path.home() / ".cache" / "mmllm-course" / "rehearsal"))
SEED = 0

# The shrunk sizes. Heads divide widths; two layers where a chapter reads a layer from the end
# (LLaVA's vision_feature_layer = -2 needs at least two).
NARROW = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2}
NARROW_IMAGE_GENERATOR = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1}
SD_SHRINK = 8  # the Stable Diffusion stand-in's image side is the real one's divided by this (see build_sd)


class RehearsalError(RuntimeError):
    """A stand-in could not be built; the message names the missing recorded file."""


def recorded(hub_id: str, name: str) -> dict[str, Any]:
    """A recorded JSON file of a real checkpoint, e.g. ``recorded("openai/clip-vit-base-patch32", "config.json")``."""
    file = CONFIGS_DIR / hub_id / name
    if not file.is_file():
        raise RehearsalError(f"{file} is missing: the rehearsal builds its stand-in for {hub_id} from the real "
                             f"checkpoint's {name}. Restore it with `git checkout -- {file.relative_to(REPO_ROOT)}`.")
    return json.loads(file.read_text(encoding="utf-8"))


def copy_recorded(hub_id: str, name: str, out: Path) -> None:
    """Copy a recorded file into the stand-in folder unchanged, at the same path as on the Hub."""
    target = out / name
    target.parent.mkdir(parents=True, exist_ok=True)
    recorded(hub_id, name)  # a clear error when it is missing
    shutil.copyfile(CONFIGS_DIR / hub_id / name, target)


def narrowed(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``config`` with the sizes of :data:`NARROW` (and ``extra``) set; everything else untouched.

    The sizes are set even where the recorded file leaves them out: a missing key means the
    class's default, which is the real model's size (LLaVA's text_config, for one, relies on it).
    """
    return {**copy.deepcopy(config), **NARROW, **extra}


def _dtype(config: dict[str, Any]) -> torch.dtype:
    """The dtype the real weights are stored in (``dtype``/``torch_dtype`` in config.json; float32 if absent)."""
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name)


# --- tokenizers whose vocabulary the course cannot ship ----------------------------------------

def corpus() -> list[str]:
    """Text to learn the synthetic vocabularies' merges from: ShapesWorld's captions, questions and answers
    and the instruction-data prompts. (Not the chapters' prose: editing a sentence must not change how
    many tokens a prompt has, which the recorded workload holds.)"""
    from utils.instruct.llm import SYSTEM_PROMPT, TASK_PROMPTS
    from utils.shapes import ShapesWorld

    lines: list[str] = [SYSTEM_PROMPT, *TASK_PROMPTS.values()]
    world = ShapesWorld(200, seed=SEED)
    for scene in world.scenes:
        lines.append(scene.caption)
        lines.extend(f"{q.text} {q.answer}" for q in scene.questions)
    return lines


def _fill(vocab: dict[str, int], size: int) -> None:
    """Pad a vocabulary with unreachable placeholder tokens up to ``size`` entries, so every id the real
    tokenizer has (and every id above it, like LLaVA's <image> = 32000) sits where it does there."""
    taken = set(vocab.values())
    n = 0
    for i in range(size):
        if i not in taken:
            vocab[f"<placeholder_{n}>"] = i
            n += 1


def byte_level_bpe(specials: list[str], size: int, bos: str, merges_budget: int = 2000) -> dict[str, Any]:
    """A GPT-2-style byte-level BPE (OPT's kind) as tokenizer.json data: ``specials`` take ids 0, 1, ...,
    the 256 byte symbols follow, then merges learned from :func:`corpus`, then placeholders up to ``size``;
    every encoded text starts with ``bos`` (OPT's is ``</s>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + 256 + merges_budget, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, specials.index(bos))])])
    data = json.loads(tok.to_str())
    _fill(data["model"]["vocab"], size)
    return data


def sentencepiece_bpe(size: int, merges_budget: int = 2000) -> dict[str, Any]:
    """A Llama-style BPE (SentencePiece conventions: "▁" for spaces, <0x00>..<0xFF> byte fallback at ids
    3..258 after <unk>, <s>, </s>) as tokenizer.json data, padded with placeholders up to ``size``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + 256 + merges_budget, special_tokens=specials + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    data = json.loads(tok.to_str())
    # The byte tokens are ordinary vocabulary in Llama (the fallback), not special added tokens.
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]
    _fill(data["model"]["vocab"], size)
    return data


def xlmr_unigram(size: int, pieces_budget: int = 2000) -> dict[str, Any]:
    """An XLM-R-style Unigram tokenizer (Kosmos-2's kind) as tokenizer.json data: <s>, <pad>, </s>, <unk> at ids
    0-3, pieces learned from :func:`corpus`, placeholders, and <mask> as the last of ``size`` ids; "▁" marks the
    spaces, and an encoded text is <s> A </s>, as in the fairseq layout XLM-R's tokenizer reproduces."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()  # (the real one: SentencePiece's nmt_nfkc, as a precompiled charsmap)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=len(specials) + pieces_budget, special_tokens=specials,
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]  # [piece, log-probability] in id order
    vocab.extend([f"<placeholder_{n}>", -100.0] for n in range(size - 1 - len(vocab)))
    vocab.append(["<mask>", 0.0])
    data["added_tokens"].append({"id": size - 1, "content": "<mask>", "single_word": False, "lstrip": True,
                                 "rstrip": False, "normalized": True, "special": True})
    return data


def add_tokens(data: dict[str, Any], tokens: dict[str, int], special: bool = True, lstrip: bool = False) -> None:
    """Add tokens at given ids (above the model vocabulary), as the real tokenizer's added_tokens.json has them."""
    for content, index in sorted(tokens.items(), key=lambda kv: kv[1]):
        data["added_tokens"].append({"id": index, "content": content, "single_word": False, "lstrip": lstrip,
                                     "rstrip": False, "normalized": False, "special": special})


def write_tokenizer_json(data: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


# --- the stand-ins, one builder per zoo entry ------------------------------------------------------

def _seeded() -> None:
    torch.manual_seed(SEED)


def _clip_tokenizer_files(hub_id: str, out: Path, folder: str = "") -> None:
    """CLIP's real BPE (shipped in models/clip-tokenizer) with the checkpoint's own tokenizer config."""
    target = out / folder if folder else out
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "models" / "clip-tokenizer" / "tokenizer.json", target / "tokenizer.json")
    prefix = f"{folder}/" if folder else ""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (CONFIGS_DIR / hub_id / f"{prefix}{name}").is_file():
            copy_recorded(hub_id, f"{prefix}{name}", out)


def build_clip(hub_id: str, out: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    real = recorded(hub_id, "config.json")
    config = dict(real, text_config=narrowed(real["text_config"]), vision_config=narrowed(real["vision_config"]))
    _seeded()
    model = CLIPModel(CLIPConfig.from_dict(config)).to(_dtype(real))
    model.save_pretrained(out)
    copy_recorded(hub_id, "preprocessor_config.json", out)
    _clip_tokenizer_files(hub_id, out)


def build_vit(hub_id: str, out: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    real = recorded(hub_id, "config.json")
    _seeded()
    model = ViTForImageClassification(ViTConfig.from_dict(narrowed(real))).to(_dtype(real))
    model.save_pretrained(out)
    copy_recorded(hub_id, "preprocessor_config.json", out)


def _unet_like(real: dict[str, Any], **extra: Any) -> dict[str, Any]:
    config = {k: v for k, v in real.items() if not k.startswith("_")}
    blocks = len(config["block_out_channels"])
    config.update(NARROW_IMAGE_GENERATOR, **extra)
    config["block_out_channels"] = config["block_out_channels"][:blocks] + [64] * (blocks - 4)
    return config


def build_ddpm(hub_id: str, out: Path) -> None:
    """google/ddpm-cifar10-32: its UNet2DModel and DDPMScheduler configs are recorded at the top of the
    folder; the stand-in lays them out as DDPMPipeline loads them, in unet/ and scheduler/."""
    from diffusers import UNet2DModel

    _seeded()
    unet = UNet2DModel.from_config(_unet_like(recorded(hub_id, "config.json")))
    unet.save_pretrained(out / "unet", safe_serialization=True)
    copy_recorded(hub_id, "model_index.json", out)
    (out / "scheduler").mkdir()
    shutil.copyfile(CONFIGS_DIR / hub_id / "scheduler_config.json", out / "scheduler" / "scheduler_config.json")


def build_sd(hub_id: str, out: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    for name in ("model_index.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json"):
        copy_recorded(hub_id, name, out)
    _clip_tokenizer_files(hub_id, out, "tokenizer")
    real_text = recorded(hub_id, "text_encoder/config.json")
    text_config = narrowed(real_text, hidden_size=64, num_attention_heads=2)
    _seeded()
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(text_config)).to(torch.float16)
    text_encoder.save_pretrained(out / "text_encoder", variant="fp16")
    # Stable Diffusion samples 512 x 512 images through 64 x 64 latents, which on a CPU would take
    # hours at every one of a chapter's steps; the stand-in samples at 1/SD_SHRINK of that side (the
    # workload recorder scales the sizes it notes back up, so the T4 plan costs the real ones).
    real_unet = recorded(hub_id, "unet/config.json")
    unet = UNet2DConditionModel.from_config(_unet_like(real_unet, cross_attention_dim=text_config["hidden_size"],
                                                       sample_size=real_unet["sample_size"] // SD_SHRINK))
    unet.to(torch.float16).save_pretrained(out / "unet", variant="fp16")
    real_vae = recorded(hub_id, "vae/config.json")
    vae = AutoencoderKL.from_config(_unet_like(real_vae, sample_size=real_vae["sample_size"] // SD_SHRINK))
    vae.to(torch.float16).save_pretrained(out / "vae", variant="fp16")


def build_blip2(hub_id: str, out: Path) -> None:
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    real = recorded(hub_id, "config.json")
    vision = narrowed(real["vision_config"])
    qformer = narrowed(real["qformer_config"], encoder_hidden_size=vision["hidden_size"])
    text = narrowed(real["text_config"], ffn_dim=NARROW["intermediate_size"], word_embed_proj_dim=NARROW["hidden_size"])
    config = dict(real, vision_config=vision, qformer_config=qformer, text_config=text)
    _seeded()
    model = Blip2ForConditionalGeneration(Blip2Config.from_dict(config)).to(_dtype(real))
    model.save_pretrained(out)
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "generation_config.json"):
        if (CONFIGS_DIR / hub_id / name).is_file():
            copy_recorded(hub_id, name, out)
    # OPT's byte-level BPE: <s>, <pad>, </s>, <unk> at 0-3 as in facebook/opt-2.7b, 50,265 tokens; BLIP-2's
    # added tokens (the <image> placeholder) at their recorded ids.
    data = byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>"], size=50265, bos="</s>")
    added = recorded(hub_id, "added_tokens.json") if (CONFIGS_DIR / hub_id / "added_tokens.json").is_file() else {}
    add_tokens(data, added)
    write_tokenizer_json(data, out)


def build_llava(hub_id: str, out: Path) -> None:
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    real = recorded(hub_id, "config.json")
    vision = narrowed(real["vision_config"], projection_dim=NARROW["hidden_size"])
    text = narrowed(real["text_config"], num_key_value_heads=NARROW["num_attention_heads"])
    config = dict(real, vision_config=vision, text_config=text)
    _seeded()
    model = LlavaForConditionalGeneration(LlavaConfig.from_dict(config)).to(_dtype(real))
    model.save_pretrained(out)
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json", "generation_config.json", "chat_template.json"):
        if (CONFIGS_DIR / hub_id / name).is_file():
            copy_recorded(hub_id, name, out)
    data = sentencepiece_bpe(size=32000)
    add_tokens(data, recorded(hub_id, "added_tokens.json"))
    write_tokenizer_json(data, out)


def build_kosmos2(hub_id: str, out: Path) -> None:
    """Kosmos-2 (full mode only: the zoo has no tiny one). Kept: the CLIP-style tower at 224 px with 14 px patches,
    the 64 latent queries, the 65,037-token vocabulary with its tag and <patch_index_NNNN> tokens at their recorded
    ids (added_tokens.json), the image processor and the generation config."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    real = recorded(hub_id, "config.json")
    # The text config names its sizes its own way (embed_dim, ffn_dim, attention_heads, layers), as OPT's does.
    text = dict(real["text_config"], embed_dim=NARROW["hidden_size"], ffn_dim=NARROW["intermediate_size"],
                attention_heads=NARROW["num_attention_heads"], layers=NARROW["num_hidden_layers"])
    config = dict(real, text_config=text, vision_config=narrowed(real["vision_config"]))
    _seeded()
    model = Kosmos2ForConditionalGeneration(Kosmos2Config.from_dict(config)).to(_dtype(real))
    model.save_pretrained(out)
    for name in ("preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "generation_config.json"):
        copy_recorded(hub_id, name, out)
    # XLM-R's layout: <s> <pad> </s> <unk> (0-3), SentencePiece's pieces (4-64,000), <mask> (64,001); the processor's
    # tags and 1,024 patch-index tokens follow as added tokens. They are not special (decoding with
    # skip_special_tokens keeps them, for post_process_generation to read) and strip the space before them.
    added = recorded(hub_id, "added_tokens.json")
    data = xlmr_unigram(size=min(added.values()))
    add_tokens(data, added, special=False, lstrip=True)
    write_tokenizer_json(data, out)


BUILDERS: dict[str, Callable[[str, Path], None]] = {
    "clip": build_clip,
    "vit": build_vit,
    "ddpm": build_ddpm,
    "sd": build_sd,
    "blip2": build_blip2,
    "llava": build_llava,
    "kosmos2": build_kosmos2,
}


def _fingerprint(hub_id: str) -> str:
    """Changes when the recorded files, this module or the shipped CLIP vocabulary change."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for file in sorted((CONFIGS_DIR / hub_id).rglob("*")):
        if file.is_file():
            digest.update(file.relative_to(CONFIGS_DIR).as_posix().encode() + file.read_bytes())
    digest.update((REPO_ROOT / "models" / "clip-tokenizer" / "tokenizer.json").read_bytes())
    return digest.hexdigest()[:16]


def stand_in(name: str) -> Path:
    """The stand-in folder for zoo entry ``name``, built now if it is missing or out of date.

    Safe when several kernels ask at once: one builds (under a lock), the others wait and reuse it.
    """
    from utils import zoo

    item = zoo.entry(name)
    if name == "clip-tokenizer":  # the real vocabulary ships with the course: nothing to stand in for
        return item.local_dir
    if name not in BUILDERS:
        raise RehearsalError(f"no rehearsal stand-in for {name!r}; known: {', '.join(sorted(BUILDERS))}")
    folder = CACHE_DIR / name
    stamp = folder / "REHEARSAL"
    fingerprint = _fingerprint(item.hub_id)
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return folder
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as lock, _locked(lock):
        if stamp.is_file() and stamp.read_text().strip() == fingerprint:  # built while we waited
            return folder
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE_DIR))
        try:
            BUILDERS[name](item.hub_id, work)
            (work / "REHEARSAL").write_text(fingerprint + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            work.rename(folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder


@contextlib.contextmanager
def _locked(handle):
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


# --- the workload: what a chapter asks of its models, for the T4 plan (utils/t4plan.py) ------------

def _shape(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return [list(v.shape) for v in value]
    return None


_LOG: Any = None


def note_load(name: str) -> None:
    """Note in the workload that the chapter loaded zoo model ``name`` (called by utils.zoo.path)."""
    if _LOG is not None:
        _LOG.write(json.dumps({"call": "load", "model": name}) + "\n")


def _course_tiny_model(model: Any) -> bool:
    """A model the course ships in models/ (a tiny-only zoo entry runs so in full mode too) or defines in
    utils/: not one of the real checkpoints the T4 plan costs."""
    from utils import zoo

    if type(model).__module__.startswith("utils."):
        return True
    loaded_from = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    return bool(loaded_from) and Path(loaded_from).resolve().is_relative_to(zoo.MODELS_DIR.resolve())


def record_workload(path: str) -> None:
    """Append one JSON line to ``path`` for every call a chapter makes of a model, a pipeline or ``generate``.

    Recorded: the class, the shapes of the tensor inputs, and for ``generate`` the number of new
    tokens, for a pipeline its batch, image size, steps and guidance. Calls made inside another
    recorded call (the layers of a model, the UNet inside a pipeline) are not recorded again.
    """
    import threading

    from diffusers import DDPMPipeline, StableDiffusionPipeline
    from transformers import GenerationMixin

    global _LOG
    state = threading.local()
    log = _LOG = open(path, "a", buffering=1)

    def write(entry: dict[str, Any]) -> None:
        log.write(json.dumps(entry) + "\n")

    def outermost(call: Callable[..., Any], describe: Callable[..., dict[str, Any] | None]) -> Callable[..., Any]:
        def wrapper(self, *args, **kwargs):
            if getattr(state, "depth", 0) == 0:
                entry = describe(self, *args, **kwargs)
                if entry is not None:
                    write(entry)
            state.depth = getattr(state, "depth", 0) + 1
            try:
                return call(self, *args, **kwargs)
            finally:
                state.depth -= 1
        return wrapper

    def describe_generate(model, *args, **kwargs):
        if _course_tiny_model(model):
            return None
        config = getattr(model, "generation_config", None)
        new = kwargs.get("max_new_tokens") or getattr(kwargs.get("generation_config"), "max_new_tokens", None) \
            or getattr(config, "max_new_tokens", None)
        inputs = {k: _shape(v) for k, v in kwargs.items() if _shape(v) is not None}
        if args and _shape(args[0]) is not None:
            inputs["input_ids"] = _shape(args[0])
        return {"call": "generate", "model": type(model).__name__, "inputs": inputs, "max_new_tokens": new}

    def describe_forward(module, *args, **kwargs):
        if not hasattr(module, "config") and not hasattr(module, "dtype") or _course_tiny_model(module):
            return None
        inputs = {k: _shape(v) for k, v in kwargs.items() if _shape(v) is not None}
        for i, a in enumerate(args):
            if _shape(a) is not None:
                inputs[f"arg{i}"] = _shape(a)
        if not inputs:
            return None
        return {"call": "forward", "model": type(module).__name__, "inputs": inputs,
                "training": bool(module.training and torch.is_grad_enabled())}

    def describe_pipeline(pipe, *args, **kwargs):
        if _course_tiny_model(getattr(pipe, "unet", None)):
            return None
        prompt = kwargs.get("prompt", args[0] if args else None)
        batch = kwargs.get("batch_size") or (len(prompt) if isinstance(prompt, list) else 1)
        batch *= kwargs.get("num_images_per_prompt") or 1
        unet = getattr(pipe, "unet", None)
        default = unet.config.sample_size * getattr(pipe, "vae_scale_factor", 1) if unet is not None else None
        scale = SD_SHRINK if type(pipe).__name__ == "StableDiffusionPipeline" else 1  # back to the real size
        height, width = (kwargs.get(k) or default for k in ("height", "width"))
        return {"call": "pipeline", "model": type(pipe).__name__, "batch": batch,
                "height": height and height * scale, "width": width and width * scale,
                "steps": kwargs.get("num_inference_steps"), "guidance": kwargs.get("guidance_scale"),
                "vae_slicing": bool(getattr(getattr(pipe, "vae", None), "use_slicing", False))}

    GenerationMixin.generate = outermost(GenerationMixin.generate, describe_generate)
    for cls in (DDPMPipeline, StableDiffusionPipeline):
        cls.__call__ = outermost(cls.__call__, describe_pipeline)
    torch.nn.Module.__call__ = outermost(torch.nn.Module.__call__, describe_forward)
