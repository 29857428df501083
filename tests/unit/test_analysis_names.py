"""analysis/names.py: method display names, colours, order and frontier-parameter names come from the display blocks
of conf/method/*.yaml, and every method config has a complete one."""
import pytest
from omegaconf import OmegaConf

from analysis import names

CONFIGS = sorted(names.METHOD_CONFIGS.glob("*.yaml"))


def test_display_blocks_are_read_from_the_method_configs():
    assert names.display_name("ppo_gt") == "PPO-GT"  # ppo_gt.yaml inherits ppo.yaml but names itself
    assert names.display_name("dpo") == "DPO" and names.display_name("bon") == "Best-of-N"
    assert names.param_name("dpo") == "β" and names.param_name("ipo") == "τ" and names.param_name("ppo") == "KL target"
    assert names.param_key("ppo_gt") == "kl.target" and names.param_key("preferred_ft") is None
    assert names.color("dpo") == "tab:blue" and names.color("sft") == "black"
    assert names.display_names()["rloo_gt"] == "RLOO-GT"


def test_order_follows_the_configs_and_unknown_methods_fall_back_to_their_code_name():
    order = names.method_order()
    assert order[:6] == ("sft", "dpo", "ipo", "cdpo", "ppo", "ppo_gt")
    assert sorted(["bon", "zeta", "ppo", "dpo", "alpha"], key=names.sort_key) == ["dpo", "ppo", "bon", "alpha", "zeta"]
    assert names.display_name("zeta") == "zeta" and names.color("zeta") is None and names.param_name("zeta") == "param"
    assert names.rank("zeta") > max(names.rank(m) for m in order)
    # parameter-free methods: no parameter name of their own, and labelled by name only
    assert names.param_name("preferred_ft") == "param"
    assert names.run_label("preferred_ft", float("nan")) == "Preferred-FT"
    assert names.run_label("dpo", 0.1) == "DPO β=0.1"
    assert names.linestyle("dpo") == "-" and names.linestyle("ipo") == "--" and names.linestyle("rloo_gt") == "--"
    assert {m for m in names.displays() if not names.in_paper(m)} == {"ipo", "cdpo", "rloo", "rloo_gt"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_method_config_has_a_complete_display_block(path):
    cfg = OmegaConf.load(path)
    assert cfg.name == path.stem
    assert "display" in cfg, f"{path.name} has no display block"
    block = OmegaConf.to_container(cfg.display, resolve=False)
    assert set(names.DISPLAY_KEYS) <= set(block), f"{path.name}: display lacks {set(names.DISPLAY_KEYS) - set(block)}"
    assert isinstance(block["name"], str) and block["name"] and isinstance(block["color"], str) and block["color"]
    assert isinstance(block["order"], int)
    # a method with a frontier parameter names it
    assert block["param"] is None or isinstance(block["param_name"], str)


def test_display_orders_are_distinct():
    orders = [d["order"] for d in names.displays().values()]
    assert len(orders) == len(set(orders)) == len(CONFIGS)
