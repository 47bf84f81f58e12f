"""Which codes the discrete model's dynamics train on (docs/discrete-targets.md).

Two commands, run with the dreamenv version under test first on ``PYTHONPATH``:

``fit``: ``dreamenv fit`` (the CLI, same arguments) that also counts the codebook entries
re-pointed by dead-code restarts in each epoch, written to ``OUT/restarts.json`` (a
restarted entry equals one of the encoder outputs of its update exactly; an EMA update
never does), and adds two held-out columns to ``metrics.csv``: ``val_keep_acc``, the
next-index accuracy of predicting that every cell keeps its index (the baseline of
``val_latent_acc`` on the same codes), and ``val_train_mode_agreement``, the share of
cells whose index from the encoder in train mode (BatchNorm batch statistics, on a copy)
equals the served (eval-mode) index. Counting and the columns read the model only: the
fit itself is unchanged.

``agreement``: for a checkpoint and its store, on the held-out batches ``fit`` evaluates
(same split, same seed), the share of grid cells whose index from the encoder in train
mode (BatchNorm batch statistics, how the dynamics' targets were encoded before the fix)
equals the index from the encoder in eval mode (running statistics, what the envs see).

Example:
    $ PYTHONPATH=/tmp/dt/before python benchmarks/discrete_targets.py fit /tmp/dt/data \\
          --out /tmp/dt/fit-before --preset small --epochs 6 --warmup-epochs 2 \\
          --updates-per-epoch 150
    $ python benchmarks/discrete_targets.py agreement /tmp/dt/fit-before /tmp/dt/data
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


def _counting_fit(argv: list[str]) -> int:
    from dreamenv import cli
    from dreamenv.models import discrete

    parser = cli.build_parser()
    args = parser.parse_args(["fit", *argv])
    per_epoch = args.updates_per_epoch
    if not per_epoch:
        raise SystemExit("give --updates-per-epoch (epochs are counted from the update number)")
    counts: dict[int, int] = {}
    step = {"now": 0}
    original_loss = discrete.DiscreteWorldModel.loss
    original_update = discrete.VectorQuantizer.update

    def loss(self, batch, phase, total):  # noqa: ANN001, ANN202 - a transparent wrapper
        step["now"] = total
        return original_loss(self, batch, phase, total)

    def update(self, z, idx, *rest, **kwargs):  # noqa: ANN001, ANN202 - a transparent wrapper
        first = not bool(self.initialized)
        original_update(self, z, idx, *rest, **kwargs)
        if not first:
            same = (self.codebook[:, None, :] == z[None, :, :]).all(-1).any(1)
            epoch = step["now"] // per_epoch + 1
            counts[epoch] = counts.get(epoch, 0) + int(same.sum())

    original_metrics = discrete.DiscreteWorldModel.metrics

    @torch.no_grad()
    def metrics(self, batch):  # noqa: ANN001, ANN202 - a transparent wrapper
        row = original_metrics(self, batch)
        frames = batch["frames"]
        b, steps1 = frames.shape[:2]
        served = self.encode(frames.flatten(0, 1))  # fit calls metrics in eval mode
        trained = copy.deepcopy(self).train().encode(frames.flatten(0, 1))
        idx = served.view(b, steps1, -1)
        mask = batch["mask"].float()
        keep = ((idx[:, 1:] == idx[:, :-1]).float().mean(2) * mask).sum() / mask.sum()
        row["keep_acc"] = float(keep)
        row["train_mode_agreement"] = float((served == trained).float().mean())
        return row

    discrete.DiscreteWorldModel.loss = loss
    discrete.VectorQuantizer.update = update
    discrete.DiscreteWorldModel.metrics = metrics
    rc = cli.main(["--threads", "1", "fit", *argv])
    out = Path(args.out)
    (out / "restarts.json").write_text(json.dumps({"restarted_per_epoch": counts}, indent=1))
    print("codebook entries restarted per epoch:", counts)
    return rc


@torch.no_grad()
def _agreement(checkpoint: str, store: str) -> int:
    from dreamenv.checkpoint import load_checkpoint
    from dreamenv.data.sequences import SequenceSampler, split_episodes
    from dreamenv.data.store import EpisodeStore
    from dreamenv.train.fit import FitConfig, fit_config_from_dict

    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    config = fit_config_from_dict(state.get("fit_config", {})) if "fit_config" in state else None
    config = config or FitConfig()
    model = load_checkpoint(checkpoint).model.eval()
    data = EpisodeStore.open(store)
    _, val_eps = split_episodes(data.episodes(), config.val_fraction)
    sampler = SequenceSampler(
        val_eps, data.spec.frame_stack, model.window_steps(config.seq_len), seed=config.seed + 1
    )
    same = cells = 0
    for _ in range(config.val_batches):
        frames = torch.as_tensor(sampler.sample(config.batch_size)["frames"]).flatten(0, 1)
        served = model.encode(frames)
        trained = copy.deepcopy(model).train()  # batch statistics; the copy's stats move
        seen = trained.encode(frames)
        same += int((served == seen).sum())
        cells += served.numel()
    print(
        f"{checkpoint}: train-mode indices equal eval-mode indices in {same / cells:.4f} "
        f"of {cells} held-out grid cells"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fit"]:
        return _counting_fit(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("fit", "agreement"))
    parser.add_argument("checkpoint")
    parser.add_argument("store")
    args = parser.parse_args(argv)
    return _agreement(args.checkpoint, args.store)


if __name__ == "__main__":
    sys.exit(main())
