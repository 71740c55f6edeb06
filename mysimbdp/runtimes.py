"""The runtimes a tenant app may be written for: one contract (tenant_apps/README.md), several kinds of program.

* ``python`` (the default): a ``.py`` entry point, run as ``python3 /app/<entry>`` in Debian's Python 3;
* ``jvm``: a ``.jar`` whose manifest names a Main-Class, run as ``java <flags> -jar /app/<entry>`` in Debian's
  Java 17 runtime, the flags (heap, direct memory, processors) taken from the run's limits;
* ``static``: a statically linked executable, run as ``/app/<entry>`` in an image with nothing else in it.

An app says which in its ``app.json`` (``"runtime": "jvm"``). Every runtime gets the same sandbox (user, read-only
root, no capabilities, limits, network), the same environment, mounts and outputs; only the image and the
command differ. Each image is built from its recipe (``mysimbdp/sandbox/image_recipe*.json``) without a
registry, by mysimbdp/sandbox/image.py.

:func:`inspect_entry` tells whether an entry point is what its runtime can start (a jar that is a jar, with its
Main-Class inside; an ELF executable for this machine that asks for no dynamic loader): a check before an app
is installed (mysimbdp/appchecks.py). It reads the file within bounds: the file is the tenant's.
"""

from __future__ import annotations

import math
import platform
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sandbox import Limits

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"  # a file at the top of the app folder


@dataclass(frozen=True)
class Runtime:
    name: str
    entry: re.Pattern  # what an entry point's name must look like
    what: str  # the same, in words, for a refusal
    recipe: str  # its image's recipe, a file in mysimbdp/sandbox/


RUNTIMES = {
    r.name: r
    for r in (
        Runtime("python", re.compile(rf"{_NAME}\.py"), "a .py file", "image_recipe.json"),
        Runtime("jvm", re.compile(rf"{_NAME}\.jar"), "a .jar file", "image_recipe_jvm.json"),
        Runtime("static", re.compile(_NAME), "an executable file", "image_recipe_static.json"),
    )
}
DEFAULT = "python"

# The JVM's share of the run's memory limit (the rest: metaspace, code cache, thread stacks, the GC): the heap
# half of it, buffers outside the heap (the Cassandra driver's netty) an eighth.
JVM_HEAP_SHARE = 0.5
JVM_DIRECT_SHARE = 0.125


def command(runtime: str, entry: str, limits: "Limits") -> tuple[str, ...]:
    """How a run of an app starts: ``entry`` (checked by the manifest) under ``runtime`` within ``limits``."""
    if runtime == "jvm":
        return ("java", *jvm_flags(limits), "-jar", f"/app/{entry}")
    if runtime == "static":
        return (f"/app/{entry}",)
    return ("python3", f"/app/{entry}")


def jvm_flags(limits: "Limits") -> tuple[str, ...]:
    """Flags that keep a JVM inside its run's limits, said outright rather than left to the JVM's reading of
    its cgroup (which another container engine may not show it): a heap and direct buffers sized from the
    memory limit, one GC thread (the serial collector), as many processors as the run's CPUs; out of heap it
    exits (status 3, with the reason as its last line) instead of going on half-dead."""
    mb = megabytes(limits.memory)
    return (
        "-XX:+UseSerialGC",
        f"-Xmx{max(16, int(mb * JVM_HEAP_SHARE))}m",
        f"-XX:MaxDirectMemorySize={max(16, int(mb * JVM_DIRECT_SHARE))}m",
        f"-XX:ActiveProcessorCount={max(1, math.ceil(limits.cpus))}",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-UsePerfData",  # no shared-memory file in /tmp
        "-Dfile.encoding=UTF-8",
    )


def megabytes(memory: str) -> int:
    """A Docker memory size ("768m", "1g", "524288k", "805306368") in MiB."""
    m = re.fullmatch(r"([0-9]+)([bkmg]?)", memory.strip().lower())
    if not m:
        raise ValueError(f"not a memory size: {memory!r}")
    shift = {"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[m.group(2)]
    return (int(m.group(1)) << shift) >> 20


# --- what an entry point is --------------------------------------------------------------------------------

MAX_JAR_ENTRIES = 50_000  # files in a jar (a jar with the Cassandra driver and all it needs: about 6,000)
MAX_JAR_DIRECTORY = 4 << 20  # bytes of its list of files (zipfile makes an object for each entry in it)
MAX_MANIFEST_BYTES = 64 << 10
_EOCD = struct.Struct("<4s4H2LH")  # the zip's end of central directory record
_CLASS = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*){0,63}")
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
MAX_PROGRAM_HEADERS = 256
_MACHINES = {"x86_64": (62, "x86-64"), "amd64": (62, "x86-64"), "aarch64": (183, "arm64"), "arm64": (183, "arm64")}
PT_INTERP = 3


def inspect_entry(runtime: str, path: Path) -> str:
    """What the entry point at ``path`` is, in a few words, when ``runtime`` can start it; ValueError saying
    why not otherwise (the caller names the file)."""
    if runtime == "jvm":
        return f"a jar, Main-Class {jar_main_class(path)}"
    if runtime == "static":
        return static_executable(path)
    return "Python source"


def jar_main_class(path: Path) -> str:
    """The Main-Class of the jar at ``path``, checked to be in it. Bounded: the entry count is read from the
    zip's own end record before Python's zipfile reads the directory, and only the manifest is inflated, at
    most MAX_MANIFEST_BYTES of it."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        tail_len = min(size, _EOCD.size + 0xFFFF)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if size < 4 or at < 0 or len(tail) - at < _EOCD.size:
            fh.seek(0)
            start = fh.read(16)
            raise ValueError(f"is not a jar: a jar is a zip file, and this one starts with {_shown(start)}")
        _, _, _, _, entries, directory, _, _ = _EOCD.unpack_from(tail, at)
        eocd = size - tail_len + at
        fh.seek(max(0, eocd - 20))
        locator = fh.read(4) if eocd >= 20 else b""  # zipfile reads a zip64 record instead when one is there
        if entries == 0xFFFF or directory == 0xFFFFFFFF or locator == b"PK\x06\x07":
            raise ValueError("is a zip64 archive: a jar of an app has fewer than 65,535 files")
        if entries > MAX_JAR_ENTRIES or directory > MAX_JAR_DIRECTORY:  # zipfile reads the directory by its size
            raise ValueError(
                f"has {entries:,} files in a directory of {directory:,} bytes: a jar may have at most"
                f" {MAX_JAR_ENTRIES:,} files, listed in at most {MAX_JAR_DIRECTORY >> 20} MiB"
            )
        try:
            with zipfile.ZipFile(fh) as jar:
                try:
                    info = jar.getinfo("META-INF/MANIFEST.MF")
                except KeyError:
                    raise ValueError("is a zip file without META-INF/MANIFEST.MF: not a runnable jar") from None
                if info.file_size > MAX_MANIFEST_BYTES:
                    raise ValueError(f"has a manifest larger than {MAX_MANIFEST_BYTES >> 10} KiB")
                with jar.open(info) as mf:
                    manifest = mf.read(MAX_MANIFEST_BYTES + 1)
                if len(manifest) > MAX_MANIFEST_BYTES:
                    raise ValueError(f"has a manifest larger than {MAX_MANIFEST_BYTES >> 10} KiB")
                main = _main_class(manifest)
                if main.replace(".", "/") + ".class" not in jar.NameToInfo:
                    raise ValueError(f"names Main-Class {main} in its manifest, but the jar has no such class")
                return main
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
            raise ValueError(f"is not a readable jar: {type(exc).__name__}: {exc}"[:300]) from None


def _main_class(manifest: bytes) -> str:
    """The Main-Class of a jar manifest's main section (continuation lines start with one space)."""
    text = manifest.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    main_section = text.split("\n\n", 1)[0]
    headers: dict[str, str] = {}
    last = None
    for line in main_section.split("\n"):
        if line.startswith(" ") and last is not None:
            headers[last] += line[1:]
        elif ":" in line:
            last, _, value = line.partition(":")
            last = last.strip().lower()
            headers[last] = value.strip()
    main = headers.get("main-class", "")
    if not main:
        raise ValueError("has no Main-Class in its manifest: `java -jar` cannot start it")
    if not _CLASS.fullmatch(main):
        raise ValueError(f"names Main-Class {_shown(main.encode())}, which is not a Java class name")
    return main


def static_executable(path: Path) -> str:
    """Check that ``path`` is an ELF executable for this machine that asks for no dynamic loader (the static
    image has none); a few words on what it is. Reads the header and at most MAX_PROGRAM_HEADERS of them."""
    machine = platform.machine().lower()
    want, arch = _MACHINES.get(machine, (None, machine))
    with open(path, "rb") as fh:
        head = fh.read(_ELF_HEADER.size)
        if not head.startswith(b"\x7fELF"):
            raise ValueError(f"is not an ELF executable: it starts with {_shown(head[:16])}")
        if len(head) < _ELF_HEADER.size or head[4] != 2 or head[5] != 1:
            raise ValueError("is not a 64-bit little-endian ELF executable")
        ident, e_type, e_machine, _, e_entry, e_phoff, _, _, _, e_phentsize, e_phnum, _, _, _ = _ELF_HEADER.unpack(head)
        if e_type not in (2, 3) or e_entry == 0:  # ET_EXEC, or ET_DYN for a static PIE; a library has no entry
            raise ValueError("is an ELF file but not an executable (a library or an object file?)")
        if want is not None and e_machine != want:
            raise ValueError(f"is an ELF executable for another processor (machine {e_machine}; this one is {arch})")
        if e_phentsize != _PROGRAM_HEADER.size or not 0 < e_phnum <= MAX_PROGRAM_HEADERS:
            raise ValueError("is an ELF file with a program header table this check does not read")
        fh.seek(e_phoff)
        table = fh.read(e_phentsize * e_phnum)
        if len(table) < e_phentsize * e_phnum:
            raise ValueError("is a truncated ELF file")
        for k in range(e_phnum):
            p_type, _, p_offset, _, _, p_filesz, _, _ = _PROGRAM_HEADER.unpack_from(table, k * e_phentsize)
            if p_type == PT_INTERP:
                fh.seek(p_offset)
                interp = fh.read(min(p_filesz, 256)).split(b"\0", 1)[0]
                raise ValueError(
                    f"is dynamically linked (it needs the loader {_shown(interp)} and its libraries, which the "
                    "static runtime does not have): link it statically (Go: CGO_ENABLED=0; C: -static)"
                )
    kind = "position-independent " if e_type == 3 else ""
    return f"a static {kind}{arch} ELF executable"


def _shown(raw: bytes) -> str:
    """A few of a tenant's bytes, printable."""
    text = raw[:40].decode("latin-1")
    return repr("".join(c if c.isprintable() else "." for c in text))
