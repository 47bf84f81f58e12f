"""Precision settings: ``"auto"`` resolves per device; emulated bfloat16 warns."""

from __future__ import annotations

import warnings

import pytest
import torch

import dreamenv.precision as precision_module
from dreamenv.errors import ConfigError
from dreamenv.precision import (
    ARITHMETICS,
    autocast,
    check_precision,
    native_bfloat16,
    resolve_precision,
)
from dreamenv.train.loop import LOOP_PRESETS


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    """Sets whether the CPU computes bfloat16 natively, and forgets earlier warnings."""
    monkeypatch.setattr(precision_module, "_warned_emulated", set())

    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision_module, "native_bfloat16", lambda kind: value)

    return set_native


@pytest.mark.parametrize("is_native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_is_bfloat16_only_where_native(native, is_native: bool, expected: str) -> None:
    native(is_native)
    assert resolve_precision("auto", "cpu") == expected
    with autocast("auto", "cpu"):
        y = torch.nn.Linear(3, 2)(torch.ones(1, 3))
    assert y.dtype == getattr(torch, expected)


@pytest.mark.parametrize("is_native", [True, False])
def test_explicit_precisions_are_kept(native, is_native: bool) -> None:
    native(is_native)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [resolve_precision(p, "cpu") for p in ARITHMETICS] == list(ARITHMETICS)


def test_emulated_bfloat16_warns_once(native) -> None:
    native(False)
    with pytest.warns(UserWarning, match="without native bfloat16.*Use precision 'auto'"):
        assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_precision("bfloat16", "cpu")  # once is enough
        native(True)
        resolve_precision("bfloat16", "cpu")  # native: no warning at all


def test_native_bfloat16_reads_the_cpu_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    native_bfloat16.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    try:
        assert native_bfloat16("cpu") is True
        assert native_bfloat16("meta") is False  # a device it does not know: float32
    finally:
        native_bfloat16.cache_clear()


def test_a_bad_precision_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"x must be one of \['auto', 'float32', 'bfloat16'\]"):
        check_precision("fp16", "x")
    assert check_precision("auto") == "auto"


@pytest.mark.parametrize("name", ["quick", "cpu100k"])
def test_the_cpu_presets_choose_their_precision_per_machine(name: str) -> None:
    config = LOOP_PRESETS[name]
    assert config.precision == config.fit.precision == "auto"
    assert config.model_overrides["precision"] == "auto"
