"""utils.vit: the from-scratch ViT equals transformers' ViT, and says clearly what is wrong with bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import ViTConfig as HFViTConfig
from transformers import ViTForImageClassification

from utils import vit, zoo

torch.manual_seed(0)


def hf_config(c: vit.ViTConfig, **overrides) -> HFViTConfig:
    """transformers' config for the same sizes; keyword arguments override or add settings."""
    sizes = dict(image_size=c.image_size, patch_size=c.patch_size, num_channels=c.num_channels,
                 hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                 intermediate_size=c.mlp_dim, num_labels=c.num_classes)
    return HFViTConfig(**{**sizes, **overrides})


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_equal_transformers_at_random_init(attn_implementation: str) -> None:
    config = vit.ViTConfig.named("tiny", num_classes=7)
    hf = ViTForImageClassification(hf_config(config, attn_implementation=attn_implementation)).eval()
    assert hf.config._attn_implementation == attn_implementation
    with torch.no_grad():  # transformers initialises some tensors to zero; make every weight count
        for p in hf.parameters():
            p.normal_(0, 0.05)
    ours = vit.ViT.from_transformers(hf).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - hf(pixel_values=x).logits).abs().max() < 1e-5


def test_round_trip_through_transformers_is_exact() -> None:
    ours = vit.ViT(vit.ViTConfig.named("tiny", num_classes=4)).eval()
    back = vit.ViT.from_transformers(ours.to_transformers()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), back(x))
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_save_pretrained_then_load_with_the_real_transformers_class(tmp_path) -> None:
    ours = vit.ViT(vit.ViTConfig.named("tiny", num_classes=5)).eval()
    ours.to_transformers().save_pretrained(tmp_path)
    loaded = ViTForImageClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - loaded(pixel_values=x).logits).abs().max() < 1e-5
    assert torch.equal(vit.ViT.from_transformers(loaded).head.weight, ours.head.weight)


def test_shipped_checkpoint_ports_with_identical_logits_and_meets_its_target() -> None:
    from utils.shapes import COLOURS, SHAPES, ShapesWorld

    hf = ViTForImageClassification.from_pretrained(zoo.path("vit")).eval()
    ours = vit.ViT.from_transformers(hf).eval()
    world = ShapesWorld(300, seed=99, split="test", max_objects=1)
    x = world.images() * 2 - 1
    labels = world.labels("colour") * len(SHAPES) + world.labels("shape")
    with torch.no_grad():
        logits = ours(x)
        assert (logits - hf(pixel_values=x).logits).abs().max() < 1e-4
    assert hf.config.id2label[0] == f"{list(COLOURS)[0]} {SHAPES[0]}"
    assert (logits.argmax(-1) == labels).float().mean() >= 0.95


@pytest.mark.parametrize("name", ["tiny", "base", "large", "huge"])
def test_parameter_counts_equal_transformers(name: str) -> None:
    config = vit.ViTConfig.named(name)
    with torch.device("meta"):
        ours = vit.count_parameters(vit.ViT(config))
        theirs = vit.count_parameters(ViTForImageClassification(hf_config(config)))
    assert ours == theirs


def test_paper_sizes() -> None:
    counts = {}
    for name in ("base", "large", "huge"):
        with torch.device("meta"):
            counts[name] = vit.count_parameters(vit.ViT(vit.ViTConfig.named(name)))
    assert counts == {"base": 86_567_656, "large": 304_326_632, "huge": 632_045_800}


def test_patchify_then_linear_equals_the_patch_convolution() -> None:
    embed = vit.PatchEmbedding(image_size=32, patch_size=8, num_channels=3, hidden_size=20)
    x = torch.randn(2, 3, 32, 32)
    W = embed.projection.weight.reshape(20, -1)  # (D, C*P*P)
    by_hand = vit.patchify(x, 8) @ W.T + embed.projection.bias
    torch.testing.assert_close(by_hand, embed(x))
    # patches are read row by row: patch 1 is the second patch of the first row
    torch.testing.assert_close(vit.patchify(x, 8)[:, 1], x[:, :, :8, 8:16].reshape(2, -1))


def test_explicit_attention_equals_the_fused_kernel() -> None:
    attention = vit.Attention(32, 4).eval()
    x = torch.randn(2, 9, 32)
    y, weights = attention(x, return_attention=True)
    torch.testing.assert_close(y, attention(x), rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, 4, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9))


def test_features_and_attentions() -> None:
    model = vit.ViT(vit.ViTConfig.named("tiny")).eval()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.features(x)
    assert tokens.shape == (2, 65, 64)
    logits, attentions = model(x, return_attentions=True)
    assert len(attentions) == 3 and attentions[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.head(tokens[:, 0]), logits, rtol=1e-5, atol=1e-5)


def test_init_follows_vit() -> None:
    model = vit.ViT(vit.ViTConfig.named("tiny"))
    assert model.head.bias.abs().sum() == 0 and 0.01 < model.head.weight.std() < 0.03
    assert torch.equal(model.norm.weight, torch.ones(64))


def test_patchify_errors() -> None:
    with pytest.raises(ValueError, match=r"image is 225x224 but patch size 16 does not divide it; "
                                         r"resize or crop to a multiple of 16, e\.g\. 224"):
        vit.patchify(torch.randn(1, 3, 225, 224), 16)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\), got .*\(3, 224, 224\)"):
        vit.patchify(torch.randn(3, 224, 224), 16)


def test_clear_errors() -> None:
    model = vit.ViT(vit.ViTConfig.named("tiny"))
    with pytest.raises(ValueError, match=r"image is 65x64 but patch size 8 does not divide it.*e\.g\. 64x64"):
        model(torch.randn(1, 3, 65, 64))
    with pytest.raises(ValueError, match=r"takes 64x64 images, got 32x32.*resize"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected 3 colour channels, got 64.*permute"):
        model(torch.randn(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="image_size 225 is not a multiple of patch_size 16.*image_size=224"):
        vit.ViTConfig.named("base", image_size=225)
    with pytest.raises(ValueError, match="cannot be split into 5 equal heads"):
        vit.ViTConfig.named("tiny", num_heads=5)
    with pytest.raises(ValueError, match="unknown ViT size 'giant'"):
        vit.ViTConfig.named("giant")


def test_unsupported_checkpoints_are_refused() -> None:
    config = vit.ViTConfig.named("tiny")
    hf = ViTForImageClassification(hf_config(config, hidden_act="relu"))
    with pytest.raises(ValueError, match="only the exact GELU"):
        vit.ViT.from_transformers(hf)
    with pytest.raises(ValueError, match=r"image_size \(64, 32\) is not square"):
        vit.ViT.from_transformers(ViTForImageClassification(hf_config(config, image_size=(64, 32))))
    with pytest.raises(ValueError, match="linear classifier head"):
        vit.ViT.from_transformers(ViTForImageClassification(hf_config(config, num_labels=0)))


def test_gelu_is_the_exact_erf_form() -> None:
    x = torch.linspace(-3, 3, 13)
    mlp = vit.MLP(1, 1)
    with torch.no_grad():
        mlp.fc1.weight.fill_(1), mlp.fc1.bias.zero_(), mlp.fc2.weight.fill_(1), mlp.fc2.bias.zero_()
    torch.testing.assert_close(mlp(x[:, None])[:, 0], F.gelu(x))


def test_the_ablation_record_backs_chapter_1s_box() -> None:
    """models/vit-tiny/ablations.json (scripts/ablate_vit.py): chapter 1's box says the tiny ViT does not
    depend on the warm-up, weight decay or position embeddings; each variant must score within a point of
    the shipped model or above it."""
    import json

    from utils import zoo

    folder = zoo.entry("vit").local_dir
    shipped = json.loads((folder / "training.json").read_text())
    ablations = json.loads((folder / "ablations.json").read_text())
    assert set(ablations) == {"no warm-up", "no weight decay", "no position embeddings"}
    for name, entry in ablations.items():
        assert entry["epochs"] == shipped["epochs"], name
        assert entry["held_out_accuracy"] >= shipped["held_out_accuracy"] - 0.01, name
