"""Shared fixtures: a tiny digits scenario, a trained small model, an isolated model cache."""

from __future__ import annotations

import pytest
import torch

import unlearnkit as uk
from unlearnkit.engine import TrainConfig

# The tests train tiny models: one intra-op thread is as fast and avoids thread oversubscription when the
# machine is busy (2-core CI runners).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache from tests."""
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "uk_cache"))


@pytest.fixture(scope="session")
def digits_class_scenario() -> uk.Scenario:
    return uk.Scenario(dataset="digits", forget="class:3", seed=0)


@pytest.fixture(scope="session")
def digits_random_scenario() -> uk.Scenario:
    return uk.Scenario(dataset="digits", forget="random:0.1", seed=0)


@pytest.fixture(scope="session")
def trained_mlp(digits_class_scenario) -> torch.nn.Module:
    """An MLP trained briefly on digits (seconds on CPU)."""
    return uk.train("mlp", digits_class_scenario, config=TrainConfig(epochs=8), device="cpu")


@pytest.fixture(scope="module")
def clip(world):
    """A random-weight tiny CLIP sized for the requesting module's concept ``world`` fixture."""
    from unlearnkit.concept import small_clip

    return small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)
