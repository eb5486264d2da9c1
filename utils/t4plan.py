"""The T4 plan: what each chapter's full mode asks of a free Colab T4, computed rather than typed in.

Two inputs, neither typed in here:

* **the real checkpoints' configurations** (``configs/``, see ``configs/SOURCES.md``). Each model
  is built at full size on PyTorch's ``meta`` device, which allocates nothing, to count its
  parameters per part and read its layer sizes; the diffusion UNet and VAE are even *run* there,
  at batch 1, to measure their activations and count their FLOPs;
* **the workload** of every chapter: each call of a model, ``generate`` or a pipeline, with its
  batch size, sequence length, image size, new tokens and sampling steps, recorded while the
  chapter ran in the rehearsal (``python scripts/rehearse.py --workload configs/t4_workload.json``).
  A test re-records it, so it cannot drift from the chapters.

What *is* stated here is the machine and a few assumptions, each named where it is used
(:data:`T4`, :data:`ASSUMPTIONS`). From these the plan gives, per chapter: the GPU memory at its
largest call (the weights of every model the chapter keeps on the GPU, plus that call's
activations and KV cache), the host RAM needed while loading, the download, and an estimate of
the GPU time. :func:`largest_batch` is how full mode picks LLaVA's batch size
(``llava.full_mode_batch``); BLIP-2's generation keeps ``blip2.generate_text``'s fixed batch, which the
plan costs like any other recorded call.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from utils import rehearsal

GiB = 2**30
WORKLOAD_FILE = rehearsal.CONFIGS_DIR / "t4_workload.json"

# The machine: NVIDIA's T4 datasheet (65 TFLOPS float16 on tensor cores, 320 GB/s), and a free Colab runtime.
T4 = {"gpu_gib": 15.0, "fp16_flops": 65e12, "bandwidth": 320e9, "host_gb": 12.7}
# What each chapter must stay within, leaving a margin on both.
GPU_LIMIT_GIB, HOST_LIMIT_GIB = 13.0, 10.0
ASSUMPTIONS = {
    "cuda_overhead_gib": 0.5,  # CUDA context, cuBLAS workspace and allocator slack on the GPU
    "host_baseline_gib": 2.5,  # a Colab kernel after importing torch (with CUDA), transformers and diffusers
    "matmul_efficiency": 0.35,  # share of the 65 TFLOPS that a model's large float16 layers reach
    "bandwidth_efficiency": 0.6,  # share of 320 GB/s reached reading the weights once per generated token
    "nf4_bytes_per_parameter": 0.5 + 4 / 64,  # bitsandbytes NF4: 4 bits, plus one float32 scale per 64 weights
}


@dataclass(frozen=True)
class Loading:
    """How a chapter loads a model in full mode (this mirrors the chapters' own loading cells)."""

    device: str  # "cuda" or "cpu"
    dtype: torch.dtype
    via_host: bool  # True: built in host RAM, then moved with .to("cuda"); False: device_map streams each tensor
    four_bit: str = ""  # parameter-name prefix of the layers loaded in 4 bits (LLaVA's language model)
    float32: tuple[str, ...] = ()  # parameter-name prefixes transformers keeps in float32 (BLIP-2's Q-Former)


# Models a notebook keeps on the CPU although LOADING puts them on the GPU (chapter 1 looks at one image).
KEPT_ON_CPU: dict[str, tuple[str, ...]] = {"01_vit": ("vit",)}

# Notebooks that free each model (del + torch.cuda.empty_cache) before loading the next: their peak is
# the largest one model needs, not the sum (chapter 7 evaluates BLIP-2, then LLaVA).
ONE_AT_A_TIME: frozenset[str] = frozenset({"07_evaluation"})

LOADING: dict[str, Loading] = {
    "clip": Loading("cuda", torch.float16, via_host=True),
    "vit": Loading("cuda", torch.float16, via_host=True),  # chapter 5 judges samples with it on the GPU
    "ddpm": Loading("cuda", torch.float16, via_host=True),
    "sd": Loading("cuda", torch.float16, via_host=True),
    "blip2": Loading("cuda", torch.float16, via_host=False, float32=("qformer.", "query_tokens")),
    "llava": Loading("cuda", torch.float16, via_host=False, four_bit="model.language_model.layers."),
    "kosmos2": Loading("cuda", torch.float16, via_host=True),  # chapter 6: from_pretrained(dtype=float16).to("cuda")
}


# --- the models at full size, on the meta device -------------------------------------------------

def config_folder(name: str) -> str:
    """The folder of zoo model ``name``'s recorded configuration files (for ``from_pretrained`` of a config)."""
    from utils import zoo

    return str(rehearsal.CONFIGS_DIR / zoo.entry(name).hub_id)


@lru_cache(maxsize=None)
def meta_parts(name: str) -> dict[str, torch.nn.Module]:
    """Zoo model ``name`` built from its recorded configuration on the meta device, as ``{part: module}``."""
    from utils import zoo

    hub = zoo.entry(name).hub_id
    config = lambda file="config.json": rehearsal.recorded(hub, file)  # noqa: E731
    with torch.device("meta"):
        if name == "clip":
            from transformers import CLIPConfig, CLIPModel

            model = CLIPModel(CLIPConfig.from_dict(config()))
            return {"image encoder": model.vision_model, "text encoder": model.text_model,
                    "projections": torch.nn.ModuleList([model.visual_projection, model.text_projection])}
        if name == "vit":
            from transformers import ViTConfig, ViTForImageClassification

            return {"ViT": ViTForImageClassification(ViTConfig.from_dict(config()))}
        if name == "ddpm":
            from diffusers import UNet2DModel

            return {"unet": UNet2DModel.from_config(config())}
        if name == "sd":
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from transformers import CLIPTextConfig, CLIPTextModel

            return {"unet": UNet2DConditionModel.from_config(config("unet/config.json")),
                    "vae": AutoencoderKL.from_config(config("vae/config.json")),
                    "text encoder": CLIPTextModel(CLIPTextConfig.from_dict(config("text_encoder/config.json")))}
        if name == "blip2":
            model = meta_model("blip2")
            return {"image encoder": model.vision_model,
                    "Q-Former": torch.nn.ModuleList([model.qformer, model.language_projection]),
                    "language model": model.language_model}
        if name == "llava":
            model = meta_model("llava")
            return {"image encoder": model.model.vision_tower, "projector": model.model.multi_modal_projector,
                    "language model": torch.nn.ModuleList([model.model.language_model, model.lm_head])}
        if name == "kosmos2":
            model = meta_model("kosmos2")
            return {"image encoder": model.vision_model, "projector": model.image_to_text_projection,
                    "language model": model.text_model}  # (its lm_head shares the token embeddings' weights)
    raise KeyError(f"the T4 plan knows no model {name!r}; known: {', '.join(LOADING)}")


@lru_cache(maxsize=None)
def meta_model(name: str) -> torch.nn.Module:
    """The whole model, with its own parameter names (BLIP-2, LLaVA and Kosmos-2; the others as a ModuleList of
    their parts). :func:`meta_parts` hands out modules of this same instance."""
    from utils import zoo

    config = lambda: rehearsal.recorded(zoo.entry(name).hub_id, "config.json")  # noqa: E731
    with torch.device("meta"):
        if name == "llava":
            from transformers import LlavaConfig, LlavaForConditionalGeneration

            return LlavaForConditionalGeneration(LlavaConfig.from_dict(config()))
        if name == "blip2":
            from transformers import Blip2Config, Blip2ForConditionalGeneration

            return Blip2ForConditionalGeneration(Blip2Config.from_dict(config()))
        if name == "kosmos2":
            from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

            return Kosmos2ForConditionalGeneration(Kosmos2Config.from_dict(config()))
    return torch.nn.ModuleList(meta_parts(name).values())


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters of each part of the real model, and ``"total"``."""
    counts = {part: sum(p.numel() for p in module.parameters()) for part, module in meta_parts(name).items()}
    counts["total"] = sum(p.numel() for p in meta_model(name).parameters())  # (BLIP-2's query tokens too)
    return counts


def stored_dtype(name: str) -> torch.dtype:
    """The dtype the real checkpoint's weights are stored in (Stable Diffusion: its fp16 variant)."""
    from utils import zoo

    if name == "sd":
        return torch.float16
    config = rehearsal.recorded(zoo.entry(name).hub_id, "config.json")
    return getattr(torch, config.get("torch_dtype") or config.get("dtype") or "float32")


def weight_bytes(name: str) -> float:
    """Bytes of the weights once loaded as full mode loads them (:data:`LOADING`)."""
    return sum(_bytes_per_parameter(name, key, p) * p.numel() for key, p in meta_model(name).named_parameters())


def _bytes_per_parameter(name: str, key: str, p: torch.nn.Parameter) -> float:
    loading = LOADING[name]
    if loading.four_bit and key.startswith(loading.four_bit) and p.dim() == 2:
        return ASSUMPTIONS["nf4_bytes_per_parameter"]
    if key.startswith(loading.float32):
        return 4
    return loading.dtype.itemsize


def largest_tensor_bytes(name: str) -> int:
    return max(p.numel() for p in meta_model(name).parameters()) * stored_dtype(name).itemsize


def download_bytes(name: str) -> int:
    return parameter_counts(name)["total"] * stored_dtype(name).itemsize


# --- what one call costs ---------------------------------------------------------------------------

@dataclass
class Cost:
    gpu_bytes: float = 0.0  # activations and KV cache at the call's peak, on top of the weights
    flops: float = 0.0
    seconds: float = 0.0


def _matmul_seconds(flops: float) -> float:
    return flops / (ASSUMPTIONS["matmul_efficiency"] * T4["fp16_flops"])


class _MetaPeak(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of live tensors created inside it (on the meta device); ``peak`` is their maximum.
    Attention is taken as one fused kernel (as PyTorch's memory-efficient attention runs on a T4): its
    output only, never the sequence-by-sequence score matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_leaves

        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


def _fused_attention(query, key, value, *args, **kwargs):
    _fused_attention.flops += 4 * query.shape[:-2].numel() * query.shape[-2] * key.shape[-2] * query.shape[-1]
    return torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)


_fused_attention.flops = 0


@lru_cache(maxsize=None)
def measured(name: str, part: str, side: int) -> tuple[int, float]:
    """(peak activation bytes, FLOPs) of one float16 forward at batch 1 of a diffusion part on meta:
    ``unet`` at latent side ``side``, or the ``vae`` decoding a latent of that side."""
    from torch.utils.flop_counter import FlopCounterMode

    module = meta_parts(name)[part].to(torch.float16)
    channels = module.config.in_channels if part == "unet" else module.config.latent_channels
    x = torch.empty(1, channels, side, side, device="meta", dtype=torch.float16)
    kwargs = {}
    if name == "sd" and part == "unet":
        text = meta_parts("sd")["text encoder"].config
        kwargs["encoder_hidden_states"] = torch.empty(1, text.max_position_embeddings, text.hidden_size,
                                                      device="meta", dtype=torch.float16)
    original = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _fused_attention
    _fused_attention.flops = 0
    try:
        with torch.no_grad(), _MetaPeak() as peak, FlopCounterMode(display=False) as counter:
            if part == "unet":
                module(x, 10, **kwargs)
            else:
                module.decode(x)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    return peak.peak, counter.get_total_flops() + _fused_attention.flops


def _transformer_sizes(config: Any) -> dict[str, int]:
    heads = config.num_attention_heads
    hidden = config.hidden_size
    return {"layers": config.num_hidden_layers, "hidden": hidden, "heads": heads,
            "kv": getattr(config, "num_key_value_heads", None) or heads, "head_dim": hidden // heads,
            "intermediate": getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim"),
            "vocab": getattr(config, "vocab_size", 0)}


def _encoder_cost(parameters: int, sizes: dict[str, int], batch: int, tokens: int, keep_hidden: bool = False) -> Cost:
    """A transformer encoder over ``batch`` x ``tokens``: 2 FLOPs per parameter and token plus attention;
    activations of about one block (3 x hidden + 3 x intermediate numbers per token, float16: a gated MLP
    holds act(gate), up and their product), and with
    ``keep_hidden`` every layer's hidden states (LLaVA asks for them to pick layer -2)."""
    flops = 2 * parameters * batch * tokens + 4 * sizes["layers"] * batch * tokens**2 * sizes["hidden"]
    act = batch * tokens * (3 * sizes["hidden"] + 3 * sizes["intermediate"]) * 2
    if keep_hidden:
        act += batch * tokens * sizes["hidden"] * 2 * (sizes["layers"] + 1)
    return Cost(act, flops, _matmul_seconds(flops))


def _decoder_cost(name: str, batch: int, prompt: int, new: int) -> Cost:
    """An LLM prefilling ``batch`` prompts of ``prompt`` tokens, then generating ``new`` tokens each.

    KV cache: 2 (keys, values) x layers x batch x tokens x KV width, float16. Prefill activations as
    in :func:`_encoder_cost` plus the last position's logits in float32. Each generated token
    costs its FLOPs or its memory traffic, whichever takes longer: one read of the language model's
    weights (NF4 weights are dequantised to float16 on every forward of more than one row: read
    4 bits, write and read 16) and one read of the KV cache so far.
    """
    parts = meta_parts(name)
    lm = parts["language model"]
    config = (lm[0] if isinstance(lm, torch.nn.ModuleList) else lm).config
    s = _transformer_sizes(config)
    embeddings = config.vocab_size * (getattr(config, "word_embed_proj_dim", None) or s["hidden"])
    active = sum(p.numel() for p in lm.parameters()) - embeddings
    kv = 2 * s["layers"] * batch * (prompt + new) * s["kv"] * s["head_dim"] * 2
    prefill = _encoder_cost(active, s, batch, prompt)
    weights = weight_bytes_of(name, "language model")
    counts = [p.numel() for p in lm.parameters()]
    nf4 = sum(n for b, n in zip(weights, counts) if b == n * ASSUMPTIONS["nf4_bytes_per_parameter"])
    lm_bytes = sum(weights) + (4 * nf4 if batch > 1 else 0)  # NF4 weights written and read again as float16
    kv_per_token = 2 * s["layers"] * batch * s["kv"] * s["head_dim"] * 2
    decode_seconds = 0.0
    decode_flops = 0.0
    for t in range(new):
        flops = 2 * active * batch + 4 * s["layers"] * batch * (prompt + t) * s["hidden"]
        decode_flops += flops
        traffic = lm_bytes + kv_per_token * (prompt + t)
        decode_seconds += max(_matmul_seconds(flops), traffic / (ASSUMPTIONS["bandwidth_efficiency"] * T4["bandwidth"]))
    logits = batch * s["vocab"] * 4
    return Cost(kv + prefill.gpu_bytes + logits, prefill.flops + decode_flops, prefill.seconds + decode_seconds)


def weight_bytes_of(name: str, part: str) -> list[float]:
    """Bytes per parameter tensor of one part, as loaded (4-bit layers counted as such)."""
    ids = {id(p) for p in meta_parts(name)[part].parameters()}
    return [_bytes_per_parameter(name, key, p) * p.numel() for key, p in meta_model(name).named_parameters()
            if id(p) in ids]


def _vision_sizes(name: str) -> tuple[int, dict[str, int]]:
    module = meta_parts(name)["image encoder"]
    return sum(p.numel() for p in module.parameters()), _transformer_sizes(module.config)


def _image_tokens(config: Any, pixels: list[int]) -> int:
    return (pixels[-1] // config.patch_size) * (pixels[-2] // config.patch_size) + 1


# Which model each recorded class can belong to, and which part of it runs (None: the whole model).
# A class that two models share (CLIP's vision tower is also LLaVA's) is resolved by what the notebook loaded.
CLASSES: dict[str, list[tuple[str, str | None]]] = {
    "CLIPModel": [("clip", None)],
    "CLIPVisionTransformer": [("clip", "image encoder")], "CLIPVisionModel": [("clip", "image encoder"), ("llava", "image encoder")],
    "CLIPVisionModelWithProjection": [("clip", "image encoder")],
    "CLIPTextTransformer": [("clip", "text encoder")], "CLIPTextModelWithProjection": [("clip", "text encoder")],
    "CLIPTextModel": [("sd", "text encoder"), ("clip", "text encoder")],
    "ViTForImageClassification": [("vit", "ViT")], "ViTModel": [("vit", "ViT")],
    "Blip2ForConditionalGeneration": [("blip2", None)], "Blip2VisionModel": [("blip2", "image encoder")],
    "Blip2QFormerModel": [("blip2", "Q-Former")], "OPTForCausalLM": [("blip2", "language model")],
    "LlavaForConditionalGeneration": [("llava", None)], "LlamaModel": [("llava", "language model")],
    "Kosmos2ForConditionalGeneration": [("kosmos2", None)], "Kosmos2VisionModel": [("kosmos2", "image encoder")],
    "Kosmos2TextForCausalLM": [("kosmos2", "language model")],
    "StableDiffusionPipeline": [("sd", None)], "DDPMPipeline": [("ddpm", None)],
    "UNet2DConditionModel": [("sd", "unet")], "AutoencoderKL": [("sd", "vae")], "UNet2DModel": [("ddpm", "unet")],
}


def _owner(model_class: str, loaded: set[str]) -> tuple[str | None, str | None]:
    candidates = CLASSES.get(model_class, [])
    return next(((n, p) for n, p in candidates if n in loaded), candidates[0] if candidates else (None, None))


def call_cost(call: dict[str, Any], loaded: set[str] | None = None) -> Cost:
    """The GPU cost of one recorded call of a model the notebook ``loaded`` (all models, if not given).
    Calls of models that stay on the CPU, or of models the course builds itself (not from the zoo), cost
    nothing here: they are small."""
    name, part = _owner(call["model"], set(LOADING) if loaded is None else loaded)
    if name is None or LOADING[name].device != "cuda" or (loaded is not None and name not in loaded):
        return Cost()
    inputs = call.get("inputs", {})
    if call["call"] == "pipeline":
        steps = call.get("steps") or (50 if name == "sd" else 1000)
        if name == "sd":
            guided = (call.get("guidance") if call.get("guidance") is not None else 7.5) > 1
            rows = call["batch"] * (2 if guided else 1)  # classifier-free guidance runs each image twice
            side = call["height"] // 8
            unet_act, unet_flops = measured("sd", "unet", side)
            vae_act, vae_flops = measured("sd", "vae", side)
            decoded = 1 if call.get("vae_slicing") else call["batch"]
            flops = steps * rows * unet_flops + call["batch"] * vae_flops
            return Cost(max(rows * unet_act, decoded * vae_act), flops, _matmul_seconds(flops))
        act, unet_flops = measured("ddpm", "unet", call["height"])
        flops = steps * call["batch"] * unet_flops
        return Cost(call["batch"] * act, flops, _matmul_seconds(flops))
    if part in ("unet", "vae"):
        shape = next(iter(inputs.values()))
        act, flops = measured(name, part, shape[-1])
        return Cost(shape[0] * act, shape[0] * flops, _matmul_seconds(shape[0] * flops))
    if name == "clip" and part is None:  # CLIPModel's forward: both towers, each on its own inputs
        towers = {"CLIPVisionTransformer": "pixel_values", "CLIPTextTransformer": "input_ids"}
        costs = [call_cost({**call, "model": cls, "inputs": {key: inputs[key]}}, loaded)
                 for cls, key in towers.items() if key in inputs]
        return Cost(max(c.gpu_bytes for c in costs), sum(c.flops for c in costs), sum(c.seconds for c in costs))
    if part is None or part == "language model":  # an LLM: generate, or one forward (new tokens: 0)
        ids = inputs.get("input_ids") or inputs.get("inputs_embeds") or next(iter(inputs.values()))
        batch, prompt = ids[0], ids[1]
        new = (call.get("max_new_tokens") or 20) if call["call"] == "generate" else 0
        cost = _decoder_cost(name, batch, prompt, new)
        if part is None and "pixel_values" in inputs:  # LLaVA's and Kosmos-2's generate run the vision tower first
            vision = _vision_cost(name, inputs["pixel_values"])
            cost = Cost(max(cost.gpu_bytes, vision.gpu_bytes), cost.flops + vision.flops, cost.seconds + vision.seconds)
        return cost
    if part == "image encoder":
        return _vision_cost(name, inputs.get("pixel_values") or next(iter(inputs.values())))
    module = meta_parts(name)[part]
    params = sum(p.numel() for p in module.parameters())
    module = module[0] if isinstance(module, torch.nn.ModuleList) else module  # (the Q-Former with its projection)
    ids = inputs.get("input_ids") or inputs.get("query_embeds") or next(iter(inputs.values()))
    return _encoder_cost(params, _transformer_sizes(module.config), ids[0], ids[1] if len(ids) > 1 else 1)


def _vision_cost(name: str, pixels: list[int]) -> Cost:
    params, sizes = _vision_sizes(name)
    config = meta_parts(name)["image encoder"].config
    # LLaVA asks its tower for every layer's hidden states, to take layer -2
    return _encoder_cost(params, sizes, pixels[0], _image_tokens(config, pixels), keep_hidden=name == "llava")


# --- the plan ------------------------------------------------------------------------------------

def workload(file: Path | str = WORKLOAD_FILE) -> dict[str, list[dict[str, Any]]]:
    return json.loads(Path(file).read_text())


@dataclass
class ChapterPlan:
    chapter: str
    models: list[str]  # on the GPU
    weights_gib: float  # on the GPU, as loaded (for a notebook in ONE_AT_A_TIME, the largest model's)
    largest_call: str
    peak_gpu_gib: float
    host_gib: float  # while loading
    download_gb: float
    gpu_minutes: float

    @property
    def fits(self) -> bool:
        return self.peak_gpu_gib <= GPU_LIMIT_GIB and self.host_gib <= HOST_LIMIT_GIB


# Inputs whose last dimension is a width: recorded at the stand-in's width, shown at the real model's.
WIDTH_INPUTS = ("inputs_embeds", "image_embeds", "query_embeds", "encoder_hidden_states")


def _real_width(call: dict[str, Any], key: str, loaded: set[str]) -> int | None:
    """The real model's width for input ``key`` of a recorded call (the rehearsal records its stand-in's),
    or None when the plan does not know the model."""
    name, part = _owner(call["model"], loaded)
    if name is None:
        return None
    parts = meta_parts(name)
    module = parts[part] if part is not None else parts.get("language model")
    module = module[0] if isinstance(module, torch.nn.ModuleList) else module
    config = getattr(module, "config", None)
    if key == "encoder_hidden_states":  # what a Q-Former or a UNet cross-attends to
        return getattr(config, "encoder_hidden_size", None) or getattr(config, "cross_attention_dim", None)
    return getattr(config, "word_embed_proj_dim", None) or getattr(config, "embed_dim", None) or \
        getattr(config, "hidden_size", None)


def _describe(call: dict[str, Any], loaded: set[str] | None = None) -> str:
    """One recorded call in words, with the real model's widths (see :data:`WIDTH_INPUTS`)."""
    if call["call"] == "pipeline":
        return f"{call['model']}: {call['batch']} images at {call['height']} px, {call['steps']} steps"
    loaded = set(LOADING) if loaded is None else loaded
    shapes = []
    for key, shape in call.get("inputs", {}).items():
        if key == "attention_mask":
            continue
        width = _real_width(call, key, loaded) if key in WIDTH_INPUTS and len(shape) == 3 else None
        shapes.append(f"{key} {tuple(shape[:-1]) + (width,) if width else tuple(shape)}")
    extra = f", {call['max_new_tokens']} new tokens" if call.get("max_new_tokens") else ""
    return f"{call['model']}.{call['call']}({', '.join(shapes)}{extra})"


def chapter_plan(chapter: str, calls: list[dict[str, Any]]) -> ChapterPlan:
    loaded = sorted({c["model"] for c in calls if c["call"] == "load"} & set(LOADING))
    on_cpu = [m for m in loaded if LOADING[m].device == "cpu" or m in KEPT_ON_CPU.get(chapter, ())]
    on_gpu = [m for m in loaded if m not in on_cpu]
    costs = [(call_cost(c, set(on_gpu)), c) for c in calls if c["call"] != "load"]
    costs = [(c, call) for c, call in costs if c.flops > 0]  # calls of models the plan counts (on the GPU)
    if chapter in ONE_AT_A_TIME and len(on_gpu) > 1:  # the peak of whichever model needs most, alone
        weights, largest, largest_call = max(
            ((weight_bytes(m), *max(((call_cost(call, {m}), call) for call in calls if call["call"] != "load"),
                                    key=lambda pair: pair[0].gpu_bytes, default=(Cost(), None))) for m in on_gpu),
            key=lambda triple: triple[0] + triple[1].gpu_bytes)
    else:
        weights = sum(weight_bytes(m) for m in on_gpu)
        largest, largest_call = max(costs, key=lambda pair: pair[0].gpu_bytes, default=(Cost(), None))
    host = ASSUMPTIONS["host_baseline_gib"] * GiB + sum(weight_bytes(m) * 2 for m in on_cpu)  # float32 on the CPU
    loading_peaks = [weight_bytes(m) + largest_tensor_bytes(m) if LOADING[m].via_host else largest_tensor_bytes(m)
                     for m in on_gpu]
    host += max(loading_peaks, default=0)
    peak = ASSUMPTIONS["cuda_overhead_gib"] * GiB + weights + largest.gpu_bytes if on_gpu else 0.0
    return ChapterPlan(chapter, on_gpu, weights / GiB, _describe(largest_call, set(on_gpu)) if largest_call else "-",
                       peak / GiB, host / GiB, sum(download_bytes(m) for m in loaded) / 1e9,
                       sum(c.seconds for c, _ in costs) / 60)


def plan(file: Path | str = WORKLOAD_FILE) -> list[ChapterPlan]:
    """One :class:`ChapterPlan` per chapter and solution notebook in the recorded workload."""
    return [chapter_plan(chapter, calls) for chapter, calls in workload(file).items()]


def largest_batch(name: str, prompt: int, new: int, image: list[int] | None = None, limit_gib: float = GPU_LIMIT_GIB,
                  others: tuple[str, ...] = ()) -> int:
    """The largest power-of-two batch of ``generate`` calls of ``name`` (prompts of ``prompt`` tokens,
    ``new`` new tokens, images of shape ``image``) that keeps the GPU within ``limit_gib``, with the
    weights of ``name`` and of ``others`` resident."""
    resident = ASSUMPTIONS["cuda_overhead_gib"] * GiB + sum(weight_bytes(m) for m in (name, *others))
    model_class = {"llava": "LlavaForConditionalGeneration", "blip2": "Blip2ForConditionalGeneration"}[name]
    batch = 1
    while batch < 1024:
        trial = batch * 2
        inputs = {"input_ids": [trial, prompt]}
        if image is not None:
            inputs["pixel_values"] = [trial, *image]
        need = call_cost({"call": "generate", "model": model_class, "inputs": inputs, "max_new_tokens": new},
                         {name}).gpu_bytes
        if resident + need > limit_gib * GiB:
            break
        batch = trial
    return batch


def _minutes(minutes: float) -> str:
    return f"{minutes:.1f} min" if round(minutes, 1) > 0 else "< 0.1 min"  # never "0.0": every call costs something


def table(plans: list[ChapterPlan]) -> list[dict[str, str]]:
    """The plan as printable rows, for the notebooks that put a model on the GPU."""
    plans = [p for p in plans if p.models]
    return [{"notebook": p.chapter, "on the GPU": ", ".join(p.models), "weights": f"{p.weights_gib:.1f} GiB",
             "peak GPU": f"{p.peak_gpu_gib:.1f} GiB", "host RAM": f"{p.host_gib:.1f} GiB",
             "download": f"{p.download_gb:.1f} GB", "T4 time": _minutes(p.gpu_minutes),
             "fits": "yes" if p.fits else "NO"} for p in plans]


def print_table(rows: list[dict[str, str]], columns: list[str] | None = None) -> None:
    """Print rows of strings (:func:`table`'s, ``zoo.table()``'s) as left-aligned columns under their names."""
    columns = list(rows[0]) if columns is None else columns
    widths = [max(len(c), *(len(row[c]) for row in rows)) for c in columns]
    for line in [dict(zip(columns, columns)), *rows]:
        print("  ".join(line[c].ljust(w) for c, w in zip(columns, widths)).rstrip())

