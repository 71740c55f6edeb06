"""A tenant's constraints: parsed, checked against ``constraints/schema.json``, defaults filled in.

The same checks run in fetchdata (before uploading) and on the server (because a client can lie); the
per-file checks a client can do live in :func:`check_file_name` and :func:`check_size`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConstraintViolation, FileTooLarge, InvalidConstraints

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "constraints" / "schema.json"


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@dataclass(frozen=True)
class Autoscale:
    enabled: bool
    min_instances: int
    max_instances: int
    scale_up_avg_ms: float
    scale_up_backlog: int
    scale_down_rate: float
    cooldown_seconds: float


@dataclass(frozen=True)
class Constraints:
    raw: dict  # the validated document with defaults filled in

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self.raw["formats"])

    @property
    def max_files(self) -> int:
        return int(self.raw["max_files"]["count"])

    @property
    def max_files_per(self) -> str:
        return self.raw["max_files"]["per"]

    @property
    def max_file_size(self) -> int:
        return int(self.raw["max_file_size_bytes"])

    @property
    def split_large_files(self) -> bool:
        return bool(self.raw.get("split_large_files", False))

    @property
    def batch(self) -> dict:
        return self.raw["batch"]

    @property
    def stream(self) -> dict:
        return self.raw["stream"]

    @property
    def autoscale(self) -> Autoscale:
        return Autoscale(**self.raw["stream"]["autoscale"])

    @property
    def objects(self) -> dict:
        """max_object_bytes, max_total_bytes, max_objects (defaults filled in)."""
        return self.raw["objects"]

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True)


def _defaults(node: dict, value: Any) -> Any:
    """Fill in the schema's defaults, recursively, for object properties."""
    if node.get("type") != "object" or not isinstance(value, dict):
        return value
    for key, sub in node.get("properties", {}).items():
        if key not in value:
            if "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and key in ("batch", "stream", "autoscale", "objects"):
                value[key] = {}
        if key in value:
            value[key] = _defaults(sub, value[key])
    return value


def parse(data: Any, where: str = "constraints") -> Constraints:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise InvalidConstraints(f"{where}: {path}: {err.message}", hint="see constraints/schema.json")
    full = _defaults(schema(), copy.deepcopy(data))
    auto = full["stream"]["autoscale"]
    if auto["min_instances"] > auto["max_instances"]:
        raise InvalidConstraints(f"{where}: stream/autoscale: min_instances is above max_instances")
    return Constraints(full)


def load(path: Path) -> Constraints:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidConstraints(f"constraints file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConstraints(f"cannot read constraints file {path}: {exc}") from None
    return loads(text, str(path))


def loads(text: str, where: str = "constraints") -> Constraints:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidConstraints(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return parse(data, where)


# --- checks on one file that both the client and the server make ------------------------------------


def file_format(name: str) -> str:
    """The format of a file, by its extension (lower-cased, without the dot); '' when it has none."""
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base.lstrip(".") else ""


def check_file_name(c: Constraints, name: str) -> str:
    fmt = file_format(name)
    if fmt not in c.formats:
        allowed = ", ".join("." + f for f in c.formats)
        raise ConstraintViolation(
            f"{name}: format {'.' + fmt if fmt else '(none)'} is not allowed (allowed: {allowed})"
        )
    return fmt


def check_size(c: Constraints, name: str, size: int) -> None:
    if size <= 0:
        raise ConstraintViolation(f"{name}: the file is empty")
    if size > c.max_file_size:
        raise FileTooLarge(f"{name}: {size} bytes is over the maximum file size of {c.max_file_size} bytes")
