"""The run store's small files, read totally: a file that is unreadable, not UTF-8, not JSON, nested too
deep, not an object, or whose keys have other types than their readers use gives a problem naming the file
and the key, never an exception, so that one broken run folder cannot stop `status`, `report` or `run` for
a whole table. What each reader needs of each file is said here, once."""

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.result import VERSION
from harness.text import bounded, shown

RESULT = "result.json"
HEARTBEAT = "heartbeat"
SUBMITTED = "submitted.json"
LOCK = "trainer.lock"
METRICS = "metrics.jsonl"
FAILURES = "failure*.json"  # failure.json (rank 0), failure-rank<N>.json
STARTS = "provenance.jsonl"  # every start and resume of the run
PARTIAL = "partial.json"  # the ImageNet-C splits an evaluate run measured so far
PID_MAX = 2**22  # Linux's largest process id
LISTED_LINES = 3  # unreadable lines of metrics.jsonl named one by one; the count says how many more


@dataclass(frozen=True)
class Kind:
    """What a key's value must be, as a test and in words."""

    test: Callable[[Any], bool]
    words: str


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _or_null(kind: Kind) -> Kind:
    return Kind(lambda value: value is None or kind.test(value), f"{kind.words} or null")


def _mapping_of(kind: Kind) -> Kind:
    return Kind(
        lambda value: isinstance(value, dict) and all(kind.test(v) for v in value.values()),
        f"an object whose values are each {kind.words}",
    )


def _list_of(kind: Kind) -> Kind:
    return Kind(
        lambda value: isinstance(value, list) and all(kind.test(v) for v in value),
        f"a list whose items are each {kind.words}",
    )


TEXT = Kind(lambda value: isinstance(value, str), "a string")
NUMBER = Kind(_number, "a number")
INTEGER = Kind(_integer, "an integer")
COUNT = Kind(lambda value: _integer(value) and value >= 0, "an integer >= 0")
FLAG = Kind(lambda value: isinstance(value, bool), "true or false")
OBJECT = Kind(lambda value: isinstance(value, dict), "an object")
PID = Kind(lambda value: _integer(value) and 0 < value <= PID_MAX, f"a process id (1 to {PID_MAX})")
JOB_ID = Kind(
    lambda value: isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}(_[0-9]{1,9})?", value) is not None,
    "a job id (digits, and _ with an array index)",
)
LAUNCHER = Kind(lambda value: value in ("slurm", "local"), "slurm or local")


@dataclass(frozen=True)
class Spec:
    """The keys of a JSON object that its readers use: each one's kind, and those it must have."""

    kinds: dict[str, Kind]
    required: tuple[str, ...] = ()
    nested: dict[str, "Spec"] = field(default_factory=dict)  # keys holding objects of their own spec


PROVENANCE = Spec(
    {
        "packages": _mapping_of(_or_null(TEXT)),
        "git_commit": _or_null(TEXT),
        "git_dirty": _or_null(FLAG),
        "host": _or_null(TEXT),
        "gpu": _or_null(TEXT),
        "world_size": INTEGER,
    }
)
EXTRA = {  # harness.core.result.Extra's: under `extra`, or at the top level in a file without a version
    "reported": OBJECT,
    "ema": _mapping_of(NUMBER),
    "chance_top1": NUMBER,
    "features": TEXT,
    "imagenet_c_errors": OBJECT,
    "mce_reference": _or_null(TEXT),
    "jaccard_void": TEXT,
    "jaccard_images_without_object": COUNT,
    "aacc": NUMBER,
    "macc": NUMBER,
    "per_class_iou": _list_of(_or_null(NUMBER)),
    "majority_miou": NUMBER,
    "iterations": COUNT,
    "upstream_keys_unused": _list_of(TEXT),
}
SPECS = {
    RESULT: Spec(  # harness.core.result.Result's
        {
            "version": Kind(
                lambda value: _integer(value) and 1 <= value <= VERSION,
                f"a layout this harness reads (1 to {VERSION}; written by a newer one?)",
            ),
            **dict.fromkeys(("uid", "table", "scale", "engine"), TEXT),
            "metrics": _mapping_of(NUMBER),
            "best": _mapping_of(NUMBER),
            "epochs": COUNT,
            "gpu_hours": NUMBER,
            "wall_time_s": NUMBER,
            "skipped_steps": COUNT,
            "steps": COUNT,
            "provenance": OBJECT,
            "extra": OBJECT,
            **EXTRA,
        },
        required=("metrics",),
        nested={"provenance": PROVENANCE, "extra": Spec(EXTRA)},
    ),
    HEARTBEAT: Spec(
        {
            "time": NUMBER,
            "job_id": TEXT,
            "pid": PID,
            **dict.fromkeys(("epoch", "epochs", "step", "steps"), COUNT),
            "images_per_s": NUMBER,
        }
    ),
    SUBMITTED: Spec(
        {"launcher": LAUNCHER, "job_id": JOB_ID, "host": TEXT, "stdout": TEXT, "stderr": TEXT},
        required=("launcher", "job_id", "host"),  # without its host a local job would seem alive forever
    ),
    LOCK: Spec(
        {"job_id": TEXT, "launcher": TEXT, "host": TEXT, "pid": PID}, required=("job_id", "host", "pid")
    ),
    FAILURES: Spec(
        {"reason": TEXT, "rank": INTEGER, "time": NUMBER, "host": TEXT, "traceback": TEXT},
        required=("reason",),
    ),
    METRICS: Spec({"epoch": COUNT, "iteration": COUNT, "val_top1": NUMBER}),  # what the curves draw
    STARTS: Spec({"event": TEXT, "epoch": COUNT, "git_commit": _or_null(TEXT)}, required=("git_commit",)),
    PARTIAL: Spec({"imagenet_c": _mapping_of(NUMBER)}),
}


def read_text(path: Path) -> tuple[str | None, str]:
    """The file's text; (None, "") if there is none; (None, the problem) if it cannot be read as UTF-8."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, ""
    except OSError as error:
        return None, f"{path.name}: cannot be read ({error.strerror or error})"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as error:
        return None, f"{path.name}: not UTF-8 text (byte {error.start} of {len(data)})"


def _problem(data: Any, spec: Spec, where: str) -> str:
    """Why `data` is not an object of `spec` ("" if it is); `where` names the file (and key) for the
    message."""
    if not isinstance(data, dict):
        return f"{where}: {bounded(shown(data), 80)} is not a JSON object"
    for key in spec.required:
        if key not in data:
            return f"{where}: no key '{key}'"
    for key, kind in spec.kinds.items():
        if key in data and not kind.test(data[key]):
            return f"{where}: key '{key}' is {shown(data[key])}, expected {kind.words}"
    for key, nested in spec.nested.items():
        if key in data and (problem := _problem(data[key], nested, f"{where} key '{key}'")):
            return problem
    return ""


def decode(text: str, spec: Spec, where: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in `text`, checked against `spec`, or (None, the problem)."""
    try:
        data = json.loads(text)
    except ValueError as error:  # JSONDecodeError, and integers beyond Python's digit limit
        return None, f"{where}: not JSON ({bounded(str(error), 120)})"
    except RecursionError:
        return None, f"{where}: JSON nested too deep"
    problem = _problem(data, spec, where)
    return (None, problem) if problem else (data, "")


def read_object(path: Path, kind: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in `path`, its keys checked against the spec of its kind of file (by default its
    name); (None, "") if there is no file, (None, the problem) if it is broken."""
    text, problem = read_text(path)
    if text is None:
        return None, problem
    return decode(text, SPECS[kind or path.name], path.name)


def read_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every line of a JSON-lines file that is an object of its spec, and the problems of the others (the
    first few by number, then how many more)."""
    text, problem = read_text(path)
    if text is None:
        return [], [problem] if problem else []
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        record, problem = decode(line, SPECS[path.name], f"{path.name} line {number}")
        if record is None:
            bad.append(problem)
        else:
            records.append(record)
    more = len(bad) - LISTED_LINES
    return records, bad[:LISTED_LINES] + ([f"{path.name}: {more} more broken line(s)"] if more > 0 else [])


def checkpoint_problem(path: Path) -> str:
    """Why `path` is not a whole checkpoint, without loading it ("" if it looks whole or is absent):
    torch.save writes a zip archive, whose directory at its end a truncated or overwritten file lacks."""
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except OSError as error:
        return f"{path.name}: cannot be read ({error.strerror or error})"
    if size == 0:
        return f"{path.name} is empty"
    if not zipfile.is_zipfile(path):
        return f"{path.name} is not a checkpoint (no zip archive: truncated or overwritten?)"
    return ""
