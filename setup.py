"""Build hook: compiles the ambassador's hot paths with Cython where a C compiler is present.

Each source in `TWINS` (the HTTP request path, the RESP parser, the key hashes) stays the one source
and is always installed. Its compiled twin (`sidecars.ambassador.proxy._http_proxy_c`, ...) is built from a
copy that records the source's SHA-256, and `sidecars/ambassador/engine.py` uses a twin only while
that digest matches the installed source: an edited source in an editable install is never shadowed
by a stale build.

The extension is optional: without a compiler or Python headers the build warns and the pure Python
path is used. SIDECARS_NO_COMPILE=1 skips the extension on purpose.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
# source -> module name of its compiled twin (beside it, same package)
TWINS = {
    Path("sidecars/ambassador/proxy/http_proxy.py"): "_http_proxy_c",
    Path("sidecars/ambassador/proxy/resp.py"): "_resp_c",
    Path("sidecars/ambassador/cluster/hashing.py"): "_hashing_c",
}


def extensions() -> list[Extension]:
    if os.environ.get("SIDECARS_NO_COMPILE") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    root = HERE / "build" / "cython"
    exts = []
    for relative, name in TWINS.items():
        source = HERE / relative
        out = root / relative.parent
        out.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        twin = out / f"{name}.py"
        twin.write_text(source.read_text() + f'\nSOURCE_SHA256 = "{digest}"\n')
        shutil.copyfile(source.with_suffix(".pxd"), out / f"{name}.pxd")
        exts.append(Extension(f"{'.'.join(relative.parent.parts)}.{name}", [str(twin.relative_to(HERE))]))
    return list(
        cythonize(
            exts,
            language_level=3,
            quiet=True,
            include_path=[str(root)],  # where Cython finds the twin's .pxd by its dotted module name
            compiler_directives={
                # C types come from the .pxd only: the source's annotations stay annotations.
                "annotation_typing": False,
                # Python semantics where they could differ: the module must behave as its source does.
                "binding": True,
                "embedsignature": False,
                "boundscheck": True,
                "wraparound": True,
                "cdivision": False,
            },
        )
    )


class OptionalBuildExt(build_ext):
    """Any failure to compile (no compiler, no headers) leaves the pure Python path, never a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # whatever the toolchain raised, the package still works
            self._skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(exc)

    def _skipped(self, exc: Exception) -> None:
        print(f"warning: the compiled request path was not built ({exc}); the pure Python one will run")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
