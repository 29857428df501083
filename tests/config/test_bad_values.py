"""A value of the wrong type on the command line is one line naming the key, before anything runs (not a traceback
from deep inside the checks)."""
import pytest

from pipelines.infra.io import UserError
from pipelines.run import check
from tests.helpers import compose_cfg


@pytest.mark.parametrize("overrides, message", [
    (["method.beta=abc"], "method.beta=abc must be a number (default 0.1)"),
    (["method=ppo", "method.kl.target=x"], "method.kl.target=x must be a number"),
    (["method=ppo_gt", "method.learning_rate=fast"], "method.learning_rate=fast must be a number"),
])
def test_a_text_where_a_number_belongs_names_the_key(overrides, message):
    with pytest.raises(UserError, match="nothing was run") as err:
        check(compose_cfg(["experiment=sentiment_embedded", *overrides]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_type_the_defaults_do_not_know_still_gives_one_line():
    with pytest.raises(UserError, match="a setting has the wrong type"):
        check(compose_cfg(["experiment=sentiment_embedded", "task.pairs.n_prompts=many"]))
