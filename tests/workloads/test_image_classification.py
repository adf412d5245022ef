"""image-classification: noise images from a seed, or a folder of images; preprocess and forward windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from energy_hpc.errors import SpecError
from energy_hpc.workloads.inputs import read_images, synthetic_images

from .conftest import job, run_case

CASE = """
[[case]]
task = "image-classification"
model = "tiny-vit"
source = "random"
batch_size = 3
[case.options]
{extra}
"""


def test_windows_count_images(tiny) -> None:
    ran = run_case(job(CASE.format(extra="images = 2")), iterations=2)
    for i in (0, 1):
        st = ran.stages(i)
        assert list(st) == ["preprocess", "forward"]
        assert all((w.units, w.unit) == (3, "image") for w in st.values())
        assert (ran.whole(i).units, ran.whole(i).unit) == (3, "image")


def test_noise_images_are_the_same_for_a_seed() -> None:
    a, b, c = (synthetic_images(2, 8, s) for s in (1, 1, 2))
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=False))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def test_images_are_read_from_a_folder(tiny, tmp_path: Path) -> None:
    for i, im in enumerate(synthetic_images(2, 40, 0)):
        im.save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [im.size for im in read_images(str(tmp_path))] == [(40, 40), (40, 40)]
    ran = run_case(job(CASE.format(extra=f'image_folder = "{tmp_path}"')))
    assert ran.whole().units == 3


def test_a_folder_without_images_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="holds no"):
        read_images(str(tmp_path))
