"""Saving and loading checkpoint directories, and the errors of damaged ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dreamenv
from dreamenv import CheckpointError, load_checkpoint, save_checkpoint
from dreamenv.checkpoint import BANK_FILE, CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from dreamenv.data.store import EpisodeStore
from dreamenv.random_streams import BatchRandom, key_from_seed


@pytest.fixture
def damaged(checkpoint_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session checkpoint, free to damage."""
    target = tmp_path / "model"
    shutil.copytree(checkpoint_dir, target)
    return target


def _truncate(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def _edit_config(path: Path, **changes: object) -> None:
    file = path / CONFIG_FILE
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))


def _real_frames(store_dir: Path, count: int = 5) -> torch.Tensor:
    from dreamenv.envs.atari import stack_frames

    episode = EpisodeStore.open(store_dir).episodes()[0]
    return torch.as_tensor(stack_frames(episode.frames, np.arange(0, 40, 40 // count), 4))


def _rollout(ckpt: dreamenv.Checkpoint, steps: int = 5) -> list[torch.Tensor]:
    model = ckpt.model
    obs = torch.as_tensor(ckpt.start_bank.observations(2)).flatten(0, 1)
    b = ckpt.start_bank.size
    rng = BatchRandom(b, "cpu")
    rng.set_keys(torch.arange(b), [key_from_seed(i) for i in range(b)])
    out = []
    with torch.no_grad():
        latents = model.encode(obs).view(b, 2, 6, 6)
        latent, state = model.initial_state(
            latents, torch.as_tensor(ckpt.start_bank.actions[:, -1:])
        )
        for t in range(steps):
            pred = model.step(state, latent, torch.full((b,), t % 6), rng)
            out += [pred.next_latent, pred.reward_logits, pred.termination_logits]
            latent, state = pred.next_latent, pred.state
    return out


def test_load_gives_an_eval_model_and_its_start_bank(checkpoint_dir: Path, tiny_fit_config) -> None:
    ckpt = load_checkpoint(checkpoint_dir)
    assert ckpt.path == checkpoint_dir
    assert ckpt.model.family == "discrete"
    assert not ckpt.model.training
    assert ckpt.spec.game == "pong"
    assert ckpt.action_meanings[:2] == ("NOOP", "FIRE")
    assert ckpt.start_bank.size == tiny_fit_config.start_bank_size
    assert ckpt.start_bank.context == tiny_fit_config.start_context
    assert ckpt.start_bank.frames.dtype == np.uint8
    assert ckpt.config["format_version"] == FORMAT_VERSION
    assert ckpt.config["dreamenv_version"] == dreamenv.__version__


def test_checkpoint_holds_no_pickle(checkpoint_dir: Path) -> None:
    names = {p.name for p in checkpoint_dir.iterdir()}
    assert {CONFIG_FILE, WEIGHTS_FILE, BANK_FILE} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".pickle"))]
    with np.load(checkpoint_dir / BANK_FILE, allow_pickle=False) as data:
        assert set(data.files) == {"frames", "actions", "stack"}


def test_save_load_round_trip_is_exact(
    checkpoint_dir: Path, store_dir: Path, tmp_path: Path
) -> None:
    original = load_checkpoint(checkpoint_dir)
    path = save_checkpoint(
        tmp_path / "copy",
        original.model,
        original.start_bank,
        original.action_meanings,
        extra={"note": "round trip"},
    )
    copy = load_checkpoint(path)
    assert copy.config["note"] == "round trip"
    assert copy.model.config == original.model.config
    assert copy.spec == original.spec
    assert copy.action_meanings == original.action_meanings
    np.testing.assert_array_equal(copy.start_bank.frames, original.start_bank.frames)
    np.testing.assert_array_equal(copy.start_bank.actions, original.start_bank.actions)
    for name, tensor in original.model.state_dict().items():
        torch.testing.assert_close(copy.model.state_dict()[name], tensor, rtol=0, atol=0)

    frames = _real_frames(store_dir)
    with torch.no_grad():
        torch.testing.assert_close(
            copy.model.encode(frames), original.model.encode(frames), rtol=0, atol=0
        )
    for a, b in zip(_rollout(original), _rollout(copy), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint='.*nowhere' is not a directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_missing_config(damaged: Path) -> None:
    (damaged / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json; it is incomplete"):
        load_checkpoint(damaged)


def test_truncated_config(damaged: Path) -> None:
    _truncate(damaged / CONFIG_FILE)
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON .*truncated"):
        load_checkpoint(damaged)


def test_foreign_config(damaged: Path) -> None:
    (damaged / CONFIG_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match=r"not a dreamenv checkpoint config"):
        load_checkpoint(damaged)


def test_truncated_weights(damaged: Path) -> None:
    _truncate(damaged / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=r"weights\.safetensors is unreadable .*truncated"):
        load_checkpoint(damaged)


def test_missing_weights(damaged: Path) -> None:
    (damaged / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"has no weights\.safetensors"):
        load_checkpoint(damaged)


def test_weights_of_another_model(damaged: Path) -> None:
    config = json.loads((damaged / CONFIG_FILE).read_text())
    _edit_config(damaged, model_config={**config["model_config"], "lstm_channels": 12})
    with pytest.raises(CheckpointError, match=r"weights\.safetensors does not match"):
        load_checkpoint(damaged)


def test_discrete_weights_from_before_keep_logit_load_with_it_at_zero(damaged: Path) -> None:
    weights = damaged / WEIGHTS_FILE
    tensors = load_file(str(weights))
    saved_keep = tensors.pop("dynamics.keep_logit")
    save_file(tensors, str(weights))
    model = load_checkpoint(damaged).model
    assert model.dynamics.keep_logit.item() == 0.0 != saved_keep.item()
    assert load_checkpoint(damaged).model.dynamics.keep_logit.requires_grad


def test_missing_start_bank(damaged: Path) -> None:
    (damaged / BANK_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"has no start_bank\.npz; it is incomplete"):
        load_checkpoint(damaged)


def test_truncated_start_bank(damaged: Path) -> None:
    _truncate(damaged / BANK_FILE)
    with pytest.raises(CheckpointError, match=r"start_bank\.npz is unreadable"):
        load_checkpoint(damaged)


def test_other_format_version(damaged: Path) -> None:
    _edit_config(damaged, format_version=99)
    with pytest.raises(
        CheckpointError, match=rf"has format version 99 .*reads version {FORMAT_VERSION}"
    ):
        load_checkpoint(damaged)


def test_wrong_family(checkpoint_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"holds a 'discrete' model, expected 'rssm'"):
        load_checkpoint(checkpoint_dir, family="rssm")


def test_right_family_and_game_load(checkpoint_dir: Path) -> None:
    ckpt = load_checkpoint(checkpoint_dir, family="discrete", game="ALE/Pong-v5")
    assert ckpt.spec.game == "pong"


def test_wrong_game(checkpoint_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"models the game 'pong', not 'breakout'"):
        load_checkpoint(checkpoint_dir, game="breakout")


def test_dream_env_reports_a_damaged_checkpoint(damaged: Path) -> None:
    _truncate(damaged / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=r"weights\.safetensors is unreadable"):
        dreamenv.DreamEnv(damaged)
