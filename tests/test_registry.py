import pytest

from ddistill.registry import Registry


def test_register_get_build_names():
    reg = Registry("widget")

    @reg.register()
    def Alpha(x=1):
        return ("alpha", x)

    @reg.register("beta")
    def make_beta():
        return "beta"

    assert reg.names() == ["alpha", "beta"]
    assert reg.get("ALPHA") is Alpha
    assert reg.build("alpha", x=3) == ("alpha", 3)
    assert "beta" in reg and "gamma" not in reg


def test_duplicate_and_unknown_names():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("A")(lambda: 2)
    with pytest.raises(KeyError, match=r"unknown widget 'zzz'; choose from \['a'\]"):
        reg.get("zzz")
