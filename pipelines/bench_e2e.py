"""End-to-end timing of the reproduce targets (make bench-e2e, make bench-e2e-seeds) and the one-page index of
every benchmark record (results/bench.md).

Times `make reproduce-sentiment` from an empty runs folder (venv and data cache present), adds up what the
done-markers say each stage took, and keeps earlier measurements of the same record as its history.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from pipelines.infra.provenance import git_sha


def machine() -> str:
    """The machine in one line: cores, processor, memory."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
        cpu = name or cpu
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB{gpu}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads.")


Probe = Callable[[], dict]  # pipelines.bench.speed_probe: {operation, threads, repeats, median_s}


def end_to_end(out: Path, make_args: list[str], probe: Probe | None = None) -> None:
    """Time `make reproduce-sentiment` from a state where only the venv and the data cache exist (an empty runs
    folder), then add up what the done-markers say each stage took. With a probe, the machine's speed is measured
    before and after the run and kept beside its time."""
    runs = Path(os.environ.get("RVD_RUNS", "runs"))
    if runs.exists() and any(runs.iterdir()):
        raise SystemExit(f"the end-to-end benchmark starts from an empty {runs}/: move it aside (or set RVD_RUNS to "
                         "an empty folder) and rerun")

    def run() -> dict:
        start = time.time()
        return {**_timed_make(["make", "reproduce-sentiment", *make_args]), "machine": machine(),
                **stage_times(runs, start), "disk_mib": disk_usage(runs)}
    write_e2e(out, _probed(probe, run))


def disk_usage(runs: Path) -> dict:
    """MiB of the files the run left under runs/sentiment/embedded/ (weights, snapshots, samples, logs; the sum of
    file sizes, not du's blocks): in all, `shared/` (pipeline seed 0's SFT, r*, pairs and r_phi) and each method run
    of seed 0."""
    root = runs / "sentiment" / "embedded"

    def mib(path: Path) -> float:
        return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)
    out = {"total": mib(root), "shared": mib(root / "shared")}
    seed0 = root / "seed0"
    out.update({f"seed0/{d.name}": mib(d) for d in sorted(seed0.iterdir()) if d.is_dir()} if seed0.is_dir() else {})
    return out


def _probed(probe: Probe | None, run: Callable[[], dict]) -> dict:
    """run()'s record, between two speed probes when there is a probe: speed_probe = {operation, threads, repeats,
    before_s, after_s} (a machine that changed speed during the run shows it)."""
    if probe is None:
        return run()
    before = probe()
    record = run()
    after = probe()
    return {**record, "speed_probe": {**{k: v for k, v in before.items() if k != "median_s"},
                                      "before_s": before["median_s"], "after_s": after["median_s"]}}


def three_seeds(record: dict) -> str:
    """The three-seed total of an end-to-end record (`make bench-e2e-seeds` after it), or 'not measured'."""
    ms = record.get("multi_seed")
    return f"{ms['total_seconds'] / 60:.1f}" if ms else "not measured"


def probe_text(record: dict) -> str:
    """'0.762 / 0.771 s' (the speed probe before / after a timed run), or 'not measured'."""
    p = record.get("speed_probe")
    return f"{p['before_s']:.3f} / {p['after_s']:.3f} s" if p else "not measured"


def _timed_make(command: list[str]) -> dict:
    """Run a make command (failing loudly); its command line, wall seconds, commit and finish time."""
    sha, start = git_sha(), time.time()
    subprocess.run(command, check=True)
    return {"command": shlex.join(command), "seconds": round(time.time() - start, 1), "git_sha": sha,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def stage_times(runs: Path, start: float) -> dict:
    """Stage wall times summed over all runs, and the two phases: the shared stages that run first, alone (up to
    the last of them to finish), then the parallel jobs (everything after)."""
    stages: dict[str, float] = {}
    shared_end = start
    for done in runs.glob("**/done.json"):
        d = json.loads(done.read_text())
        shared = "shared" in done.parts
        key = d["stage"] if shared else f"method {d['stage']}"
        stages[key] = stages.get(key, 0.0) + d["wall_time_s"]
        if shared and d["stage"] != "reward_model":  # r_phi trains as one of the parallel jobs
            shared_end = max(shared_end, datetime.fromisoformat(d["finished_at"]).timestamp())
    return {"stage_seconds": {k: round(v, 1) for k, v in sorted(stages.items())},
            "phase_seconds": {"shared stages (all cores, one after another)": round(shared_end - start, 1)}}


def multi_seed(out: Path, make_args: list[str], probe: Probe | None = None) -> None:
    """Time adding full-pipeline seeds 1 and 2 of every method on top of the state a `--e2e` run left (seed 0 done):
    `make reproduce-sentiment SEEDS="0 1 2"`, which, like the e2e run, neither reads nor writes the committed ledger
    (`make reproduce-sentiment-seeds` would find its committed jobs done and time nothing). Written into that
    end-to-end record."""
    path = _e2e_path(out)
    runs = Path(os.environ.get("RVD_RUNS", "runs")) / "sentiment" / "embedded"
    if not path.exists() or not list(runs.glob("seed0/*/done.json")):
        raise SystemExit(f"the multi-seed benchmark continues an end-to-end run: `make bench-e2e` first (it needs "
                         f"{path} and the seed-0 runs under {runs})")
    record = json.loads(path.read_text())
    timed = _probed(probe, lambda: _timed_make(["make", "reproduce-sentiment", "SEEDS=0 1 2", *make_args]))
    record["multi_seed"] = {**timed, "total_seconds": round(record["seconds"] + timed["seconds"], 1)}
    _save_e2e(path, record)


def _e2e_path(out: Path) -> Path:
    slug = f"e2e-cpu-{os.cpu_count()}cores" if not torch.cuda.is_available() else \
        f"e2e-{torch.cuda.get_device_name().replace(' ', '_')}"
    return out / f"{slug}.json"


def write_e2e(out: Path, record: dict) -> None:
    """<out>/e2e-<device>.{json,md}; earlier measurements in the existing json are kept as its history."""
    out.mkdir(parents=True, exist_ok=True)
    path = _e2e_path(out)
    history = []
    if path.exists():
        old = json.loads(path.read_text())
        history = old.get("history", []) + [{k: old[k] for k in ("git_sha", "finished_at", "seconds", "command",
                                                                   "speed_probe", "multi_seed") if k in old}]
    _save_e2e(path, {**record, "history": history})


def _save_e2e(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n")
    seconds, history = record["seconds"], record.get("history", [])
    lines = [f"# End-to-end: `{record['command']}`", "",
             f"**{seconds / 60:.1f} min** from an empty runs folder (venv and data cache present), at "
             f"`{record['git_sha']}`, finished {record['finished_at']}. {record['machine']}", ""]
    p = record.get("speed_probe")
    if p:
        lines.append(f"- the machine's speed (`make bench`'s {p['operation']} on {p['threads']} thread, median of "
                     f"{p['repeats']}; this box's speed drifts between sessions, so compare end-to-end times only "
                     f"beside it): {p['before_s']:.3f} s before the run, {p['after_s']:.3f} s after it.")
    disk = record.get("disk_mib")
    if disk:
        runs = ", ".join(f"{k.removeprefix('seed0/')} {v:g}" for k, v in disk.items() if k.startswith("seed0/"))
        lines.append(f"- disk: {disk['total']:g} MiB of files under the runs folder's sentiment/embedded/ when it "
                     f"finished: `shared/` {disk['shared']:g} MiB; each method run of seed 0, in MiB: {runs}.")
    if record.get("note"):
        lines.append(f"- note: {record['note']}")
    for name, s in record.get("phase_seconds", {}).items():
        lines.append(f"- {name}: {s / 60:.1f} min; the parallel method jobs (and r_phi) after them: "
                     f"{(seconds - s) / 60:.1f} min.")
    ms = record.get("multi_seed")
    if ms:
        lines.append(f"- three seeds: `{ms['command']}` right after it (seeds 1 and 2 of every method added; the "
                     f"shared stages and seed 0 skipped) took {ms['seconds'] / 60:.1f} min more at "
                     f"`{ms['git_sha'][:10]}`, finished {ms['finished_at']}: **{ms['total_seconds'] / 60:.1f} min** "
                     "for the three-seed frontier from an empty runs folder"
                     + (f" (speed probe before / after: {probe_text(ms)})." if ms.get("speed_probe") else "."))
    lines += ["", "Stage wall times summed over all runs (parallel jobs overlap, so the sum exceeds the total):", "",
              "| stage | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in record["stage_seconds"].items()]
    if history:
        lines += ["", "Earlier measurements (same command and machine class; the presets of those commits):", "",
                  "| git SHA | finished | minutes | speed probe before / after | three seeds (min) |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{h['git_sha'][:10]}` | {h['finished_at']} | {h['seconds'] / 60:.1f} | {probe_text(h)} | "
                  f"{three_seeds(h)} |" for h in history]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    write_index(path.parent)
    print("\n".join(lines))


TARGET_MIN = 30  # the default `make reproduce-sentiment` on the 2-core CPU, in minutes


def write_index(out: Path) -> Path:
    """`<out>.md` (results/bench.md): every record under `out` on one page, rebuilt from the json files after each
    benchmark: the end-to-end times against the 30-minute target, then the step timings, one column per device."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    e2e = {k: r for k, r in records.items() if "command" in r}
    steps = {k: r for k, r in records.items() if "results" in r}
    lines = ["# Benchmarks", "", f"Rebuilt from the records in `{out.name}/` by every `make bench`, `make bench-e2e` "
             "and `make bench-e2e-seeds` (each record's own page has its machine, commit and history).", "",
             "## End to end", "", f"Target: the default `make reproduce-sentiment` (every method, one seed, evaluation "
             f"and plots) in at most {TARGET_MIN} minutes on the 2-core CPU, from an empty runs folder.", ""]
    if e2e:
        lines += ["| record | one seed (min) | target | three seeds (min) | commit | finished | machine | speed probe "
                  "before / after (`make bench` sampling, 1 thread) |", "|---|---|---|---|---|---|---|---|"]
        for k, r in e2e.items():
            target_machine = k == "e2e-cpu-2cores"  # the machine the target is set for
            met = ("met" if r["seconds"] <= TARGET_MIN * 60 else "missed") if target_machine else ""
            three = three_seeds(r)
            lines.append(f"| [{k}]({out.name}/{k}.md) | **{r['seconds'] / 60:.1f}** | {met} | {three} | "
                         f"`{r['git_sha'][:10]}` | {r['finished_at']} | {r['machine'].removeprefix('Machine: ')} | "
                         f"{probe_text(r)} |")
    else:
        lines.append("No end-to-end record yet: `make bench-e2e` (about half an hour on an idle 2-core machine).")
    lines += ["", "## Steps", ""]
    if steps:
        names = list(dict.fromkeys(n for r in steps.values() for n in r["results"]))
        lines += ["Median seconds per operation (tokens / s and, on GPUs, model-FLOPs utilisation in brackets) at each "
                  "record's model shape:", "",
                  "| operation | " + " | ".join(f"[{k}]({out.name}/{k}.md)" for k in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for n in names:
            cells = []
            for r in steps.values():
                x = r["results"].get(n)
                rate = [f"{x['tokens'] / x['median_s']:.0f}"] if x and x.get("tokens") else []
                rate += [f"MFU {100 * x['mfu']:.1f} %"] if x and "mfu" in x else []
                cells.append(f"{x['median_s']}" + (f" ({', '.join(rate)})" if rate else "") if x else "")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        shapes = [f"{k}: GPT-2 {r['model'].get('n_layer')}x{r['model'].get('n_embd')}, vocab {r.get('vocab')}, "
                  f"{r['n_params'] / 1e6:.2f}M parameters" for k, r in steps.items()]
        lines += ["", "Models: " + "; ".join(shapes) + "."]
    else:
        lines.append("No step record yet: `make bench`.")
    if all(k.startswith("cpu-") for k in steps):
        lines += ["", "No GPU record yet: `make bench` on a CUDA machine adds one (a column here and "
                  f"`{out.name}/<GPU name>.md`)."]
    path = out.with_suffix(".md")
    path.write_text("\n".join(lines) + "\n")
    return path
