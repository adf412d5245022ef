"""Set-up errors reach every rank: none is left waiting in a collective."""

from __future__ import annotations

import pytest

from energy_hpc.context import SingleComm
from energy_hpc.errors import ModelSourceError
from energy_hpc.run import CollectiveUserError, collective


def test_user_error_is_raised_with_its_message() -> None:
    def fail():
        raise ModelSourceError("model folder x does not exist")

    with pytest.raises(CollectiveUserError, match="model folder x does not exist"):
        collective(SingleComm(), "models", fail)


def test_unexpected_error_is_passed_on_not_left_on_one_rank() -> None:
    def fail():
        raise OSError(122, "Disk quota exceeded")

    with pytest.raises(CollectiveUserError, match=r"models: OSError: .*Disk quota exceeded"):
        collective(SingleComm(), "models", fail)


def test_result_comes_back_when_nothing_fails() -> None:
    assert collective(SingleComm(), "device", lambda: 42) == 42
