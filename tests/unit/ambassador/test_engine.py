"""Choosing the build of the HTTP request path: the compiled twin only when it matches its source."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from pydantic import ValidationError

from sidecars.ambassador import engine
from sidecars.ambassador.proxy import http_proxy
from sidecars.ambassador.settings import AmbassadorSettings


@pytest.fixture(autouse=True)
def _fresh_choice() -> Iterator[None]:
    engine.compiled.cache_clear()
    yield
    engine.compiled.cache_clear()


def test_the_installed_build_is_compiled_and_its_classes_are_extension_types() -> None:
    # The test environment installs with a compiler: this fails if the extension stopped building.
    module, name, _ = engine.select("auto")
    assert name == "compiled"
    assert module is not http_proxy
    assert module.__name__ == engine.TWIN
    for class_name in ("HttpProxy", "ClientConnection", "Exchange", "UpstreamConnection"):
        cls = getattr(module, class_name)
        assert cls.__dictoffset__ == 0, f"{class_name} is not an extension type (its instances have a __dict__)"
        assert cls is not getattr(http_proxy, class_name)


def test_python_is_chosen_when_asked() -> None:
    assert engine.select("python") == (http_proxy, "python", "chosen by http_engine")


def test_a_twin_built_from_another_source_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = ModuleType(engine.TWIN)
    stale.SOURCE_SHA256 = "0" * 64  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, engine.TWIN, stale)
    module, name, why = engine.select("auto")
    assert (module, name) == (http_proxy, "python")
    assert "another version of http_proxy.py" in why
    with pytest.raises(RuntimeError, match="another version"):
        engine.select("compiled")


def test_compiled_insisted_on_but_missing_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, engine.TWIN, None)  # makes the import fail
    module, name, why = engine.select("auto")
    assert (module, name) == (http_proxy, "python")
    assert why.startswith("compiled request path not built")
    with pytest.raises(ValidationError, match=r"(?s)http_engine.*compiled request path is not built"):
        AmbassadorSettings(http_engine="compiled")
    assert AmbassadorSettings(http_engine="auto").http_engine == "auto"
