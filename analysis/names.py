"""How the analysis names, colours and orders each method, and what it calls the method's frontier parameter.

Read from the `display:` block of conf/method/<name>.yaml (name, color, param, param_name, order), the one place a
method is described, so that adding a method is one config file and no table here. The block is presentation only:
never part of a stage hash (pipelines' NOT_HASHED). A method without a config file (an unknown name in an old run
folder) is shown by its code name, in the matplotlib colour cycle, after every known method.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

METHOD_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "method"
# Every display block carries these keys (tests/unit/test_analysis_names.py checks each config file).
DISPLAY_KEYS = ("name", "color", "param", "param_name", "order", "in_paper")
# A method's frontier parameter without a name of its own (parameter-free methods, unknown methods).
DEFAULT_PARAM_NAME = "param"


@functools.lru_cache(maxsize=None)
def displays() -> dict[str, dict]:
    """Code name -> display block of every conf/method/*.yaml. Only the file's own block is read: a file that
    inherits another through Hydra's `defaults:` (ppo_gt from ppo) defines its own full block, so no composition
    is needed (and none of Hydra's interpolations is resolved)."""
    out = {}
    for path in sorted(METHOD_CONFIGS.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if "display" in cfg:
            out[str(cfg.get("name", path.stem))] = OmegaConf.to_container(cfg.display, resolve=False)
    return out


def _get(method: str, key: str):
    return displays().get(method, {}).get(key)


def display_name(method: str) -> str:
    """'ppo_gt' -> 'PPO-GT'; an unknown method by its code name."""
    return _get(method, "name") or method


def display_names() -> dict[str, str]:
    """Code name -> display name of every known method (the mapping analysis.stats.verdict_sentence takes)."""
    return {m: display_name(m) for m in displays()}


def color(method: str) -> str | None:
    """Matplotlib colour of the method; None (the colour cycle) for an unknown one."""
    return _get(method, "color")


def param_key(method: str) -> str | None:
    """Config key of the method's frontier parameter ('beta', 'kl.target'); None for a parameter-free method."""
    return _get(method, "param")


def param_name(method: str) -> str:
    """Display name of the frontier parameter ('β', 'KL target'); 'param' where the method has none."""
    return _get(method, "param_name") or DEFAULT_PARAM_NAME


def rank(method: str) -> int:
    """Place of the method in tables and legends; an unknown method after every known one."""
    order = _get(method, "order")
    return int(order) if order is not None else 1 + max((int(d["order"]) for d in displays().values()), default=0)


def sort_key(method: str) -> tuple[int, str]:
    """Key for sorted(): by display order, then (methods of the same place, unknown ones) alphabetically."""
    return rank(method), method


def method_order() -> tuple[str, ...]:
    """Every known method in display order."""
    return tuple(sorted(displays(), key=sort_key))


def run_label(method: str, param) -> str:
    """'DPO β=0.1'; parameter-free methods (Preferred-FT) by name only."""
    name = display_name(method)
    return name if pd.isna(param) else f"{name} {param_name(method)}={param:g}"


def in_paper(method: str) -> bool:
    """A method of the DPO paper (its Fig. 2 and 3), as against a later variant (IPO, cDPO, RLOO)."""
    return bool(_get(method, "in_paper"))


def linestyle(method: str) -> str:
    """Solid for the paper's methods, dashed for the later variants, so the two sets differ at a glance; Best-of-N
    dotted (its KL is analytic, not estimated from samples)."""
    return ":" if method == "bon" else "-" if in_paper(method) else "--"


# Axis and legend text with the paper's symbols (matplotlib mathtext).
KL_LABEL = r"sequence-level KL($\pi\,\|\,\pi_{\mathrm{SFT}}$), nats (from the policy's own samples)"
SFT_LABEL = r"SFT ($\pi_{\mathrm{ref}}$)"
