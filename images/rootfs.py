"""Assemble the runtime root filesystem of the images: a Python that can run the venv, and nothing else.

Run inside the base image, with the venv at VENV: copies into DEST the interpreter, its standard
library without what a server never imports, every shared library that the interpreter and the
C extensions (the stdlib's and the venv's) load (found with ldd), the CA bundle, passwd and group
entries for the runtime user 65532, and the Debian packages' copyright files and status entries, so
that scanners that read `/var/lib/dpkg/status.d/` (Trivy, Grype, Syft) see what the image holds.
No shell, no package manager, no compiler: the image built `FROM scratch` with DEST has only these.

    python3 images/rootfs.py /rootfs /opt/sidecars
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

RUNTIME_UID = 65532

# Top-level stdlib entries no server imports: tests, IDEs, GUIs, installers, 2to3, docs, build config.
PRUNED_STDLIB = {
    "test",
    "idlelib",
    "tkinter",
    "turtle.py",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "venv",
    "curses",  # terminal UIs; with readline, the only users of libncurses and libreadline
    "__phello__",
}
PRUNED_STDLIB_PATTERNS = (re.compile(r"config-\d+\.\d+.*"),)  # the Makefile and headers for building extensions
# Test packages inside kept packages (unittest/test, ctypes/test, sqlite3/test, ...).
PRUNED_SUBDIRS = {"test", "tests", "idle_test"}
# Extension modules of the stdlib a server never loads: CPython's own test modules, interactive line
# editing, curses, NIS, OSS audio, the dbm back ends (dbm.dumb stays), Tk.
PRUNED_EXTENSIONS = re.compile(
    r"^(_test\w*|_ctypes_test|_xxtestfuzz|xxlimited\w*|_xxsubinterpreters|readline|_curses\w*|nis|ossaudiodev"
    r"|_dbm|_gdbm|_tkinter)\."
)

PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MOZILLA_CERTS = Path("/usr/share/ca-certificates/mozilla")
LDD_LINE = re.compile(r"^\s*(?:(\S+) => )?(\S+) \(0x[0-9a-f]+\)$")


class Rootfs:
    """Copies paths from / into `dest`, recreating every symlink met on the way (merged /usr included)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.copied: set[str] = set()

    def add(self, path: str) -> None:
        """Copy `path` (a file, or a directory with everything in it) and the symlinks leading to it."""
        parts = Path(os.path.normpath(path)).parts
        current = Path("/")
        for i, part in enumerate(parts[1:], start=1):
            current = current / part
            if current.is_symlink():
                target = os.readlink(current)
                self._symlink(current, target)
                rest = parts[i + 1 :]
                # current.parent holds no symlink (resolved above), so joining and normalising is exact.
                self.add(os.path.normpath(os.path.join(current.parent, target, *rest)))
                return
        if current.is_dir():
            self._tree(current)
        else:
            self._file(current)

    def _symlink(self, link: Path, target: str) -> None:
        out = self.dest / link.relative_to("/")
        if out.is_symlink() or out.exists():
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, out)

    def _file(self, src: Path) -> None:
        if str(src) in self.copied:
            return
        out = self.dest / src.relative_to("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)
        self.copied.add(str(src))

    def _tree(self, top: Path, skip: Iterable[str] = ()) -> None:
        skipped = set(skip)
        (self.dest / top.relative_to("/")).mkdir(parents=True, exist_ok=True)
        for entry in sorted(os.scandir(top), key=lambda e: e.name):
            path = Path(entry.path)
            if str(path) in skipped:
                continue
            if entry.is_symlink():
                self.add(str(path))
            elif entry.is_dir():
                self._tree(path, skipped)
            else:
                self._file(path)

    def tree(self, top: Path, skip: Iterable[str]) -> None:
        self._tree(top, skip)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        out = self.dest / path.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.chmod(mode)


def stdlib_skips(stdlib: Path, dynload: Path) -> Iterator[str]:
    for entry in stdlib.iterdir():
        if entry.name in PRUNED_STDLIB or any(p.fullmatch(entry.name) for p in PRUNED_STDLIB_PATTERNS):
            yield str(entry)
    # Their bytecode too: __pycache__/turtle.cpython-311.pyc and the like.
    cache = stdlib / "__pycache__"
    if cache.is_dir():
        for pyc in cache.iterdir():
            if pyc.name.split(".", 1)[0] in {name.removesuffix(".py") for name in PRUNED_STDLIB}:
                yield str(pyc)
    for dirpath, dirnames, _ in os.walk(stdlib):
        for name in dirnames:
            if name in PRUNED_SUBDIRS:
                yield os.path.join(dirpath, name)
    for so in dynload.iterdir():
        if PRUNED_EXTENSIONS.match(so.name):
            yield str(so)


def shared_libraries(objects: Iterable[Path]) -> set[str]:
    """Every library ldd resolves for these ELF objects, the dynamic loader included; a missing one fails."""
    found: set[str] = set()
    for obj in objects:
        out = subprocess.run(["ldd", str(obj)], capture_output=True, text=True, check=False)
        if "not a dynamic executable" in out.stdout + out.stderr or "statically linked" in out.stdout:
            continue
        if out.returncode != 0:
            raise SystemExit(f"ldd {obj} failed: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            if "not found" in line:
                raise SystemExit(f"{obj}: a library it needs is missing from the base image: {line.strip()}")
            match = LDD_LINE.match(line)
            if match and match.group(2).startswith("/"):
                found.add(match.group(2))
    return found


def elf_objects(top: Path) -> Iterator[Path]:
    for path in sorted(top.rglob("*")):
        if path.is_file() and not path.is_symlink() and (path.suffix == ".so" or ".so." in path.name):
            yield path


def ca_bundle() -> tuple[str, list[str]]:
    """Debian's Mozilla roots as ca-certificates bundles them (not whatever the build machine trusts),
    and the files they come from."""
    certs = sorted(MOZILLA_CERTS.glob("*.crt")) if MOZILLA_CERTS.is_dir() else []
    if certs:
        return "".join(c.read_text().rstrip("\n") + "\n" for c in certs), [str(c) for c in certs]
    return Path(CA_BUNDLE).read_text(), [CA_BUNDLE]


def dpkg_owners(files: Iterable[str], admin: Path) -> dict[str, set[str]]:
    """Debian package -> the copied files it installed (paths compared after resolving symlinks)."""
    by_path: dict[str, str] = {}
    info = admin / "info"
    if not info.is_dir():
        return {}
    for listing in info.glob("*.list"):
        package = listing.name.removesuffix(".list").split(":", 1)[0]
        for line in listing.read_text(errors="replace").splitlines():
            # A listed symlink (libc-bin's /usr/bin/ld.so) does not make its package own the target.
            if line and line != "/." and os.path.isfile(line) and not os.path.islink(line):
                by_path.setdefault(os.path.realpath(line), package)
    owners: dict[str, set[str]] = {}
    for f in files:
        package = by_path.get(os.path.realpath(f))
        if package:
            owners.setdefault(package, set()).add(f)
    return owners


def dpkg_stanzas(admin: Path) -> dict[str, str]:
    stanzas: dict[str, str] = {}
    status = admin / "status"
    if status.is_file():
        for stanza in status.read_text(errors="replace").split("\n\n"):
            match = re.search(r"^Package: (\S+)$", stanza, re.M)
            if match and re.search(r"^Status: .* installed$", stanza, re.M):
                stanzas[match.group(1)] = stanza.strip("\n") + "\n"
    return stanzas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path)
    parser.add_argument("venv", type=Path)
    parser.add_argument("--dpkg-admin", type=Path, default=Path("/var/lib/dpkg"))
    args = parser.parse_args()
    root = Rootfs(args.dest)
    args.dest.mkdir(parents=True, exist_ok=True)

    # The interpreter the venv runs (its bin/python3 links to it) and its standard library.
    interpreter = Path(os.path.realpath(args.venv / "bin" / "python3"))
    if interpreter != Path(os.path.realpath(sys.executable)):
        raise SystemExit(f"run this with the venv's base interpreter {interpreter}, not {sys.executable}")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    skips = set(stdlib_skips(stdlib, dynload))
    root.tree(stdlib, skips)
    if not dynload.is_relative_to(stdlib):
        root.tree(dynload, skips)
    root.tree(args.venv, ())
    root.add(str(args.venv / "bin" / "python3"))

    # ldd on the originals: libraries vendored in a wheel (found by $ORIGIN) are in the venv already.
    extensions = [so for so in elf_objects(dynload) if str(so) not in skips]
    libraries = shared_libraries([interpreter, *extensions, *elf_objects(args.venv)])
    libraries = {lib for lib in libraries if not Path(lib).is_relative_to(args.venv)}
    for lib in sorted(libraries):
        root.add(lib)
    # glibc loads libgcc_s at run time (thread cancellation, unwinding) with no DT_NEEDED entry for it.
    for lib in list(libraries):
        if os.path.basename(lib) == "libc.so.6" and os.path.exists(os.path.join(os.path.dirname(lib), "libgcc_s.so.1")):
            root.add(os.path.join(os.path.dirname(lib), "libgcc_s.so.1"))

    bundle, cert_sources = ca_bundle()
    root.write(CA_BUNDLE, bundle)
    for link in {ssl.get_default_verify_paths().openssl_cafile} - {CA_BUNDLE}:
        out = args.dest / link.lstrip("/")
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(CA_BUNDLE, out)
    root.write("/etc/passwd", PASSWD)
    root.write("/etc/group", GROUP)
    root.write("/etc/nsswitch.conf", NSSWITCH)
    for release in ("/etc/os-release", "/usr/lib/os-release"):
        if os.path.exists(release):
            root.add(release)
    for directory, mode, uid in (("tmp", 0o1777, 0), ("home/nonroot", 0o700, RUNTIME_UID), ("root", 0o700, 0)):
        out = args.dest / directory
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(mode)
        os.chown(out, uid, uid)

    # Debian's bookkeeping for what was copied: each package's copyright file and its status stanza.
    copied = sorted(root.copied)
    owners = dpkg_owners([*copied, *cert_sources], args.dpkg_admin)
    stanzas = dpkg_stanzas(args.dpkg_admin)
    for package in sorted(owners):
        copyright_file = f"/usr/share/doc/{package}/copyright"
        if os.path.exists(copyright_file):
            root.add(copyright_file)
        if package in stanzas:
            root.write(f"/var/lib/dpkg/status.d/{package}", stanzas[package])

    # Bytecode checked by nothing (the root filesystem is read-only), named by its final path, not dest's.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-f",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(args.dest),
            "-p",
            "/",
            str(args.dest / stdlib.relative_to("/")),
        ],
        check=True,
    )
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"rootfs: {len(copied)} files, {len(owners)} Debian packages, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
