"""The tenant runtime images, built without any container registry: one per runtime (mysimbdp/runtimes.py).

Steps for the Python and JVM images: ``debootstrap --variant=minbase`` a Debian root file system with the
recipe's Debian packages (mirror read from this machine's apt configuration), install the recipe's pinned
Python packages into it with the host's pip (wheels for the image's Python), trim it, and ``docker import``
it. The static runtime's image is no Debian at all: its recipe's few files (``/etc/passwd`` and such) and
the mount points, written as a tar. The tag is a hash of the recipe, so an image is built once and again
only when its recipe changes. ``mysimbdp up`` builds the Python and static images; the JVM's (about two
minutes) is built the first time a run needs it, normally the dry run of the first JVM app installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterator

import docker
import docker.errors

from .. import runtimes
from ..config import Config
from ..errors import RuntimeUnavailable
from ..locks import file_lock

log = logging.getLogger(__name__)
RECIPE = Path(__file__).with_name("image_recipe.json")  # the Python runtime's (the default)
DEFAULT_MIRROR_FILES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
BUILT_AT_UP = ("python", "static")  # the JVM's image is built on first need (it takes minutes)
MOUNT_POINTS = ("app", "input", "output", "tmp", "opt/mysimbdp/sdk", "opt/mysimbdp/lib")
_TAKES = {"python": "about a minute", "jvm": "about two minutes", "static": "a second"}


def recipe_path(runtime: str = runtimes.DEFAULT) -> Path:
    if runtime not in runtimes.RUNTIMES:
        raise RuntimeUnavailable(f"there is no {runtime!r} runtime")
    return RECIPE if runtime == runtimes.DEFAULT else Path(__file__).with_name(runtimes.RUNTIMES[runtime].recipe)


def recipe(runtime: str = runtimes.DEFAULT) -> dict:
    return json.loads(recipe_path(runtime).read_text())  # bounded: the project's own recipe


def recipe_tag(cfg: Config, repo: str, path: Path) -> str:
    """``repo:<hash>`` of a recipe and the Debian suite it is built from: a new image exactly when either changes."""
    recipe_bytes = path.read_bytes()  # bounded: the project's own recipe
    return f"{repo}:{hashlib.sha256(recipe_bytes + cfg.sandbox.debian_suite.encode()).hexdigest()[:12]}"


def image_tag(cfg: Config, runtime: str = runtimes.DEFAULT) -> str:
    repo = cfg.sandbox.image if runtime == runtimes.DEFAULT else f"{cfg.sandbox.image}-{runtime}"
    return recipe_tag(cfg, repo, recipe_path(runtime))


def image_present(cfg: Config, client: docker.DockerClient, runtime: str = runtimes.DEFAULT) -> bool:
    try:
        client.images.get(image_tag(cfg, runtime))
        return True
    except docker.errors.ImageNotFound:
        return False


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never a host name written in the repo)."""
    for path in DEFAULT_MIRROR_FILES:
        if not path.exists():
            continue
        text = path.read_text()  # bounded: the machine's apt configuration, root's
        m = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M)
        if m:
            return m.group(1)
    raise RuntimeUnavailable("cannot find a Debian mirror in this machine's apt configuration")


def ensure_image(cfg: Config, client: docker.DockerClient, runtime: str = runtimes.DEFAULT) -> str:
    """The tag of ``runtime``'s image, built first if it is not there (one build at a time per runtime, whichever
    process asks: the others wait for it and then find it)."""
    tag = image_tag(cfg, runtime)
    if image_present(cfg, client, runtime):
        return tag
    with _build_lock(cfg, runtime):
        if not image_present(cfg, client, runtime):
            build(cfg, client, tag, runtime)
    return tag


@contextlib.contextmanager
def _build_lock(cfg: Config, runtime: str) -> Iterator[None]:
    cfg.home.mkdir(parents=True, exist_ok=True)
    with file_lock(cfg.home / f".image-{runtime}.lock"):
        yield


def build(cfg: Config, client: docker.DockerClient, tag: str, runtime: str = runtimes.DEFAULT) -> None:
    work = cfg.paths.image if runtime == runtimes.DEFAULT else cfg.paths.image.with_name(f"image-{runtime}")
    build_from_recipe(cfg, client, recipe(runtime), work, tag, f"the {runtime} runtime image", _TAKES.get(runtime))


def build_from_recipe(
    cfg: Config, client: docker.DockerClient, r: dict, work: Path, tag: str, what: str, takes: str | None = None
) -> None:
    """Build ``tag`` from recipe ``r`` in ``work`` (emptied first, removed after): a tenant runtime's image, or
    the platform's own base image (services/compose.py)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    print(f"building {what} {tag} (first time only, {takes or 'a few minutes'})...", file=sys.stderr)
    tarball = work / "rootfs.tar"
    if r.get("base") == "empty":
        _empty_root(r, tarball)
    else:
        _debian_root(cfg, r, work, tarball)
    repo, _, version = tag.partition(":")
    try:
        client.api.import_image_from_file(
            str(tarball),
            repository=repo,
            tag=version,
            changes=["ENV PATH=/usr/local/bin:/usr/bin:/bin", "ENV LANG=C.UTF-8", "WORKDIR /app"],
        )
    except docker.errors.APIError as exc:
        raise RuntimeUnavailable(f"docker import of {what} failed: {exc.explanation}") from None
    shutil.rmtree(work, ignore_errors=True)
    log.info("built %s in %.0fs", tag, time.monotonic() - t0)
    print(f"built {tag} in {time.monotonic() - t0:.0f}s", file=sys.stderr)


def _empty_root(r: dict, tarball: Path) -> None:
    """A root file system with nothing but the recipe's files and the mount points: for programs that bring
    everything they need (statically linked)."""
    with tarfile.open(tarball, "w") as tar:
        folders = {"dev", "proc", "sys", "etc", "opt", "opt/mysimbdp", *MOUNT_POINTS}
        folders = sorted(folders | {str(Path(f).parent) for f in r["files"]})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        for name, text in sorted(r["files"].items()):
            body = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))


def _debian_root(cfg: Config, r: dict, work: Path, tarball: Path) -> None:
    """debootstrap (minbase) with the recipe's Debian packages, then its Python packages, trimmed, as a tar."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise RuntimeUnavailable("debootstrap is not installed", hint="run `make setup`")
    root = work / "rootfs"
    _run(
        [
            debootstrap,
            "--variant=minbase",
            "--include=" + ",".join(r["debian_packages"]),
            cfg.sandbox.debian_suite,
            str(root),
            debian_mirror(),
        ],
        "debootstrap",
        work / "debootstrap.log",
    )
    if r.get("python_packages"):
        _pip_install(r, root, work)
    for junk in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ):
        shutil.rmtree(root / junk, ignore_errors=True)
    for mount_point in MOUNT_POINTS:
        (root / mount_point).mkdir(parents=True, exist_ok=True)
    _run(["tar", "-C", str(root), "-cf", str(tarball), "."], "tar", work / "tar.log")


def _pip_install(r: dict, root: Path, work: Path) -> None:
    """The recipe's pinned Python packages into the image's dist-packages, with the host's pip."""
    site = root / "usr" / "local" / "lib" / f"python{r['python_version']}" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    pyver = r["python_version"].replace(".", "")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(site),
            "--python-version",
            r["python_version"],
            "--implementation",
            "cp",
            "--abi",
            f"cp{pyver}",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "any",
            *r["python_packages"],
        ],
        "pip install into the image",
        work / "pip.log",
    )


def _run(argv: list[str], what: str, log_file: Path) -> None:
    with open(log_file, "wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeUnavailable(f"building the runtime image: {what} failed: " + " | ".join(tail))
