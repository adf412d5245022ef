"""speech-recognition: samples as units, seconds of audio as aux units; tones or .wav files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from energy_hpc.errors import SpecError
from energy_hpc.workloads.inputs import read_wav, tone, write_wav

from .conftest import job, run_case

CASE = """
[[case]]
task = "speech-recognition"
model = "tiny-whisper"
source = "random"
batch_size = 2
[case.options]
max_new_tokens = 4
{extra}
"""


def test_windows_count_samples_and_audio_seconds(tiny) -> None:
    ran = run_case(job(CASE.format(extra="audio_seconds = 0.5\nignore_eos = true")))
    st = ran.stages()
    assert list(st) == ["features", "generate"]
    for w in (*st.values(), ran.whole()):
        assert (w.units, w.unit, w.aux_units, w.aux_unit) == (2, "sample", 1.0, "audio-second")


def test_only_seconds_inside_the_model_window_count(tiny) -> None:
    # the toy Whisper's window is 1 s: a 3 s clip is cut to it
    ran = run_case(job(CASE.format(extra="audio_seconds = 3.0")))
    assert ran.whole().aux_units == 2.0


def test_wav_files_are_read_mixed_to_mono_and_resampled(tiny, tmp_path: Path) -> None:
    rate = 8000
    stereo = np.stack([tone(0.5, rate, 0), tone(0.5, rate, 0)], axis=1)
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((stereo * 32767).astype("<i2").tobytes())
    write_wav(tmp_path / "b.wav", tone(0.25, 16000, 3), 16000)
    x = read_wav(tmp_path / "a.wav", 16000)
    assert x.dtype == np.float32 and len(x) == 8000  # 0.5 s at 16 kHz
    assert np.allclose(x[::2][:100], tone(0.5, rate, 0)[:100], atol=1e-3)
    ran = run_case(job(CASE.format(extra=f'audio_folder = "{tmp_path}"')))
    assert ran.whole().aux_units == pytest.approx(0.75)


def test_a_file_that_is_not_wav_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"ID3 mp3 data")
    with pytest.raises(SpecError, match=r"not a readable PCM .wav.*ffmpeg"):
        read_wav(tmp_path / "x.wav", 16000)


def test_tones_are_deterministic_and_bounded() -> None:
    a, b = tone(1.0, 16000, 5), tone(1.0, 16000, 5)
    assert np.array_equal(a, b) and np.abs(a).max() <= 1 and len(a) == 16000
    assert not np.array_equal(a, tone(1.0, 16000, 6))
