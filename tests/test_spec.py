import dataclasses

import pytest

from bench.core.errors import BenchError
from bench.core.spec import ForgetSpec, RunSpec, canonical_json
from tests.helpers import pinned_spec


def test_run_id_is_pinned():
    """Changing the canonical form of a spec changes every run_id and orphans every record;
    if this fails on purpose, bump SPEC_VERSION and update the pinned value."""
    spec = pinned_spec()
    assert spec.run_id == "9b7346e3682aba43"


def test_run_id_ignores_suite_label_but_not_content():
    a = RunSpec(method="neggrad", suite="smoke")
    assert a.run_id == dataclasses.replace(a, suite="other").run_id
    assert a.run_id != dataclasses.replace(a, seed=1).run_id
    assert a.run_id != dataclasses.replace(a, forget=ForgetSpec("instance", k=17)).run_id
    assert a.run_id != dataclasses.replace(a, hparams=(("lr", 0.1),)).run_id


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": (1, 2)}) == canonical_json({"a": [1, 2], "b": 1})


@pytest.mark.parametrize(
    "text,expected",
    [
        ("16", ForgetSpec("instance", k=16)),
        ("k=16", ForgetSpec("instance", k=16)),
        ("10%", ForgetSpec("fraction", fraction=0.1)),
        ("frac=0.3", ForgetSpec("fraction", fraction=0.3)),
        ("class=3", ForgetSpec("class", classes=(3,))),
        ("class=1+2", ForgetSpec("class", classes=(1, 2))),
    ],
)
def test_forget_parse(text, expected):
    assert ForgetSpec.parse(text) == expected


@pytest.mark.parametrize("bad", ["x", "k=", "class=a", "0", "150%"])
def test_forget_parse_rejects_with_help(bad):
    with pytest.raises(BenchError):
        ForgetSpec.parse(bad)


def test_spec_dict_roundtrip_has_id():
    s = RunSpec(method="finetune")
    d = s.to_dict()
    assert d["run_id"] == s.run_id and d["method"] == "finetune"
    assert d["forget"]["k"] == 16
