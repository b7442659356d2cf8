"""The options a training request and a ``power`` next-sample request may set: read into numbers, or refused
with the option named (the server turns the refusal into a 400 before anything runs)."""

from __future__ import annotations

import math

import pytest
from fastapi import HTTPException

from lesion_app.lib.activelearning.power import MAX_BETA, request_options
from lesion_app.lib.trainers.segmentation import train_options

DEFAULTS = {"max_epochs": 10, "max_minutes": 0.0, "batch_size": 8, "lr": 1e-3, "val_fraction": 0.2}


def test_train_options_keep_the_defaults_and_read_numbers_and_numeric_strings() -> None:
    assert train_options(DEFAULTS, {}) == DEFAULTS
    request = {"max_epochs": "3", "lr": "2e-4", "batch_size": 4.0, "val_fraction": 0.5, "other": "x"}
    options = train_options(DEFAULTS, request)
    assert options == {**DEFAULTS, "max_epochs": 3, "lr": 2e-4, "batch_size": 4, "val_fraction": 0.5}
    assert isinstance(options["max_epochs"], int) and isinstance(options["batch_size"], int)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"max_epochs": "abc"}, "max_epochs must be a whole number from 1 to 100000, got 'abc'"),
        ({"max_epochs": -1}, "max_epochs must be"),
        ({"max_epochs": 2.5}, "max_epochs must be a whole number"),
        ({"max_epochs": True}, "max_epochs must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"lr": 0}, "lr must be a number above 0"),
        ({"lr": math.inf}, "lr must be"),
        ({"lr": None}, "lr must be"),
        ({"val_fraction": 1.0}, "val_fraction must be a number between 0 and 1, got 1.0"),
        ({"max_minutes": -5}, "max_minutes must be"),
    ],
)
def test_train_options_outside_their_range_are_refused_by_name(request_: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        train_options(DEFAULTS, request_)


def test_power_options_default_and_read() -> None:
    assert request_options({}, 1.0) == (1.0, None)
    assert request_options({"beta": "2", "seed": "7"}, 1.0) == (2.0, 7)
    assert request_options({"beta": 0, "seed": 0}, 1.0) == (0.0, 0)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"beta": -3}, "beta must be a number from 0 to"),
        ({"beta": MAX_BETA * 2}, "beta must be"),
        ({"beta": 1e308}, "beta must be"),
        ({"beta": "x"}, "beta must be"),
        ({"beta": False}, "beta must be"),
        ({"seed": "abc"}, "seed must be a whole number from 0 to 4294967295, got 'abc'"),
        ({"seed": -1}, "seed must be"),
        ({"seed": 2**32}, "seed must be"),
        ({"seed": 1.5}, "seed must be"),
        ({"seed": True}, "seed must be"),
    ],
)
def test_power_options_outside_their_range_are_400(request_: dict, message: str) -> None:
    with pytest.raises(HTTPException) as refused:
        request_options(request_, 1.0)
    assert refused.value.status_code == 400 and refused.value.detail.startswith(message)
