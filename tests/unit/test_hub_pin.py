"""make pin-hub (pipelines/hub_pin.py) against a stand-in Hub API: commits written in place with the comments kept,
a model without safetensors reported and left unpinned, an unreachable Hub one line and exit 2, --check writes
nothing."""
import types

import pytest
from omegaconf import OmegaConf

from pipelines import hub_pin
from pipelines.infra.hub import REVISIONS


class FakeApi:
    def __init__(self, offline=False):
        self.offline = offline

    def _info(self, name, revision=None, files_metadata=False):
        if self.offline:
            raise ConnectionError("Name or service not known")
        files = ["config.json", "pytorch_model.bin"] + ([] if name == "EleutherAI/gpt-j-6b" else ["model.safetensors"])
        sha = format(abs(hash(name)) % 16 ** 40, "040x")
        return types.SimpleNamespace(sha=sha, siblings=[types.SimpleNamespace(rfilename=f) for f in files])

    model_info = dataset_info = _info


@pytest.fixture
def lock(tmp_path):
    path = tmp_path / "hub_revisions.yaml"
    path.write_text(REVISIONS.read_text())
    return path


def test_pins_are_written_in_place_and_a_model_without_safetensors_is_left_out(lock, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert hub_pin.main(["--file", str(lock)]) == 1  # one id could not be pinned
    out = capsys.readouterr().out
    assert "EleutherAI/gpt-j-6b" in out and "no safetensors weights" in out
    pins = OmegaConf.load(lock)
    assert pins.models["EleutherAI/gpt-j-6b"] is None
    assert len(pins.models["gpt2-large"]) == 40 and len(pins.datasets["stanfordnlp/imdb"]) == 40
    before, after = REVISIONS.read_text().splitlines(), lock.read_text().splitlines()
    assert len(before) == len(after)
    assert [line for line in before if line.lstrip().startswith("#")] == \
        [line for line in after if line.lstrip().startswith("#")]
    line = next(x for x in after if x.lstrip().startswith("gpt2-large:"))
    assert line.endswith("# sentiment paper policy (conf/model/gpt2_large.yaml)")


def test_check_writes_nothing_and_an_unreachable_hub_is_one_line(lock, monkeypatch, capsys):
    import huggingface_hub

    text = lock.read_text()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    hub_pin.main(["--file", str(lock), "--check"])
    assert lock.read_text() == text
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: FakeApi(offline=True))
    assert hub_pin.main(["--file", str(lock)]) == 2
    assert "cannot reach the Hugging Face Hub" in capsys.readouterr().err and lock.read_text() == text
