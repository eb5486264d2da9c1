"""The Vision Transformer (Dosovitskiy et al., 2020), built from its parts as in chapter 1.

Reads top to bottom: config, patches, attention, MLP, block, model, weight porting.
Shapes follow the ledger in ``utils/__init__.py``: B batch, C channels, H/W image size,
P patch size, N patches, D width, nh heads, hs head size, L tokens (N + 1 with [CLS]).

The model is numerically the same function as transformers' ``ViTForImageClassification``
(pre-LN blocks, exact-erf GELU, LayerNorm eps 1e-12), so weights move both ways with
:meth:`ViT.from_transformers` and :meth:`ViT.to_transformers`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

_NAMED_SIZES: dict[str, dict[str, int]] = {
    # ShapesWorld-sized: 64 x 64 images, 8 x 8 patches -> 64 tokens; trains in a minute on a CPU.
    "tiny": dict(image_size=64, patch_size=8, hidden_size=64, num_layers=3, num_heads=4, mlp_dim=128, num_classes=10),
    # The paper's sizes (Table 1), with a 1,000-class ImageNet head.
    "base": dict(image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, num_classes=1000),
    "large": dict(image_size=224, patch_size=16, hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096, num_classes=1000),
    "huge": dict(image_size=224, patch_size=14, hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120, num_classes=1000),
}


@dataclass
class ViTConfig:
    """The sizes of a ViT. Square images and patches; ``ViTConfig.named("base")`` for the paper's sizes."""

    image_size: int
    patch_size: int
    hidden_size: int  # D
    num_layers: int
    num_heads: int  # nh
    mlp_dim: int
    num_classes: int
    num_channels: int = 3  # C
    layer_norm_eps: float = 1e-12  # transformers' ViT default
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}: "
                f"use e.g. image_size={self.image_size // self.patch_size * self.patch_size} or a patch size that divides it"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} cannot be split into {self.num_heads} equal heads: "
                "choose num_heads that divides hidden_size"
            )

    @classmethod
    def named(cls, name: str, **overrides: int | float | bool) -> ViTConfig:
        """A named size: "tiny", "base", "large" or "huge"; keyword arguments override fields."""
        if name not in _NAMED_SIZES:
            raise ValueError(f"unknown ViT size {name!r}; choose one of {', '.join(_NAMED_SIZES)}")
        return cls(**{**_NAMED_SIZES[name], **overrides})

    @property
    def num_patches(self) -> int:  # N
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_size(self) -> int:  # hs
        return self.hidden_size // self.num_heads


def _check_images(images: torch.Tensor, patch_size: int, num_channels: int | None = None) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got a tensor of shape {tuple(images.shape)}")
    _, C, H, W = images.shape
    if num_channels is not None and C != num_channels:
        raise ValueError(f"expected {num_channels} colour channels, got {C} (is the tensor (B, H, W, C)? permute it)")
    if H % patch_size or W % patch_size:
        fit = lambda n: max(patch_size, n // patch_size * patch_size)  # noqa: E731
        raise ValueError(
            f"image is {H}x{W} but patch size {patch_size} does not divide it; "
            f"resize or crop to a multiple of {patch_size}, e.g. {fit(H)}x{fit(W)}"
        )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images (B, C, H, W) into flattened patches (B, N, C*P*P), row by row.

    Each patch is flattened channels first, (C, P, P), the layout of ``conv.weight.reshape(D, -1)``,
    so ``patchify(x, P) @ conv.weight.reshape(D, -1).T + conv.bias`` equals the patch convolution.
    Raises ValueError for a tensor that is not (B, C, H, W) or whose H or W is not a multiple of P.
    """
    _check_images(images, patch_size)
    B, C, H, W = images.shape
    P = patch_size
    x = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, H/P, P, W/P, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C*P*P)


class PatchEmbedding(nn.Module):
    """Flatten each P x P patch and project it to D: a convolution with kernel = stride = P."""

    def __init__(self, image_size: int, patch_size: int, num_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.num_channels = image_size, patch_size, num_channels
        self.projection = nn.Conv2d(num_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, self.patch_size, self.num_channels)
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this model takes {self.image_size}x{self.image_size} images, got {images.shape[-2]}x{images.shape[-1]}: "
                "resize them first (the image processor does this)"
            )
        x = self.projection(images)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with separate query, key, value and output projections."""

    def __init__(self, hidden_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) -> (B, L, D); with ``return_attention`` also the weights (B, nh, L, L)."""
        B, L, D = x.shape
        nh, hs = self.num_heads, D // self.num_heads
        # each head attends within its own hs-wide slice of the width, independently of the others
        q, k, v = (proj(x).reshape(B, L, nh, hs).transpose(1, 2) for proj in (self.query, self.key, self.value))
        # q, k, v: (B, nh, L, hs) each
        if return_attention:  # written out, so the weights can be returned and drawn
            weights = torch.softmax(q @ k.transpose(-2, -1) / hs**0.5, dim=-1)  # (B, nh, L, L)
            y = weights @ v  # (B, nh, L, hs)
        else:  # the fused kernel: same maths, less memory
            weights = None
            y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, L, hs)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D): the heads side by side again
        y = self.out(y)  # (B, L, D): mixes what the heads found
        return (y, weights) if return_attention else y


class MLP(nn.Module):
    """Position-wise feed-forward: widen, GELU (exact erf form), project back."""

    def __init__(self, hidden_size: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # (B, L, mlp_dim) inside, (B, L, D) out


class Block(nn.Module):
    """Pre-LN encoder block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.ln1 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.attention = Attention(D, config.num_heads, config.qkv_bias)
        self.ln2 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.mlp = MLP(D, config.mlp_dim)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) -> (B, L, D); with ``return_attention`` also the weights (B, nh, L, L)."""
        if return_attention:
            a, weights = self.attention(self.ln1(x), return_attention=True)
        else:
            a, weights = self.attention(self.ln1(x)), None
        x = x + a  # the residual stream is never normalised in place: a clean identity path
        x = x + self.mlp(self.ln2(x))  # (B, L, D)
        return (x, weights) if return_attention else x


class ViT(nn.Module):
    """Patch embedding, [CLS] + position embeddings, blocks, final LayerNorm, linear head on [CLS]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.patch_embedding = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, D))
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.head = nn.Linear(D, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal weights (std 0.02) and zero biases, as ViT and transformers initialise."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def features(
        self, pixel_values: torch.Tensor, return_attentions: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The final normalised token sequence (B, N+1, D), [CLS] first: the image as an encoder sees it.

        With ``return_attentions``, also a list with one (B, nh, N+1, N+1) weight tensor per block.
        """
        patches = self.patch_embedding(pixel_values)  # (B, N, D)
        B = patches.shape[0]
        # [CLS] carries no pixels of its own: it gathers the whole image through attention
        x = torch.cat([self.cls_token.expand(B, -1, -1), patches], dim=1)  # (B, N+1, D)
        x = x + self.position_embeddings  # (B, N+1, D): attention is order-blind without them
        attentions = []
        for block in self.blocks:
            if return_attentions:
                x, weights = block(x, return_attention=True)
                attentions.append(weights)  # (B, nh, N+1, N+1)
            else:
                x = block(x)
        x = self.norm(x)  # (B, N+1, D)
        return (x, attentions) if return_attentions else x

    def forward(
        self, pixel_values: torch.Tensor, return_attentions: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Class logits (B, num_classes) for images (B, C, H, W).

        With ``return_attentions``, (logits, attentions): one (B, nh, N+1, N+1) tensor per block.
        """
        if return_attentions:
            x, attentions = self.features(pixel_values, return_attentions=True)
            return self.head(x[:, 0]), attentions  # (B, num_classes), [(B, nh, N+1, N+1)] * layers
        return self.head(self.features(pixel_values)[:, 0])  # (B, num_classes), read from [CLS]

    # --- moving weights to and from transformers -----------------------------------------

    @classmethod
    def from_transformers(cls, hf_model: nn.Module) -> ViT:
        """A ViT holding the weights of a transformers ``ViTForImageClassification``, every tensor copied.

        Raises ValueError for a model this class cannot represent exactly (another head, another
        activation, non-square images or patches, a head size other than D / nh).
        """
        c = hf_model.config
        if not isinstance(getattr(hf_model, "classifier", None), nn.Linear) or not hasattr(hf_model, "vit"):
            raise ValueError(
                f"expected a ViTForImageClassification with a linear classifier head (num_labels > 0), "
                f"got {type(hf_model).__name__}"
            )
        if c.hidden_act != "gelu":
            raise ValueError(f"only the exact GELU is supported, this checkpoint uses {c.hidden_act!r}")
        image_size, patch_size = _square(c.image_size, "image_size"), _square(c.patch_size, "patch_size")
        head_dim = getattr(c, "head_dim", None)
        if head_dim is not None and head_dim * c.num_attention_heads != c.hidden_size:
            raise ValueError(
                f"head_dim {head_dim} x {c.num_attention_heads} heads != hidden_size {c.hidden_size}: "
                "only head size = hidden_size / num_heads is supported"
            )
        config = ViTConfig(
            image_size=image_size, patch_size=patch_size, hidden_size=c.hidden_size,
            num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_dim=c.intermediate_size,
            num_classes=c.num_labels, num_channels=c.num_channels, layer_norm_eps=c.layer_norm_eps, qkv_bias=c.qkv_bias,
        )
        theirs = hf_model.state_dict()
        names = _weight_names(config)
        left_over = sorted(set(theirs) - {name for _, name in names})
        if left_over:  # e.g. a mask token or pooler: weights we would silently drop
            raise ValueError(f"this checkpoint has tensors with no place in utils.vit.ViT: {left_over[:5]}")
        model = cls(config)
        model.load_state_dict({mine: theirs[name] for mine, name in names})
        return model

    def to_transformers(self, attn_implementation: str = "sdpa") -> nn.Module:
        """An equivalent transformers ``ViTForImageClassification`` in eval mode (ready for ``save_pretrained``).

        ``attn_implementation`` picks transformers' attention code: "sdpa" (fused) or "eager" (written out).
        """
        from transformers import ViTConfig as HFViTConfig
        from transformers import ViTForImageClassification

        c = self.config
        hf_config = HFViTConfig(
            image_size=c.image_size, patch_size=c.patch_size, num_channels=c.num_channels, hidden_size=c.hidden_size,
            num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, intermediate_size=c.mlp_dim,
            num_labels=c.num_classes, layer_norm_eps=c.layer_norm_eps, qkv_bias=c.qkv_bias, hidden_act="gelu",
            attn_implementation=attn_implementation,
        )
        hf_model = ViTForImageClassification(hf_config)
        ours = self.state_dict()
        hf_model.load_state_dict({theirs: ours[mine] for mine, theirs in _weight_names(c)})
        return hf_model.eval()


def _square(size: int | tuple[int, int] | list[int], name: str) -> int:
    """transformers allows (height, width) pairs; this ViT takes square images and patches only."""
    if isinstance(size, int):
        return size
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"{name} {tuple(size)} is not square: utils.vit.ViT supports square {name}s only")
    return int(size[0])


def _weight_names(config: ViTConfig) -> list[tuple[str, str]]:
    """Pairs (our parameter name, transformers' name) for every tensor of the model."""
    pairs = [
        ("cls_token", "vit.embeddings.cls_token"),
        ("position_embeddings", "vit.embeddings.position_embeddings"),
        ("patch_embedding.projection.weight", "vit.embeddings.patch_embeddings.projection.weight"),
        ("patch_embedding.projection.bias", "vit.embeddings.patch_embeddings.projection.bias"),
        ("norm.weight", "vit.layernorm.weight"),
        ("norm.bias", "vit.layernorm.bias"),
        ("head.weight", "classifier.weight"),
        ("head.bias", "classifier.bias"),
    ]
    per_block = [
        ("ln1", "layernorm_before"), ("ln2", "layernorm_after"),
        ("attention.query", "attention.q_proj"), ("attention.key", "attention.k_proj"),
        ("attention.value", "attention.v_proj"), ("attention.out", "attention.o_proj"),
        ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
    ]
    for i in range(config.num_layers):
        for ours, theirs in per_block:
            for kind in ("weight", "bias"):
                if kind == "bias" and not config.qkv_bias and ours.split(".")[-1] in ("query", "key", "value"):
                    continue
                pairs.append((f"blocks.{i}.{ours}.{kind}", f"vit.layers.{i}.{theirs}.{kind}"))
    return pairs


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device too)."""
    return sum(p.numel() for p in module.parameters())


def config_dict(config: ViTConfig) -> dict[str, int | float | bool]:
    """The config as a plain dict (for JSON)."""
    return asdict(config)
