"""PPO's run folder, written by the main process alone (every process calls the writers: a sharded model is gathered
collectively first): the resume checkpoint last/ (everything needed to continue
exactly; replaced atomically through last.tmp/, recovered after an interruption between the two), the metrics log
and the frontier snapshots that a resumed run forgets past its checkpoint, and the final policy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipelines.infra.io import atomic_write_json, read_jsonl


def save_state(ppo, folder: Path, step: int) -> None:
    """Everything `ppo` (a baselines.ppo.PPO) needs to continue exactly: weights, optimisers, KL coefficient,
    score normalisation, RNG, step. Called in every process (sharded weights and optimiser states are gathered
    collectively); the main process writes. state.json is written last: a folder that has it is complete."""
    dp = ppo.dp
    states = {"policy": dp.full_state(ppo.policy), "value": dp.full_state(ppo.value_model),
              "ref": dp.full_state(ppo.ref) if ppo.a.ref_ema_decay is not None else None,
              "policy_opt": dp.optimizer_state(ppo.policy, ppo.policy_opt),
              "value_opt": dp.optimizer_state(ppo.value_model, ppo.value_opt)}
    if not dp.main:
        return
    folder.mkdir(parents=True, exist_ok=True)
    save_model(ppo.policy, folder / "policy", states["policy"])
    ppo.value_model.save(folder / "value", states["value"])
    if states["ref"] is not None:
        save_model(ppo.ref, folder / "ref", states["ref"])
    torch.save({"policy_opt": states["policy_opt"], "value_opt": states["value_opt"],
                "torch_rng": torch.get_rng_state()}, folder / "optimizers.pt")
    atomic_write_json(folder / "state.json", {"step": step, "kl_coef": ppo.kl_ctl.value,
                                              "score_mean": ppo.score_mean, "score_std": ppo.score_std})


def save_model(model, folder: Path, state: dict) -> None:
    """A causal LM as safetensors from its whole state dict (`dp.full_state`: gathered when sharded)."""
    model.save_pretrained(str(folder), state_dict=state, safe_serialization=True)


def load_state(ppo, folder: Path) -> int:
    """Restore `save_state` into `ppo` in every process; returns the number of finished steps. Weights were loaded
    by the caller. Sharded, the main process alone reads the optimiser states and sends each process its shard."""
    dp = ppo.dp
    blob = None
    if dp.main or not dp.sharded:
        blob = torch.load(folder / "optimizers.pt", weights_only=True, map_location="cpu" if dp.sharded
                          else ppo.device)
        torch.set_rng_state(blob["torch_rng"].cpu())
    dp.load_optimizer_state(ppo.policy, ppo.policy_opt, blob and blob["policy_opt"])
    dp.load_optimizer_state(ppo.value_model, ppo.value_opt, blob and blob["value_opt"])
    state = json.loads((folder / "state.json").read_text())
    ppo.kl_ctl.value = state["kl_coef"]
    ppo.score_mean, ppo.score_std = state["score_mean"], state["score_std"]
    return int(state["step"])


class RunFolder:
    """out_dir of a PPO run: last/ (+ last.tmp/ while being replaced), metrics.jsonl, snapshots/step*/, policy/."""

    def __init__(self, out_dir: Path, dp):
        self.out_dir, self.dp = out_dir, dp
        self.last, self.tmp = out_dir / "last", out_dir / "last.tmp"
        self.metrics = out_dir / "metrics.jsonl"
        self.snapshots = out_dir / "snapshots"

    def recover(self) -> None:
        """Interrupted between removing the old checkpoint and renaming the new one: finish the rename (state.json
        is written last, so a last.tmp that has it is complete)."""
        if not (self.last / "state.json").exists() and (self.tmp / "state.json").exists():
            shutil.rmtree(self.last, ignore_errors=True)
            self.tmp.rename(self.last)

    def resume_point(self) -> Path | None:
        """The checkpoint to resume from, None for a fresh start."""
        return self.last if (self.last / "state.json").exists() else None

    def forget_after(self, step: int) -> None:
        """Drop what was logged or snapshotted after the checkpoint of `step`; those steps are redone."""
        kept = [r for r in read_jsonl(self.metrics) if r["step"] <= step] if self.metrics.exists() else []
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        for snap in self.snapshots.glob("step*"):
            if int(snap.name[4:]) > step:
                shutil.rmtree(snap)

    def clear(self) -> None:
        """A fresh start: no metrics, no snapshots (left by a start that never reached a checkpoint)."""
        self.metrics.unlink(missing_ok=True)
        shutil.rmtree(self.snapshots, ignore_errors=True)

    def snapshot(self, ppo, step: int) -> None:
        """The policy after `step`, for the frontier (kept if a redone step finds it there)."""
        target = self.snapshots / f"step{step:06d}"
        state = self.dp.full_state(ppo.policy)  # every process, whether or not the main one writes
        if self.dp.main and not target.exists():
            save_model(ppo.policy, target, state)

    def checkpoint(self, ppo, step: int) -> None:
        """Write the resume state of `step` to last.tmp/, then put it in place of last/."""
        if self.dp.main:
            shutil.rmtree(self.tmp, ignore_errors=True)
        save_state(ppo, self.tmp, step)
        if self.dp.main:
            shutil.rmtree(self.last, ignore_errors=True)
            self.tmp.rename(self.last)
        self.dp.barrier()  # no process reads last/ before it is in place

    def finish(self, ppo, tokenizer) -> None:
        """The trained policy (with its tokenizer) in policy/; the resume state, not needed once done, removed."""
        state = self.dp.full_state(ppo.policy)
        if not self.dp.main:
            return
        save_model(ppo.policy, self.out_dir / "policy", state)
        tokenizer.save_pretrained(str(self.out_dir / "policy"))
        shutil.rmtree(self.last, ignore_errors=True)
