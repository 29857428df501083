"""PPO's run folder, written by the main process alone: the resume checkpoint last/ (everything needed to continue
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
    score normalisation, RNG, step. state.json is written last: a folder that has it is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    ppo.policy.save_pretrained(str(folder / "policy"), safe_serialization=True)
    ppo.value_model.save(folder / "value")
    if ppo.a.ref_ema_decay is not None:
        ppo.ref.save_pretrained(str(folder / "ref"), safe_serialization=True)
    torch.save({"policy_opt": ppo.policy_opt.state_dict(), "value_opt": ppo.value_opt.state_dict(),
                "torch_rng": torch.get_rng_state()}, folder / "optimizers.pt")
    atomic_write_json(folder / "state.json", {"step": step, "kl_coef": ppo.kl_ctl.value,
                                              "score_mean": ppo.score_mean, "score_std": ppo.score_std})


def load_state(ppo, folder: Path) -> int:
    """Restore `save_state` into `ppo`; returns the number of finished steps. Weights were loaded by the caller."""
    blob = torch.load(folder / "optimizers.pt", weights_only=True, map_location=ppo.device)
    ppo.policy_opt.load_state_dict(blob["policy_opt"])
    ppo.value_opt.load_state_dict(blob["value_opt"])
    torch.set_rng_state(blob["torch_rng"].cpu())
    state = json.loads((folder / "state.json").read_text())
    ppo.kl_ctl.value = state["kl_coef"]
    ppo.score_mean, ppo.score_std = state["score_mean"], state["score_std"]
    return int(state["step"])


class RunFolder:
    """out_dir of a PPO run: last/ (+ last.tmp/ while being replaced), metrics.jsonl, snapshots/step*/, policy/."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
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

    def snapshot(self, policy, step: int) -> None:
        """The policy after `step`, for the frontier (kept if a redone step finds it there)."""
        target = self.snapshots / f"step{step:06d}"
        if not target.exists():
            policy.save_pretrained(str(target), safe_serialization=True)

    def checkpoint(self, ppo, step: int) -> None:
        """Write the resume state of `step` to last.tmp/, then put it in place of last/."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        save_state(ppo, self.tmp, step)
        shutil.rmtree(self.last, ignore_errors=True)
        self.tmp.rename(self.last)

    def finish(self, policy, tokenizer) -> None:
        """The trained policy (with its tokenizer) in policy/; the resume state, not needed once done, removed."""
        policy.save_pretrained(str(self.out_dir / "policy"), safe_serialization=True)
        tokenizer.save_pretrained(str(self.out_dir / "policy"))
        shutil.rmtree(self.last, ignore_errors=True)
