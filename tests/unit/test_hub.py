"""Hub hygiene (pipelines/infra/hub.py, io.hub_hint): one clear line that tells a missing folder, a folder of pickled
weights, an unreachable Hub, an id or revision the Hub does not have and a repository without safetensors apart;
pinned revisions (conf/hub_revisions.yaml) reach the loaders and the hashes of exactly the stages that name the id."""
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
from transformers import GPT2Config, GPT2LMHeadModel

from pipelines.infra import bookkeeping, hub
from pipelines.infra.io import UserError, hub_hint
from pipelines.lm.models import load_policy
from tests.helpers import compose_cfg


def _raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as err:
            raise outer from err
    except Exception as err:
        return err


def _bare(cls, message: str) -> Exception:
    """An instance of a huggingface_hub HTTP error without the HTTP response its constructor wants."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


def test_each_loading_failure_gets_its_own_message(tmp_path):
    assert "does not exist" in str(hub_hint(str(tmp_path / "nope"), OSError("x")))
    offline = _raised_from(OSError("We couldn't connect to 'https://huggingface.co'"),
                           LocalEntryNotFoundError("not in the cache"))
    assert str(hub_hint("gpt2-large", offline)).startswith("cannot reach the Hugging Face Hub for 'gpt2-large'")
    missing = _raised_from(OSError("gpt2-larg is not a local folder and is not a valid model identifier"),
                           _bare(RepositoryNotFoundError, "404 Client Error"))
    assert "the Hugging Face Hub has no 'gpt2-larg'" in str(hub_hint("gpt2-larg", missing))
    pickled_only = OSError("EleutherAI/gpt-j-6b does not appear to have a file named model.safetensors")
    message = str(hub_hint("EleutherAI/gpt-j-6b", pickled_only, revision="a" * 40))
    assert f"'EleutherAI/gpt-j-6b' at revision {'a' * 40} has no safetensors weights" in message
    assert "conf/hub_revisions.yaml" in message and "\n" not in message


def test_a_folder_of_pickled_weights_is_refused_with_the_fix(tmp_path):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # as older Hub checkpoints ship
    with pytest.raises(UserError, match=r"holds pickled PyTorch weights \(\*\.bin\) and no safetensors.*"
                                        r"save_pretrained\(safe_serialization=True\)"):
        load_policy(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(UserError, match="could not load"):  # an empty folder: one line, not a traceback
        load_policy(tmp_path)


def test_hub_ids_and_local_paths_are_told_apart(tmp_path):
    assert hub.is_hub_id("gpt2-large") and hub.is_hub_id("EleutherAI/gpt-j-6b")
    assert not hub.is_hub_id(str(tmp_path)) and not hub.is_hub_id("runs/sentiment/paper/shared/sft/policy")
    assert not hub.is_hub_id("./model") and not hub.is_hub_id("~/model")


def test_the_lock_file_names_every_hub_id_of_the_presets():
    lock = hub._lock()
    for model in ("gpt2_large", "gptj_6b", "pythia_2_8b"):
        assert compose_cfg([f"model={model}"]).model.pretrained in lock, model
    paper = compose_cfg(["experiment=sentiment_paper"])
    assert paper.task.data.hf_id in lock and paper.task.reward.hf_id in lock
    for experiment in ("summarization_paper", "dialogue_paper"):
        for hf_id in compose_cfg([f"experiment={experiment}"]).task.data.hf.values():
            assert hf_id in lock or not isinstance(hf_id, str) or hf_id.replace(".", "").isdigit(), hf_id


def test_a_pin_reaches_the_loader_and_the_hashes_of_the_stages_that_read_the_id(monkeypatch):
    from pipelines.run import STAGES

    cfg = compose_cfg(["experiment=sentiment_paper"])
    before = {s: bookkeeping.config_hash(cfg, STAGES[s], {})[0] for s in ("tokenizer", "sft", "reward", "data")}
    pins = {"gpt2-large": "b" * 40}
    monkeypatch.setattr(hub, "_lock", lambda path=hub.REVISIONS: pins)
    assert hub.revision_of("gpt2-large") == "b" * 40 and hub.revision_of("stanfordnlp/imdb") is None
    after = {s: bookkeeping.config_hash(cfg, STAGES[s], {})[0] for s in before}
    assert after["tokenizer"] != before["tokenizer"] and after["sft"] != before["sft"]
    assert after["reward"] == before["reward"] and after["data"] == before["data"]  # they name no pinned id
    assert bookkeeping.config_hash(cfg, STAGES["sft"], {})[1]["hub_revisions"] == pins


def test_pinning_every_id_moves_no_hash_of_the_embedded_default(monkeypatch):
    """The embedded default names Hub ids it never loads (task.data.hf_id with source=embedded, r*'s hf_id with
    kind=tfidf_logreg): pins must not reach its hashes."""
    from pipelines.run import STAGES

    cfg = compose_cfg(["experiment=sentiment_embedded"])
    before = {s: bookkeeping.config_hash(cfg, STAGES[s], {})[0] for s in ("data", "tokenizer", "sft", "reward")}
    every_id = {k: "c" * 40 for k in hub._lock()}
    monkeypatch.setattr(hub, "_lock", lambda path=hub.REVISIONS: every_id)
    assert before == {s: bookkeeping.config_hash(cfg, STAGES[s], {})[0] for s in before}
    paper = compose_cfg(["experiment=sentiment_paper"])
    assert hub.used_ids(paper) == {"gpt2-large", "stanfordnlp/imdb", "siebert/sentiment-roberta-large-english"}
