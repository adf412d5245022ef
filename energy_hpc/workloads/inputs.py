"""Inputs for the workloads: deterministic stand-ins when the job gives none, or the user's own
files. Stand-ins are generated from a fixed seed, so every rank, run and dtype sees the same inputs.
All readers are plain Python/numpy/PIL (no torchaudio, no datasets)."""

from __future__ import annotations

import math
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from energy_hpc.errors import SpecError
from energy_hpc.workloads.options import read_lines

if TYPE_CHECKING:
    import PIL.Image

T = TypeVar("T")

PROMPT = "Explain, step by step and for a general audience, how a heat pump can move heat from a cold place to a warm one."

SENTENCES = (
    "The committee will publish its final report on energy use in data centres next spring.",
    "Please close the window before you leave, because it is going to rain tonight.",
    "The museum opens at nine o'clock and is free for children under twelve.",
    "Researchers measured how much power each graphics processor drew during the experiment.",
    "A small bakery on the corner sells the best bread in the whole town.",
    "The train to the airport leaves every fifteen minutes from platform three.",
    "She learned to play the violin when she was seven years old.",
    "Our results show that lower precision saves energy without changing the answers.",
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def in_turn(items: Sequence[T], iteration: int, n: int) -> list[T]:
    """The ``n`` items of batch ``iteration``, taking ``items`` in turn (wrapping around)."""
    start = max(iteration, 0) * n
    return [items[(start + i) % len(items)] for i in range(n)]


def text_lines(path: str, what: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file (a regular file of at most
    :data:`~energy_hpc.workloads.options.MAX_TEXT_FILE_BYTES`; the job file's validation checked it)."""
    try:
        return read_lines(path, what)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _files(folder: str, suffixes: tuple[str, ...], what: str) -> list[Path]:
    p = Path(folder)
    if not p.is_dir():
        raise SpecError(f"{what} {folder!r} is not a folder")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in suffixes and f.is_file())
    if not files:
        raise SpecError(f"{what} {folder!r} holds no {'/'.join(suffixes)} files")
    return files


# ---------------------------------------------------------------- images


def synthetic_images(n: int, size: int, seed: int) -> list[PIL.Image.Image]:
    """``n`` RGB images of ``size`` x ``size`` pixels of uniform noise (PIL), the same for a seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB") for _ in range(n)]


def read_images(folder: str) -> list[PIL.Image.Image]:
    """Every image in ``folder`` (sorted by name), as RGB PIL images loaded into memory."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for f in _files(folder, IMAGE_SUFFIXES, "options.image_folder"):
        try:
            with Image.open(f) as im:
                out.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise SpecError(f"image {str(f)!r} cannot be read ({exc}); remove it from the folder") from None
    return out


# ---------------------------------------------------------------- audio


def tone(seconds: float, rate: int, index: int) -> np.ndarray:
    """A deterministic test signal: a chord of three sines whose pitch depends on ``index``, with a
    slow amplitude envelope, as float32 in [-1, 1]."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    f0 = 220.0 * 2 ** ((index % 12) / 12)
    sig = sum(np.sin(2 * math.pi * f0 * k * t) / k for k in (1, 2, 3))
    env = 0.5 * (1 - np.cos(2 * math.pi * t / max(seconds, 1e-3)))
    return (0.3 * env * sig).astype(np.float32)


def read_wav(path: Path, rate: int) -> np.ndarray:
    """A PCM .wav file as mono float32 at ``rate`` Hz (channels averaged; linear-interpolation
    resampling, which is enough for measuring compute, not for accuracy studies)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, src_rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise SpecError(
            f"audio file {str(path)!r} is not a readable PCM .wav ({exc}); convert it, e.g. "
            "ffmpeg -i in.mp3 -ac 1 -ar 16000 out.wav"
        ) from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / (1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    else:  # pragma: no cover - wave accepts only 1..4 bytes
        raise SpecError(f"audio file {str(path)!r}: {8 * width}-bit samples are not supported")
    x = x.reshape(-1, channels).mean(axis=1)
    if src_rate != rate and len(x) > 1:
        n = round(len(x) * rate / src_rate)
        x = np.interp(np.arange(n) * (src_rate / rate), np.arange(len(x)), x).astype(np.float32)
    return x


def read_wavs(folder: str, rate: int) -> list[np.ndarray]:
    return [read_wav(f, rate) for f in _files(folder, (".wav",), "options.audio_folder")]


def write_wav(path: Path, signal: np.ndarray, rate: int) -> None:
    """Mono 16-bit PCM (for tests and for users who want the stand-in audio as files)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
