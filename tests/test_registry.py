import pytest

from bench.core.errors import BenchError, UnknownNameError
from bench.core.registry import Registry


def test_register_get_and_metadata():
    r = Registry("widget")

    @r.register("alpha", color="red")
    def alpha():
        return 1

    assert r.get("alpha") is alpha
    assert r.entry("alpha").meta["color"] == "red"
    assert r.entry("alpha").color == "red"
    assert "alpha" in r and len(r) == 1


def test_duplicate_names_rejected():
    r = Registry("widget")
    r.add("a", object())
    with pytest.raises(BenchError, match="already registered"):
        r.add("a", object())


def test_unknown_name_suggests_nearest():
    r = Registry("method")
    for n in ("neggrad", "finetune", "random_labels"):
        r.add(n, object())
    with pytest.raises(UnknownNameError) as e:
        r.get("neg_grad")
    assert "neggrad" in str(e.value)
    assert "--list methods" in str(e.value)
    with pytest.raises(KeyError):  # also a KeyError for library callers
        r.get("zzz")


def test_wildcard_listing_sorted():
    r = Registry("method")
    for n in ("neggrad", "finetune", "random_labels", "adv_mas", "adv_only"):
        r.add(n, object())
    assert r.list() == sorted(["neggrad", "finetune", "random_labels", "adv_mas", "adv_only"])
    assert r.list("adv_*") == ["adv_mas", "adv_only"]
    assert r.list(["neg*", "fine*"]) == ["finetune", "neggrad"]
    assert r.list("nothing*") == []
    with pytest.raises(UnknownNameError):
        r.resolve("nothing*")


def test_lazy_loader_runs_once():
    calls = []

    def loader():
        calls.append(1)
        reg.add("x", 1)

    reg = Registry("thing", loader=loader)
    assert reg.list() == ["x"] and reg.get("x") == 1
    assert calls == [1]


def test_bad_names_rejected():
    r = Registry("widget")
    for bad in ("", "a b"):
        with pytest.raises(BenchError):
            r.add(bad, 1)
