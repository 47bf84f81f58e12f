"""Saving and loading checkpoint directories, and the errors of damaged ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dreamenv
from dreamenv import CheckpointError, ConfigError, load_checkpoint, save_checkpoint
from dreamenv.atomic_files import COMMIT_DIR, MANIFEST_FILE
from dreamenv.checkpoint import BANK_FILE, CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from dreamenv.data.store import EpisodeStore
from dreamenv.envs.options import DreamOptions
from dreamenv.envs.vector import DreamVectorEnv
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
    assert ckpt.start_bank.size == tiny_fit_config.start_bank_size + ckpt.start_bank.resets
    assert 1 <= ckpt.start_bank.resets <= tiny_fit_config.start_bank_size
    assert ckpt.start_bank.context == tiny_fit_config.start_context
    assert ckpt.start_bank.frames.dtype == np.uint8
    assert ckpt.config["format_version"] == FORMAT_VERSION
    assert ckpt.config["dreamenv_version"] == dreamenv.__version__


def test_checkpoint_holds_no_pickle(checkpoint_dir: Path) -> None:
    names = {p.name for p in checkpoint_dir.iterdir()}
    assert {CONFIG_FILE, WEIGHTS_FILE, BANK_FILE} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".pickle"))]
    with np.load(checkpoint_dir / BANK_FILE, allow_pickle=False) as data:
        assert set(data.files) == {"frames", "actions", "stack", "resets"}


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


@pytest.mark.parametrize(
    "field", ["family", "spec", "num_actions", "model_config", "action_meanings"]
)
def test_config_without_a_field(damaged: Path, field: str) -> None:
    config = json.loads((damaged / CONFIG_FILE).read_text())
    del config[field]
    (damaged / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"config\.json has no '{field}' field; .*Restore"):
        load_checkpoint(damaged)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"family": 3}, r"'family' must be a JSON string, got the int 3"),
        ({"spec": ["pong"]}, r"'spec' must be a JSON object, got the list \['pong'\]"),
        ({"num_actions": "6"}, r"'num_actions' must be a JSON integer, got the string '6'"),
        ({"num_actions": True}, r"'num_actions' must be a JSON integer, got the boolean True"),
        ({"num_actions": 0}, r"'num_actions' must be at least 1, got 0"),
        ({"model_config": None}, r"'model_config' must be a JSON object, got the NoneType None"),
        ({"action_meanings": "NOOP"}, r"'action_meanings' must be a JSON list, got the string"),
        ({"action_meanings": ["NOOP", "FIRE"]}, r"'action_meanings' must be 6 strings"),
        ({"action_meanings": [1, 2, 3, 4, 5, 6]}, r"'action_meanings' must be 6 strings"),
    ],
)
def test_config_with_a_field_of_the_wrong_type(damaged: Path, changes: dict, message: str) -> None:
    _edit_config(damaged, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(damaged)


def test_config_that_is_not_an_object(damaged: Path) -> None:
    (damaged / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"not a dreamenv checkpoint config \(format='list'"):
        load_checkpoint(damaged)


def test_unknown_family_suggests_a_registered_one(damaged: Path) -> None:
    _edit_config(damaged, family="discrte")
    with pytest.raises(
        CheckpointError,
        match=r"unknown world-model family 'discrte'; did you mean 'discrete'\? registered "
        r"families: \[.*'rssm'.*\]",
    ):
        load_checkpoint(damaged)


def test_config_with_a_bad_spec(damaged: Path) -> None:
    config = json.loads((damaged / CONFIG_FILE).read_text())
    _edit_config(damaged, spec={**config["spec"], "screen": 96})
    with pytest.raises(
        CheckpointError, match=r"'spec' is not a valid AtariSpec \(Unknown AtariSpec"
    ):
        load_checkpoint(damaged)
    _edit_config(damaged, spec={**config["spec"], "screen_size": 33})
    with pytest.raises(
        CheckpointError, match=r"'spec' is not a valid AtariSpec \(screen_size must"
    ):
        load_checkpoint(damaged)


def test_config_with_a_bad_model_config(damaged: Path) -> None:
    config = json.loads((damaged / CONFIG_FILE).read_text())
    _edit_config(damaged, model_config={**config["model_config"], "size": 3})
    with pytest.raises(
        CheckpointError, match=r"'model_config' does not build a 'discrete' model \(Unknown"
    ):
        load_checkpoint(damaged)


def _edit_bank(path: Path, **changes: np.ndarray) -> None:
    with np.load(path / BANK_FILE) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    with open(path / BANK_FILE, "wb") as f:
        np.savez_compressed(f, **arrays)


def test_start_bank_of_another_stack(damaged: Path) -> None:
    _edit_bank(damaged, stack=np.array(2))
    with pytest.raises(
        CheckpointError, match=r"start_bank\.npz stacks 2 frames per observation; the spec stacks 4"
    ):
        load_checkpoint(damaged)


def test_start_bank_of_another_frame_shape(damaged: Path) -> None:
    with np.load(damaged / BANK_FILE) as data:
        frames = data["frames"]
    _edit_bank(damaged, frames=frames[:, :, :32, :32])
    with pytest.raises(
        CheckpointError,
        match=r"holds frames of shape \(19, 7, 32, 32\).*uint8 \(N, context \+ 3, 96, 96\)",
    ):
        load_checkpoint(damaged)


@pytest.mark.parametrize("resets", [-1, 20])
def test_start_bank_with_a_bad_count_of_episode_starts(damaged: Path, resets: int) -> None:
    _edit_bank(damaged, resets=np.array(resets))
    with pytest.raises(
        CheckpointError, match=rf"marks {resets} of its 19 starts as episode starts; expected 0"
    ):
        load_checkpoint(damaged)


def test_start_bank_without_episode_starts_still_loads(damaged: Path) -> None:
    with np.load(damaged / BANK_FILE) as data:  # as dreamenv wrote banks before they had them
        arrays = {
            k: data[k][:16] if k != "stack" else data[k] for k in ("frames", "actions", "stack")
        }
    with open(damaged / BANK_FILE, "wb") as f:
        np.savez_compressed(f, **arrays)
    ckpt = load_checkpoint(damaged)
    assert (ckpt.start_bank.size, ckpt.start_bank.resets) == (16, 0)
    with pytest.raises(ConfigError, match=r"reset_share=1.0 draws dream starts from real episode"):
        DreamVectorEnv(ckpt, 2, options=DreamOptions(reset_share=1.0))


def test_start_bank_whose_actions_do_not_fit_its_frames(damaged: Path) -> None:
    with np.load(damaged / BANK_FILE) as data:
        actions = data["actions"]
    _edit_bank(damaged, actions=actions[:, :-1])
    with pytest.raises(
        CheckpointError, match=r"holds actions of shape \(19, 2\) .*expected integer"
    ):
        load_checkpoint(damaged)


def test_start_bank_with_actions_out_of_range(damaged: Path) -> None:
    with np.load(damaged / BANK_FILE) as data:
        actions = data["actions"]
    actions[3, 1] = 6
    _edit_bank(damaged, actions=actions)
    with pytest.raises(
        CheckpointError, match=r"holds actions in \[0, 6\]; the model takes 6 actions, \[0, 5\]"
    ):
        load_checkpoint(damaged)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_with_non_finite_values(damaged: Path, value: float) -> None:
    weights = damaged / WEIGHTS_FILE
    tensors = load_file(str(weights))
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    tensors[name].view(-1)[1] = value
    save_file(tensors, str(weights))
    with pytest.raises(
        CheckpointError, match=rf"holds NaN or inf values in \['{name}'\] \(1 tensors\)"
    ):
        load_checkpoint(damaged)


def test_a_save_killed_while_moving_its_files_loads_whole(damaged: Path, tmp_path: Path) -> None:
    """A save killed after its commit but before all its files moved: the new one loads."""
    original = load_checkpoint(damaged)
    model = original.model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    newer = save_checkpoint(
        tmp_path / "newer",
        model,
        original.start_bank,
        original.action_meanings,
        extra={"note": "new"},
    )
    commit = damaged / COMMIT_DIR
    commit.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE, BANK_FILE):
        shutil.copy(newer / name, commit / name)
    (commit / MANIFEST_FILE).write_text(
        json.dumps({"files": [CONFIG_FILE, WEIGHTS_FILE, BANK_FILE], "remove": []})
    )
    shutil.copy(commit / BANK_FILE, damaged / BANK_FILE)  # the move had begun
    (commit / BANK_FILE).unlink()
    ckpt = load_checkpoint(damaged)
    assert ckpt.config["note"] == "new"
    for name, tensor in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], tensor), name
    with gym.make("dreamenv/Dream-v0", checkpoint=damaged) as env:
        env.reset(seed=0)
    assert commit.is_dir()  # loading writes nothing


def test_save_replaces_the_files_of_the_previous_save(damaged: Path) -> None:
    ckpt = load_checkpoint(damaged)
    assert (damaged / "trainer_state.json").is_file()
    save_checkpoint(damaged, ckpt.model, ckpt.start_bank, ckpt.action_meanings)
    names = {p.name for p in damaged.iterdir()}
    assert names == {CONFIG_FILE, WEIGHTS_FILE, BANK_FILE, "metrics.csv"}  # no stale trainer files
    assert load_checkpoint(damaged).config["files"] == [BANK_FILE, WEIGHTS_FILE]
