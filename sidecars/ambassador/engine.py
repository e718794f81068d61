"""Which build of the HTTP request path runs: `proxy/http_proxy.py` compiled (Cython) or as it is.
(`fastest` makes the same choice, automatically, for the other compiled modules: resp, hashing.)

Both are the same source (see `setup.py`); the compiled twin takes about a sixth off each request's
CPU time. It is used only when it was built from the installed `http_proxy.py` (same SHA-256), so an
edited source is never shadowed by an older build. `http_engine: auto` takes the twin when it is
usable and says why not otherwise; `compiled` insists on it (start-up fails without it); `python`
runs the source as is.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Literal, NamedTuple

EngineName = Literal["auto", "compiled", "python"]
TWIN = "sidecars.ambassador.proxy._http_proxy_c"


def _http_proxy() -> ModuleType:
    # Imported when asked for: the sharded path and the cluster use `fastest` without loading HTTP's.
    from sidecars.ambassador.proxy import http_proxy

    return http_proxy


@functools.cache
def compiled() -> tuple[ModuleType | None, str]:
    """The usable compiled twin, or None and the reason it cannot be used."""
    return twin_of(_http_proxy(), TWIN)


def twin_of(module: ModuleType, twin_name: str) -> tuple[ModuleType | None, str]:
    """The compiled twin of `module` (built by setup.py from that very source), or None and why not."""
    try:
        twin = importlib.import_module(twin_name)
    except ImportError as exc:
        return None, f"not built ({exc}); install with a C compiler and Python headers present"
    source = Path(module.__file__ or "")
    if source.suffix == ".py" and source.is_file():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if getattr(twin, "SOURCE_SHA256", None) != digest:
            return None, f"built from another version of {source.name}; reinstall the package to rebuild it"
    return twin, "compiled"


def fastest(module: ModuleType, twin_name: str) -> Engine:
    """`module`'s compiled twin when it is usable, else `module` itself, with the reason."""
    twin, reason = twin_of(module, twin_name)
    if twin is not None:
        return Engine(twin, "compiled", "built from this source")
    return Engine(module, "python", f"compiled build {reason}")


class Engine(NamedTuple):
    module: ModuleType  # provides HttpProxy
    name: Literal["compiled", "python"]
    reason: str  # why this one, for the start-up log


def select(choice: EngineName) -> Engine:
    """The build to run for `choice`; RuntimeError when `compiled` is asked for and unusable."""
    if choice == "python":
        return Engine(_http_proxy(), "python", "chosen by http_engine")
    twin, reason = compiled()
    if twin is not None:
        return Engine(twin, "compiled", "built from this source")
    if choice == "compiled":
        raise RuntimeError(f"http_engine is 'compiled' but the compiled request path is {reason}")
    return Engine(_http_proxy(), "python", f"compiled request path {reason}")
