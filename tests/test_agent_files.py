"""Agent files (no pickle), and the SB3 agents train_in_dream builds: options, verbosity,
TensorBoard."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

import dreamenv.sb3.agent_files as agent_files
from dreamenv import CheckpointError, ConfigError, DreamOptions, DreamVectorEnv, load_checkpoint
from dreamenv.sb3 import load_agent, save_agent, train_in_dream

TINY_POLICY = {"features_extractor_kwargs": {"features_dim": 16, "channels": 8}, "net_arch": [8]}
SETTINGS = {
    "ppo": {"n_steps": 16, "batch_size": 16, "n_epochs": 1},
    "a2c": {"n_steps": 8},
    "dqn": {"learning_starts": 8, "buffer_size": 200, "batch_size": 8, "train_freq": 4},
}


def _train(checkpoint: Path, algo: str, steps: int = 64, **kwargs) -> BaseAlgorithm:
    return train_in_dream(
        checkpoint,
        steps,
        algo=algo,
        num_envs=2,
        progress=False,
        policy_kwargs=dict(TINY_POLICY),
        **{**SETTINGS[algo], **kwargs},
    )


@pytest.fixture(scope="module")
def ppo(checkpoint_dir: Path) -> PPO:
    return _train(checkpoint_dir, "ppo")


@pytest.fixture(scope="module")
def obs(checkpoint_dir: Path) -> np.ndarray:
    return DreamVectorEnv(checkpoint_dir, 5).reset(seed=3)[0]


def _same_agent(a: BaseAlgorithm, b: BaseAlgorithm, obs: np.ndarray) -> None:
    assert type(a) is type(b)
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    np.testing.assert_array_equal(
        a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0]
    )
    assert a.observation_space == b.observation_space and a.action_space == b.action_space
    assert a.num_timesteps == b.num_timesteps


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_save_then_load_gives_the_same_agent(
    checkpoint_dir: Path, obs: np.ndarray, tmp_path: Path, algo: str
) -> None:
    agent = _train(checkpoint_dir, algo)
    path = save_agent(agent, tmp_path / "agent")
    loaded = load_agent(path)
    _same_agent(agent, loaded, obs)
    assert loaded.policy_kwargs == agent.policy_kwargs  # classes come back by name
    assert loaded.gamma == agent.gamma and loaded.learning_rate == agent.learning_rate
    if algo == "dqn":
        assert loaded.exploration_rate == agent.exploration_rate
        assert loaded.train_freq == agent.train_freq
    # the optimizer state travels too (Adam's moments, RMSprop's averages)
    before, after = agent.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    assert before["state"].keys() == after["state"].keys() and before["state"]
    for index, entries in before["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, after["state"][index][key]), key
    # and the loaded agent trains on
    again = train_in_dream(checkpoint_dir, 32, agent=loaded, progress=False)
    assert again.num_timesteps >= agent.num_timesteps + 32


def test_the_files_are_json_and_safetensors(ppo: PPO, tmp_path: Path) -> None:
    path = save_agent(ppo, tmp_path / "agent")
    manifest = json.loads((path / "agent.json").read_text())
    assert manifest["algorithm"] == "ppo" and manifest["policy"] == "MlpPolicy"
    assert manifest["policy_kwargs"]["features_extractor_class"] == (
        "dreamenv.sb3.extractor.LatentExtractor"
    )
    assert manifest["observation_space"]["type"] == "MultiDiscrete"
    assert manifest["hyperparameters"]["n_steps"] == 16
    assert manifest["state"]["num_timesteps"] == ppo.num_timesteps
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["agent.json", *manifest["files"].values()]
    )
    for name in manifest["files"].values():
        assert (path / name).read_bytes()[8:9] == b"{"  # a safetensors JSON header


class _Marker:
    """Unpickling this creates the file ``path``: the code a shared pickle could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _crafted_sb3_zip(path: Path, marker: Path) -> Path:
    payload = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"policy_class": {":serialized:": payload}}))
    return path


def test_a_crafted_sb3_zip_is_never_unpickled_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    crafted = _crafted_sb3_zip(tmp_path / "agent.zip", marker)
    with pytest.raises(CheckpointError, match=r"can execute code\. Pass --allow-pickle"):
        load_agent(crafted)
    with pytest.raises(CheckpointError, match=r"only for a file you trust, or convert it once"):
        load_agent(tmp_path / "agent")  # SB3's name for a path without .zip
    assert not marker.exists()
    # what --allow-pickle is about: the same file does run code
    with pytest.warns(UserWarning, match="can execute code"), pytest.raises(CheckpointError):
        load_agent(crafted, allow_pickle=True)
    assert marker.exists()


def test_a_pickle_in_place_of_the_weights_is_refused(ppo: PPO, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = save_agent(ppo, tmp_path / "agent")
    name = json.loads((path / "agent.json").read_text())["files"]["policy"]
    torch.save({"weights": _Marker(marker)}, path / name)
    with pytest.raises(CheckpointError, match=r"the weights do not load into its ppo policy"):
        load_agent(path)
    assert not marker.exists()


def test_only_allow_listed_classes_are_loaded(ppo: PPO, tmp_path: Path) -> None:
    path = save_agent(ppo, tmp_path / "agent")
    manifest = json.loads((path / "agent.json").read_text())
    manifest["policy_kwargs"]["features_extractor_class"] = "os.system"
    (path / "agent.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError, match=r"names 'os.system', which agent files do not load \(allowed: \["
    ):
        load_agent(path)


def test_what_json_cannot_hold_is_refused_on_save(ppo: PPO, tmp_path: Path) -> None:
    ppo.policy_kwargs["activation_fn"] = torch.nn.Hardswish
    try:
        with pytest.raises(
            ConfigError, match=r"policy_kwargs\['activation_fn'\] = .*Hardswish.* format='sb3'"
        ):
            save_agent(ppo, tmp_path / "agent")
    finally:
        del ppo.policy_kwargs["activation_fn"]
    assert not (tmp_path / "agent").exists()


def test_sb3_zip_interop_is_explicit(ppo: PPO, obs: np.ndarray, tmp_path: Path) -> None:
    path = save_agent(ppo, tmp_path / "agent.zip", format="sb3")
    assert zipfile.is_zipfile(path)
    with pytest.warns(UserWarning, match=r"unpickles it, which can execute code"):
        loaded = load_agent(path, allow_pickle=True)
    _same_agent(ppo, loaded, obs)
    with pytest.raises(
        ConfigError, match=r"ends in \.zip.*save to '.*other', or pass format='sb3'"
    ):
        save_agent(ppo, tmp_path / "other.zip")


@pytest.mark.parametrize("cls", [A2C, DQN])
def test_sb3_zips_of_other_algorithms_load(checkpoint_dir: Path, tmp_path: Path, cls) -> None:
    from dreamenv.sb3 import wrap

    agent = cls(
        "MlpPolicy", wrap(DreamVectorEnv(checkpoint_dir, 2)), policy_kwargs={"net_arch": [8]}
    )
    agent.save(tmp_path / "agent.zip")
    with pytest.warns(UserWarning):
        assert type(load_agent(tmp_path / "agent.zip", allow_pickle=True)) is cls


def test_a_save_killed_midway_leaves_the_previous_agent(
    checkpoint_dir: Path, obs: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _train(checkpoint_dir, "ppo", 32)
    path = save_agent(agent, tmp_path / "agent")
    first = load_agent(path)
    train_in_dream(checkpoint_dir, 32, agent=agent, progress=False)

    def crash(*args, **kwargs) -> None:
        raise KeyboardInterrupt("killed while writing the optimizer file")

    monkeypatch.setattr(agent_files, "save_file", crash)  # the policy file is written by then
    with pytest.raises(KeyboardInterrupt):
        save_agent(agent, path)
    _same_agent(first, load_agent(path), obs)  # not the new policy with the old counters
    monkeypatch.undo()
    save_agent(agent, path)
    _same_agent(agent, load_agent(path), obs)
    assert len(list(path.iterdir())) == 3  # the interrupted save's files are gone


def test_agent_file_errors(ppo: PPO, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"No agent at .*train one with `dreamenv dream`"):
        load_agent(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"holds no agent\.json: it is not an agent"):
        load_agent(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"'.*notes\.txt' is not an agent"):
        load_agent(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match=r"is a file; an agent is saved as a directory"):
        save_agent(ppo, tmp_path / "notes.txt")
    with pytest.raises(
        CheckpointError, match=r"is a directory of other files \(\['empty', 'notes.txt'\]\)"
    ):
        save_agent(ppo, tmp_path)
    path = save_agent(ppo, tmp_path / "agent")
    manifest = json.loads((path / "agent.json").read_text())
    (path / "agent.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(CheckpointError, match=r"is agent format version 99; this dreamenv reads"):
        load_agent(path)


def test_spaces_round_trip_through_json() -> None:
    import gymnasium as gym

    spaces = [
        gym.spaces.Box(0, 255, (4, 8, 8), np.uint8),
        gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        gym.spaces.Box(np.array([0.0, -1.0]), np.array([1.0, 2.0]), dtype=np.float64),
        gym.spaces.Discrete(6, start=1),
        gym.spaces.MultiDiscrete([3, 4, 5]),
        gym.spaces.MultiBinary(7),
    ]
    for space in spaces:
        text = json.dumps(agent_files.space_to_json(space), allow_nan=False)
        assert agent_files.space_from_json(json.loads(text)) == space
    with pytest.raises(ConfigError, match=r"store Box, Discrete, MultiDiscrete and MultiBinary"):
        agent_files.space_to_json(gym.spaces.Dict({"a": gym.spaces.Discrete(2)}))


# --- train_in_dream: options whole, SB3's outputs as SB3 users expect --------------------------
def test_train_in_dream_takes_the_dream_options_whole(checkpoint_dir: Path) -> None:
    options = DreamOptions(horizon=7, reward_mode="mean", burn_in=2, temperature=0.5)
    agent = _train(checkpoint_dir, "ppo", 32, options=options)
    ckpt = load_checkpoint(checkpoint_dir)
    expected = options.resolved(ckpt.start_bank.context, ckpt.model.obs_types)
    assert agent.get_env().env.core.options == expected


def test_train_in_dream_writes_tensorboard_and_prints_with_verbose(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    agent = _train(checkpoint_dir, "ppo", 32, verbose=1, tensorboard_log=tmp_path / "tb")
    assert agent.verbose == 1
    assert list((tmp_path / "tb").glob("PPO_1/events.out.tfevents.*"))
    assert "total_timesteps" in capsys.readouterr().out  # SB3's table on stdout
    # a silent agent asked for output later gets it (the silent logger is not kept)
    quiet = _train(checkpoint_dir, "a2c", 16)
    assert "total_timesteps" not in capsys.readouterr().out
    train_in_dream(checkpoint_dir, 16, agent=quiet, progress=False, tensorboard_log=tmp_path / "tb")
    assert list((tmp_path / "tb").glob("A2C_*/events.out.tfevents.*"))


def test_train_in_dream_keeps_the_agents_env_count(ppo: PPO, checkpoint_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"trained with 2 envs .*Pass num_envs=2 \(--envs 2\)"):
        train_in_dream(checkpoint_dir, 16, agent=ppo, num_envs=3, progress=False)


def test_a_bfloat16_trunk_trains_and_round_trips(checkpoint_dir: Path, tmp_path: Path) -> None:
    """A dream in bfloat16 gives a new agent a bfloat16 LatentExtractor; saved and loaded,
    it keeps its precision and acts as before."""
    options = DreamOptions(precision="bfloat16")
    agent = train_in_dream(
        checkpoint_dir, 64, options=options, num_envs=2, n_steps=32, batch_size=32, progress=False
    )
    assert agent.policy.features_extractor.precision == "bfloat16"
    save_agent(agent, tmp_path / "agent")
    back = load_agent(tmp_path / "agent")
    assert back.policy.features_extractor.precision == "bfloat16"
    env = DreamVectorEnv(checkpoint_dir, 2, options=options)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], back.predict(obs, deterministic=True)[0]
    )
