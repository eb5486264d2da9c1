"""A third ShapesWorld modality (chapter 6): the short stereo "sound" of a scene, and its encoder.

Every object of a scene plays one tone, synthesised from the scene description alone, so what
you hear agrees with what you see and read:

===========  =========================================================================
attribute    what it sets
===========  =========================================================================
shape        the pitch: circle 320 Hz, square 560 Hz, triangle 720 Hz (chosen so that
             no two of the 15 partials, harmonics 1-5 of each, lie closer than 80 Hz)
size         the loudness: a large object is twice as loud (+6 dB) as a small one
colour       the timbre: which overtone (harmonics 2-5) rides on the fundamental,
             or none at all (purple is a pure sine), see :data:`TIMBRE`
cx           the stereo pan, constant power: left gain cos(theta), right sin(theta),
             theta = cx * pi / 2, so "to the left of" is louder in the left channel
cy           the onset time: onset = 0.18 s * cy, so "above" sounds first
===========  =========================================================================

A little randomness, drawn from a generator seeded by the scene (``scene.key`` and its
objects), keeps the encoder from memorising exact waveforms: each tone's pitch moves by up to
0.5 %, its loudness by up to 10 %, its partials start at random phases, and white noise (std
0.01) lies under everything. The same scene always gives the same wave.

:class:`SoundEncoder` maps a sound's log-spectrogram to a unit vector of the tiny CLIP's
projection width; :func:`train_to_targets` trains it, ImageBind's way, to land next to the
frozen embedding of the paired image (or, for the baseline, of the caption). Retrieval with it is
scored by :func:`utils.clip.caption_recall_at_k`, where any scene with the query's caption is a hit.

Shapes ledger (besides the course's letters): S samples, F frequency bins (``N_FFT // 2 + 1``),
T spectrogram frames (here T is time, not diffusion steps), and C = 2 channels (left, right).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.clip import MAX_LOGIT_SCALE, TINY_PROJECTION_DIM, clip_loss
from utils.shapes import Scene, ShapeObject

SAMPLE_RATE = 8000  # Hz; partials stay below 3.7 kHz, under the 4 kHz Nyquist limit
DURATION = 0.5  # seconds per clip
N_SAMPLES = int(SAMPLE_RATE * DURATION)  # S = 4000
PITCH: dict[str, float] = {"circle": 320.0, "square": 560.0, "triangle": 720.0}  # fundamental f0, Hz
LOUDNESS: dict[str, float] = {"small": 0.5, "large": 1.0}
TIMBRE: dict[str, tuple[float, ...]] = {  # amplitudes of harmonics 1..5 (the fundamental is always 1)
    "red": (1.0, 0.7, 0.0, 0.0, 0.0),  # plus the octave (2 f0)
    "green": (1.0, 0.0, 0.7, 0.0, 0.0),  # plus the twelfth (3 f0)
    "blue": (1.0, 0.0, 0.0, 0.7, 0.0),  # plus two octaves (4 f0)
    "yellow": (1.0, 0.0, 0.0, 0.0, 0.7),  # plus 5 f0
    "purple": (1.0, 0.0, 0.0, 0.0, 0.0),  # a pure sine
}
TONE_SECONDS = 0.3  # each tone lasts this long ...
ONSET_SPAN = 0.18  # ... and starts at ONSET_SPAN * cy seconds, so every tone ends inside the clip
ATTACK, RELEASE = 0.01, 0.05  # seconds of linear fade in and out (no clicks)
MASTER_GAIN = 0.2  # three loud tones in phase stay near 1; not normalised per clip, so loudness means size
PITCH_JITTER, GAIN_JITTER, NOISE_STD = 0.005, 0.1, 0.01
N_FFT = 512  # STFT window: 64 ms, frequency bins 15.6 Hz apart, F = 257
HOP = 128  # 16 ms between frames: T = 1 + S // HOP = 32 frames for a 0.5 s clip
LOG_FLOOR = 1e-3  # log(|STFT| + floor): silence sits at about -6.9 instead of -inf


# --- synthesis -----------------------------------------------------------------------------


def _generator(scene: Scene) -> torch.Generator:
    """A generator seeded by the scene's key and objects (hand-made scenes have an empty key)."""
    digest = hashlib.sha256(f"sound/{scene.key}/{scene.objects!r}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def pan_gains(cx: float) -> tuple[float, float]:
    """Constant-power pan: (left, right) = (cos theta, sin theta), theta = cx pi / 2, so L^2 + R^2 = 1."""
    theta = min(max(cx, 0.0), 1.0) * math.pi / 2
    return math.cos(theta), math.sin(theta)


def _envelope(t: torch.Tensor) -> torch.Tensor:
    """Trapezoid over the tone's own time ``t`` (s): 0 before and after, linear fades at both ends."""
    return torch.minimum(t / ATTACK, (TONE_SECONDS - t) / RELEASE).clamp(0, 1)


def _tone(obj: ShapeObject, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One object's tone as a stereo wave (2, S), float64."""
    jitter = torch.rand(2, generator=generator, dtype=torch.float64) * 2 - 1  # (2,) in [-1, 1]
    f0 = PITCH[obj.shape] * (1 + PITCH_JITTER * jitter[0].item())
    gain = MASTER_GAIN * LOUDNESS[obj.size] * (1 + GAIN_JITTER * jitter[1].item())
    amplitudes = torch.tensor(TIMBRE[obj.colour], dtype=torch.float64)  # (5,)
    harmonics = torch.arange(1, len(amplitudes) + 1, dtype=torch.float64)  # (5,)
    phases = torch.rand(len(amplitudes), generator=generator, dtype=torch.float64) * 2 * math.pi  # (5,)
    local = t - ONSET_SPAN * obj.cy  # (S,) time since this tone's onset
    partials = torch.sin(2 * math.pi * f0 * harmonics[:, None] * local[None, :] + phases[:, None])  # (5, S)
    mono = gain * _envelope(local) * (amplitudes[:, None] * partials).sum(0)  # (S,)
    left, right = pan_gains(obj.cx)
    return torch.stack([left * mono, right * mono])  # (2, S)


def scene_sound(scene: Scene) -> torch.Tensor:
    """The scene's sound: a stereo wave (2, S) in [-1, 1] at :data:`SAMPLE_RATE`, the same on every call."""
    if not isinstance(scene, Scene):
        raise ValueError(f"scene_sound takes a ShapesWorld Scene, got {type(scene).__name__}")
    if not scene.objects:
        raise ValueError("the scene has no objects, so it makes no sound; pass a scene with 1-3 objects")
    generator = _generator(scene)
    t = torch.arange(N_SAMPLES, dtype=torch.float64) / SAMPLE_RATE  # (S,) seconds
    wave = torch.zeros(2, N_SAMPLES, dtype=torch.float64)  # (2, S)
    for obj in scene.objects:
        wave += _tone(obj, t, generator)
    wave += NOISE_STD * torch.randn(2, N_SAMPLES, generator=generator, dtype=torch.float64)
    return wave.clamp(-1, 1).float()


def sounds(scenes: Sequence[Scene]) -> torch.Tensor:
    """The sounds of several scenes, stacked: (B, 2, S)."""
    if isinstance(scenes, Scene):
        raise ValueError("sounds takes a list of scenes; wrap a single scene in a list: [scene]")
    if len(scenes) == 0:
        raise ValueError("no scenes given: sounds needs a non-empty list of scenes")
    return torch.stack([scene_sound(s) for s in scenes])


def spectrogram(wave: torch.Tensor) -> torch.Tensor:
    """Log-magnitude STFT, log(|STFT| + LOG_FLOOR), of a wave (2, S) or (B, 2, S): (B, 2, F, T).

    Hann window of ``N_FFT`` = 512 samples (F = 257 bins, 15.6 Hz apart), hop ``HOP`` = 128 samples
    (16 ms), centred frames, so a 0.5 s clip has T = 32 frames.
    """
    if not isinstance(wave, torch.Tensor):
        raise ValueError(f"wave must be a torch.Tensor (2, S) or (B, 2, S), got {type(wave).__name__}")
    if wave.ndim == 2:
        wave = wave[None]  # (1, 2, S)
    if wave.ndim != 3 or wave.shape[1] != 2:
        raise ValueError(f"expected a stereo wave with 2 channels, shaped (2, S) or (B, 2, S); "
                         f"got shape {tuple(wave.shape)}")
    B, C, S = wave.shape
    if S < N_FFT:
        raise ValueError(f"the wave is too short: {S} samples, but one STFT window needs N_FFT = {N_FFT}")
    window = torch.hann_window(N_FFT, dtype=wave.dtype, device=wave.device)
    stft = torch.stft(wave.reshape(B * C, S), n_fft=N_FFT, hop_length=HOP, window=window, center=True,
                      return_complex=True)  # (B*C, F, T)
    log_magnitude = torch.log(stft.abs() + LOG_FLOOR)
    return log_magnitude.reshape(B, C, *log_magnitude.shape[1:])  # (B, 2, F, T)


# --- the encoder ---------------------------------------------------------------------------


@dataclass
class SoundEncoderConfig:
    """Sizes of :class:`SoundEncoder`; the defaults are the tiny one shipped in models/soundbind-tiny."""

    n_fft: int = N_FFT  # F = n_fft // 2 + 1 frequency bins
    frames: int = 1 + N_SAMPLES // HOP  # T
    width: int = 64  # D, channels of the temporal convolutions
    projection_dim: int = TINY_PROJECTION_DIM  # set it from the CLIP config the encoder is bound to

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1


class SoundEncoder(nn.Module):
    """Log-spectrogram (B, 2, F, T) -> unit vector (B, projection_dim).

    Each frame's 2F log-magnitudes (both channels) are the input channels of three 1-D
    convolutions over time: the first layer can tie a fundamental to its overtone and compare
    left with right (binding colour and position to shape); the strided ones shorten time 4x.
    The flattened frames, still in order (onsets carry "above"), are projected to the shared space.
    """

    def __init__(self, config: SoundEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SoundEncoderConfig()
        D = config.width
        self.convs = nn.ModuleList([
            nn.Conv1d(2 * config.bins, D, kernel_size=3, padding=1),
            nn.Conv1d(D, D, kernel_size=3, stride=2, padding=1),
            nn.Conv1d(D, D, kernel_size=3, stride=2, padding=1),
        ])
        reduced = (config.frames + 3) // 4  # two stride-2 convolutions: ceil(ceil(T / 2) / 2)
        self.projection = nn.Linear(D * reduced, config.projection_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        B, C, Fb, T = spec.shape  # (B, 2, F, T)
        if (C, Fb, T) != (2, self.config.bins, self.config.frames):
            raise ValueError(f"expected spectrograms (B, 2, {self.config.bins}, {self.config.frames}) from "
                             f"utils.sound.spectrogram, got {tuple(spec.shape)}")
        x = spec.reshape(B, C * Fb, T)  # (B, 2F, T): frequencies of both channels become channels
        for conv in self.convs:
            x = F.gelu(conv(x))  # (B, D, T), then (B, D, T/2), (B, D, T/4)
        return F.normalize(self.projection(x.flatten(1)), dim=-1)  # (B, projection_dim), unit length

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` to ``folder`` (created if need be)."""
        from utils import zoo

        zoo.save_module(folder, self, {"model_type": "shapesworld-sound-encoder", **asdict(self.config)})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "SoundEncoder":
        """The encoder saved in ``folder`` by :meth:`save_pretrained`, in eval mode."""
        from utils import zoo

        raw, weights = zoo.load_module_files(folder, "SoundEncoder", "python scripts/train_imagebind.py")
        model = cls(SoundEncoderConfig(**{f.name: raw[f.name] for f in fields(SoundEncoderConfig) if f.name in raw}))
        model.load_state_dict(weights)
        return model.eval()


@torch.no_grad()
def encode_sounds(encoder: SoundEncoder, waves: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Unit embeddings (B, projection_dim) of waves (B, 2, S), in batches."""
    out = [encoder(spectrogram(waves[i:i + batch_size])) for i in range(0, len(waves), batch_size)]
    return torch.cat(out)


# --- training: bind sounds to a frozen embedding space ---------------------------------------


def train_to_targets(encoder: SoundEncoder, specs: torch.Tensor, targets: torch.Tensor, *, steps: int,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> dict[str, Any]:
    """Train ``encoder`` so each spectrogram (n, 2, F, T) lands next to its frozen target (n, d).

    ImageBind's recipe when the targets are image embeddings: the symmetric InfoNCE
    :func:`utils.clip.clip_loss` over a batch, similarity = sound @ target.T, with a learned
    temperature tau = 1 / exp(logit_scale) capped at 1 / MAX_LOGIT_SCALE as in CLIP. The targets
    never move. Returns the loss of each step and the final 1/tau.
    """
    from utils.training import update, warmup_then_cosine_schedule

    if len(specs) != len(targets):
        raise ValueError(f"{len(specs)} sounds but {len(targets)} targets: they must pair up")
    targets = F.normalize(targets.float(), dim=-1)  # (n, d)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial tau = 0.07
    optimizer = torch.optim.AdamW([*encoder.parameters(), logit_scale], lr=lr, weight_decay=0.01)
    schedule = warmup_then_cosine_schedule(optimizer, steps, steps // 20)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    encoder.train()
    for _ in range(steps):
        batch = torch.randperm(len(specs), generator=generator)[:batch_size]  # (B,)
        similarity = encoder(specs[batch].float()) @ targets[batch].T  # (B, B): sounds x targets
        loss = clip_loss(similarity, 1 / logit_scale.exp())
        update(optimizer, loss, schedule=schedule)
        with torch.no_grad():
            logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))
        losses.append(loss.item())
    encoder.eval()
    return {"losses": losses, "inverse_temperature": logit_scale.exp().item()}


# --- listening and looking -------------------------------------------------------------------


def play(wave: torch.Tensor) -> Any:
    """An ``IPython.display.Audio`` player for a stereo wave (2, S), not normalised (loudness is size)."""
    from IPython.display import Audio

    if not isinstance(wave, torch.Tensor) or wave.ndim != 2 or wave.shape[0] != 2:
        raise ValueError(f"play takes one stereo wave shaped (2, S), got {getattr(wave, 'shape', type(wave).__name__)}")
    return Audio(wave.clamp(-1, 1).numpy(), rate=SAMPLE_RATE, normalize=False)


def show_spectrogram(spec: torch.Tensor, axes: Sequence[Any] | None = None, title: str = "") -> Sequence[Any]:
    """Draw a log-spectrogram (2, F, T) or (1, 2, F, T): left and right channels side by side.

    The x axis is time in seconds, the y axis frequency in Hz; returns the two matplotlib axes.
    """
    import matplotlib.pyplot as plt

    spec = spec[0] if spec.ndim == 4 else spec  # (2, F, T)
    if spec.ndim != 3 or spec.shape[0] != 2:
        raise ValueError(f"expected a spectrogram (2, F, T) from utils.sound.spectrogram, got {tuple(spec.shape)}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(7, 2.6), sharey=True)
    extent = (0.0, (spec.shape[2] - 1) * HOP / SAMPLE_RATE, 0.0, SAMPLE_RATE / 2)
    low, high = float(spec.min()), float(spec.max())
    for ax, channel, name in zip(axes, spec, ("left", "right")):
        ax.imshow(channel.numpy(), origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=low, vmax=high)
        ax.set_title(f"{title} ({name})" if title else name, fontsize=9)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (Hz)")
    return axes
