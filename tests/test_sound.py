"""utils.sound: each scene attribute is audible where the design says, the encoder saves and loads,
and the shipped models/soundbind-tiny retrieves sounds from captions it was never paired with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from utils import runtime, sound, zoo  # noqa: F401  (runtime applies MMLLM_THREADS)
from utils.shapes import COLOURS, Scene, ShapeObject, ShapesWorld

EMERGENT_TARGET = 10.0  # the shipped encoder's caption -> sound recall@1 is at least this many times chance ...
EMERGENT_FLOOR = 0.75  # ... and at least this (it gets 0.935 on the gallery below; chance is 0.0094)


def scene(*objects: tuple[str, str, str, float, float], key: str = "test") -> Scene:
    """A hand-made scene from (shape, colour, size, cx, cy) tuples."""
    return Scene(tuple(ShapeObject(s, c, z, x, y, COLOURS[c]) for s, c, z, x, y in objects), key=key)


def amplitude_spectrum(wave: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, |rFFT| of the mono mix) over the whole clip, zero-padded 8x: 0.25 Hz apart,
    so a partial's peak height does not depend on where its frequency falls between bins."""
    mono = wave.sum(0).double().numpy()
    n = 8 * len(mono)
    return np.fft.rfftfreq(n, 1 / sound.SAMPLE_RATE), np.abs(np.fft.rfft(mono, n))


def peak_near(frequencies: np.ndarray, spectrum: np.ndarray, f: float, tolerance: float = 0.02) -> float:
    band = (frequencies > f * (1 - tolerance)) & (frequencies < f * (1 + tolerance))
    return float(spectrum[band].max())


def test_the_same_scene_always_sounds_the_same() -> None:
    world = ShapesWorld(3, seed=0, split="test")
    first, again = sound.sounds(world.scenes), sound.sounds(ShapesWorld(3, seed=0, split="test").scenes)
    assert first.shape == (3, 2, sound.N_SAMPLES) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert first.abs().max() <= 1.0
    assert not torch.equal(first[0], first[1])
    # the randomness is seeded by the scene: the same objects under another key differ a little
    a, b = (sound.scene_sound(scene(("circle", "red", "large", 0.5, 0.5), key=key)) for key in ("a", "b"))
    assert not torch.equal(a, b)
    assert 0.8 < a.pow(2).mean().sqrt() / b.pow(2).mean().sqrt() < 1.25  # RMS within the +-10% gain jitter
    (frequencies, spectrum_a), (_, spectrum_b) = amplitude_spectrum(a), amplitude_spectrum(b)
    assert frequencies[spectrum_a.argmax()] == pytest.approx(frequencies[spectrum_b.argmax()], rel=0.011)


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_shape_sets_the_dominant_frequency(shape: str) -> None:
    frequencies, spectrum = amplitude_spectrum(sound.scene_sound(scene((shape, "red", "large", 0.5, 0.5))))
    peak = frequencies[spectrum.argmax()]
    assert abs(peak - sound.PITCH[shape]) <= 0.01 * sound.PITCH[shape], (shape, peak)


def test_size_sets_the_loudness() -> None:
    rms = {size: sound.scene_sound(scene(("square", "blue", size, 0.5, 0.5))).pow(2).mean().sqrt().item()
           for size in ("small", "large")}
    assert 1.5 < rms["large"] / rms["small"] < 2.6, rms  # twice the amplitude, give or take the jitter


def test_horizontal_position_sets_the_pan() -> None:
    for cx in (0.15, 0.5, 0.85):
        wave = sound.scene_sound(scene(("triangle", "green", "large", cx, 0.5)))
        left, right = (wave.pow(2).sum(1) - sound.N_SAMPLES * sound.NOISE_STD ** 2).tolist()  # less the noise
        want_left, want_right = sound.pan_gains(cx)
        assert left / right == pytest.approx(want_left ** 2 / want_right ** 2, rel=0.1), cx
    # "a circle to the left of a square": the circle's pitch is louder on the left, the square's on the right
    wave = sound.scene_sound(scene(("circle", "red", "large", 0.2, 0.5), ("square", "blue", "large", 0.8, 0.5)))
    (frequencies, left), (_, right) = amplitude_spectrum(wave[:1]), amplitude_spectrum(wave[1:])
    circle, square = sound.PITCH["circle"], sound.PITCH["square"]
    assert peak_near(frequencies, left, circle) > 3 * peak_near(frequencies, right, circle)
    assert peak_near(frequencies, right, square) > 3 * peak_near(frequencies, left, square)


@pytest.mark.parametrize("colour", list(COLOURS))
def test_colour_sets_the_harmonic_profile(colour: str) -> None:
    frequencies, spectrum = amplitude_spectrum(sound.scene_sound(scene(("circle", colour, "large", 0.5, 0.5))))
    f0 = frequencies[spectrum.argmax()]
    profile = np.array([peak_near(frequencies, spectrum, h * f0, 0.01) for h in range(1, 6)])
    profile /= profile[0]  # relative to the fundamental
    np.testing.assert_allclose(profile, sound.TIMBRE[colour], atol=0.08, err_msg=colour)


def test_vertical_position_sets_the_onset() -> None:
    onsets = {}
    for cy in (0.2, 0.8):
        wave = sound.scene_sound(scene(("square", "yellow", "large", 0.5, cy)))
        onsets[cy] = int((wave.abs().amax(0) > 0.1).nonzero()[0]) / sound.SAMPLE_RATE
        assert onsets[cy] == pytest.approx(sound.ONSET_SPAN * cy, abs=0.01)
    assert onsets[0.2] < onsets[0.8]  # "above" sounds first


def test_spectrogram_shape_and_bad_inputs_are_explained() -> None:
    waves = sound.sounds(ShapesWorld(2, seed=1, split="test").scenes)
    spec = sound.spectrogram(waves)
    assert spec.shape == (2, 2, sound.N_FFT // 2 + 1, 1 + sound.N_SAMPLES // sound.HOP) == (2, 2, 257, 32)
    assert torch.equal(sound.spectrogram(waves[0]), spec[:1])
    assert spec.min() >= np.log(sound.LOG_FLOOR) - 1e-6
    for bad, message in ((torch.zeros(3, 4000), "2 channels"), (torch.zeros(2, 2, 1, 4000), "2 channels"),
                         (torch.zeros(2, 100), "too short"), ([0.0] * 4000, "must be a torch.Tensor")):
        with pytest.raises(ValueError, match=message):
            sound.spectrogram(bad)
    with pytest.raises(ValueError, match="no scenes given"):
        sound.sounds([])
    with pytest.raises(ValueError, match="wrap a single scene"):
        sound.sounds(scene(("circle", "red", "small", 0.5, 0.5)))
    with pytest.raises(ValueError, match="no objects"):
        sound.scene_sound(Scene(()))
    with pytest.raises(ValueError, match=r"\(2, S\)"):
        sound.play(torch.zeros(1, 4000))


def test_encoder_gives_unit_vectors_and_survives_a_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = sound.SoundEncoder(sound.SoundEncoderConfig(projection_dim=16)).eval()
    spec = sound.spectrogram(sound.sounds(ShapesWorld(3, seed=2, split="test").scenes))
    out = encoder(spec)
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    encoder.save_pretrained(tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "model.safetensors"]
    loaded = sound.SoundEncoder.from_pretrained(tmp_path / "enc")
    assert loaded.config == encoder.config and not loaded.training
    torch.testing.assert_close(loaded(spec), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected spectrograms"):
        encoder(spec[:, :, :100])
    with pytest.raises(ValueError, match="not a saved SoundEncoder.*config.json"):
        sound.SoundEncoder.from_pretrained(tmp_path)


def test_chance_level_reported_with_the_recalls_is_a_random_rankings_recall() -> None:
    """The training script compares recalls with utils.clip's chance level: check it by simulation."""
    from utils.clip import caption_recall_at_k, chance_caption_recall_at_k

    queries = ["a red circle", "a blue square"]
    gallery = ["a red circle", "a red circle", "a green square", "a blue square"]
    # query 0 has 2 of 4 matches (1 - C(2,1)/C(4,1) = 1/2), query 1 has 1 (1/4)
    assert chance_caption_recall_at_k(queries, gallery, 1) == pytest.approx((1 / 2 + 1 / 4) / 2)
    generator = torch.Generator().manual_seed(0)
    estimate = np.mean([caption_recall_at_k(torch.rand(2, 4, generator=generator), queries, gallery, 2)
                        for _ in range(4000)])
    assert estimate == pytest.approx(chance_caption_recall_at_k(queries, gallery, 2), abs=0.02)


def test_listening_and_looking() -> None:
    import matplotlib

    matplotlib.use("Agg")
    wave = sound.scene_sound(scene(("circle", "purple", "small", 0.3, 0.4)))
    player = sound.play(wave)
    header = player.data[:44]  # a WAV file: channels at bytes 22-23, sample rate at 24-27
    assert type(player).__name__ == "Audio" and header[:4] == b"RIFF"
    channels, rate = int.from_bytes(header[22:24], "little"), int.from_bytes(header[24:28], "little")
    assert (channels, rate) == (2, sound.SAMPLE_RATE)
    axes = sound.show_spectrogram(sound.spectrogram(wave), title="a small purple circle")
    assert [ax.get_title() for ax in axes] == ["a small purple circle (left)", "a small purple circle (right)"]


def test_shipped_encoder_finds_sounds_from_captions_it_never_saw_paired() -> None:
    """Emergent retrieval: captions through the tiny CLIP's text encoder query held-out sounds."""
    from transformers import CLIPModel, CLIPProcessor

    from utils.clip import caption_recall_at_k, chance_caption_recall_at_k, cosine_similarity_matrix, encode_texts

    folder = zoo.MODELS_DIR / "soundbind-tiny"
    zoo.verify(folder, "python scripts/train_imagebind.py")
    encoder = sound.SoundEncoder.from_pretrained(folder)
    sound.SoundEncoder.from_pretrained(folder / "text-paired")  # the baseline ships beside it
    clip = CLIPModel.from_pretrained(zoo.path("clip"), dtype=torch.float32).eval()
    assert encoder.config.projection_dim == clip.config.projection_dim
    world = ShapesWorld(200, seed=21, split="test")  # scenes neither the encoder nor CLIP trained on
    captions = [s.caption for s in world.scenes]
    text = encode_texts(clip, CLIPProcessor.from_pretrained(zoo.path("clip")), captions)
    sounds = sound.encode_sounds(encoder, sound.sounds(world.scenes))  # (200, d), never paired with text
    similarity = cosine_similarity_matrix(text, sounds)  # (200, 200): captions x sounds
    recall = caption_recall_at_k(similarity, captions, captions, 1)
    chance = chance_caption_recall_at_k(captions, captions, 1)
    assert recall >= max(EMERGENT_TARGET * chance, EMERGENT_FLOOR), f"recall@1 {recall:.3f}, chance {chance:.4f}"
