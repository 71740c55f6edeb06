"""The tenant runtime image, built without any container registry.

Steps: ``debootstrap --variant=minbase`` a Debian root file system with Python 3 (mirror read from this
machine's apt configuration), install the pinned Python packages into it with the host's pip (wheels for
the image's Python), trim it, and ``docker import`` it. The tag is a hash of ``image_recipe.json``, so the
image is built once and again only when the recipe changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors

from ..config import Config
from ..errors import RuntimeUnavailable

log = logging.getLogger(__name__)
RECIPE = Path(__file__).with_name("image_recipe.json")
DEFAULT_MIRROR_FILES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def recipe() -> dict:
    return json.loads(RECIPE.read_text())  # bounded: the project's own recipe


def image_tag(cfg: Config) -> str:
    recipe_bytes = RECIPE.read_bytes()  # bounded: the project's own recipe
    digest = hashlib.sha256(recipe_bytes + cfg.sandbox.debian_suite.encode()).hexdigest()[:12]
    return f"{cfg.sandbox.image}:{digest}"


def image_present(cfg: Config, client: docker.DockerClient) -> bool:
    try:
        client.images.get(image_tag(cfg))
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


def ensure_image(cfg: Config, client: docker.DockerClient) -> str:
    tag = image_tag(cfg)
    if image_present(cfg, client):
        return tag
    build(cfg, client, tag)
    return tag


def build(cfg: Config, client: docker.DockerClient, tag: str) -> None:
    r = recipe()
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise RuntimeUnavailable("debootstrap is not installed", hint="run `make setup`")
    work = cfg.paths.image
    root = work / "rootfs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    print(f"building the tenant runtime image {tag} (first time only, about a minute)...", file=sys.stderr)
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
    for junk in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ):
        shutil.rmtree(root / junk, ignore_errors=True)
    for mount_point in ("app", "input", "output", "opt/mysimbdp/sdk"):
        (root / mount_point).mkdir(parents=True, exist_ok=True)
    tarball = work / "rootfs.tar"
    _run(["tar", "-C", str(root), "-cf", str(tarball), "."], "tar", work / "tar.log")
    repo, _, version = tag.partition(":")
    try:
        client.api.import_image_from_file(
            str(tarball),
            repository=repo,
            tag=version,
            changes=["ENV PATH=/usr/local/bin:/usr/bin:/bin", "ENV LANG=C.UTF-8", "WORKDIR /app"],
        )
    except docker.errors.APIError as exc:
        raise RuntimeUnavailable(f"docker import of the runtime image failed: {exc.explanation}") from None
    shutil.rmtree(work, ignore_errors=True)
    log.info("built %s in %.0fs", tag, time.monotonic() - t0)
    print(f"built {tag} in {time.monotonic() - t0:.0f}s", file=sys.stderr)


def _run(argv: list[str], what: str, log_file: Path) -> None:
    with open(log_file, "wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeUnavailable(f"building the runtime image: {what} failed: " + " | ".join(tail))
