"""`python -m harness store migrate`: re-key a run store written by the release before identity version 2.

That release named each run folder by a uid hashing every computed value, defaults included, so each new
field orphaned every stored run. Version 2 hashes only what differs from the defaults (plus the version) and
names folders `<row>-s<seed>-<hash>`. This module reads each old folder's `config.yaml`, turns it into the
run its engine now reads (`harness.config.identity.stored_run`), computes its new uid, renames the folder and
rewrites its config. Upstream runs go first, so a fine-tuning's identity holds its upstream's new uid.

Nothing is deleted: each folder keeps its old config as `config.v1.yaml`, and a folder that cannot be
mapped (an unreadable config, an upstream run that is not in the store, a new name already taken) stays
where it is and is listed with the reason. A dry run prints the plan and writes nothing.
Running it again finds nothing left to do.
"""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from harness.config.identity import folder_name, run_uid, stored_run
from harness.results import atomic_write_text

OLD_FOLDER = re.compile(r"[0-9a-f]{12}")  # version 1 named a run folder by its bare uid
CONFIG = "config.yaml"
OLD_CONFIG = "config.v1.yaml"  # the folder's version-1 config, kept beside the new one


@dataclass
class Plan:
    """What migrating a store does: old folder -> new folder, and the folders it leaves, with why."""

    moves: list[tuple[Path, Path]] = field(default_factory=list)
    left: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class _OldRun:
    folder: Path
    config: dict[str, Any]

    @property
    def old_uid(self) -> str:
        return self.folder.name

    @property
    def upstream_uid(self) -> str | None:
        upstream = self.config.get("upstream")
        return upstream.get("uid") if isinstance(upstream, dict) else None


def _old_runs(root: Path) -> tuple[list[_OldRun], list[tuple[Path, str]]]:
    """Every version-1 run folder under `root/<table>/`, with its config; the unreadable ones listed."""
    runs, left = [], []
    for folder in sorted(root.glob("*/*")):
        if not folder.is_dir() or not OLD_FOLDER.fullmatch(folder.name) or folder.parent.name.startswith("_"):
            continue
        source = folder / OLD_CONFIG if (folder / OLD_CONFIG).is_file() else folder / CONFIG  # a cut-off run
        try:
            config = yaml.safe_load(source.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            left.append((folder, f"{source.name} cannot be read ({type(error).__name__}: {error})"))
            continue
        if not isinstance(config, dict):
            left.append((folder, f"{source.name} is not a mapping"))
            continue
        runs.append(_OldRun(folder, config))
    return runs, left


def _upstream_first(runs: list[_OldRun]) -> list[_OldRun]:
    """Runs ordered so that every run comes after the run it consumes (pipelines are shallow chains)."""
    by_uid = {run.old_uid: run for run in runs}
    ordered: list[_OldRun] = []
    seen: set[str] = set()

    def visit(run: _OldRun, chain: tuple[str, ...]) -> None:
        if run.old_uid in seen or run.old_uid in chain:
            return
        upstream = by_uid.get(run.upstream_uid or "")
        if upstream is not None:
            visit(upstream, (*chain, run.old_uid))
        seen.add(run.old_uid)
        ordered.append(run)

    for run in runs:
        visit(run, ())
    return ordered


def _new_config(run: _OldRun, root: Path, renamed: dict[str, tuple[str, Path]]) -> dict[str, Any]:
    """The run as this release resolves it, in this store, linked to its upstream's new uid and folder."""
    config = OmegaConf.to_container(stored_run(run.config), resolve=True)
    config["runs_root"] = str(root)
    launcher = config["launcher"]
    old_root = str(run.config.get("runs_root", ""))
    if not launcher.get("folder") or launcher["folder"].startswith(old_root):
        launcher["folder"] = str(root / "_submitit")
    if config.get("upstream") is not None:
        uid, folder = renamed[run.upstream_uid]
        config["upstream"].update(uid=uid, folder=str(folder))
    return config


def plan_migration(root: Path) -> tuple[Plan, dict[Path, dict[str, Any]]]:
    """The plan for the store at `root`, and each moved folder's new config (nothing is written)."""
    runs, left = _old_runs(root)
    plan, configs = Plan(left=left), {}
    renamed: dict[str, tuple[str, Path]] = {}  # old uid -> new uid, new folder
    taken = {path for path in root.glob("*/*") if path.is_dir()}
    for run in _upstream_first(runs):
        if run.upstream_uid and run.upstream_uid not in renamed:
            plan.left.append(
                (run.folder, f"its upstream run {run.upstream_uid} is not migrated in this store")
            )
            continue
        try:
            config = _new_config(run, root, renamed)
            uid = run_uid(config)
        except Exception as error:  # whatever the old config lacks or holds is this folder's to report
            plan.left.append((run.folder, f"{CONFIG} does not map to a run of this release: {error}"))
            continue
        target = run.folder.parent / folder_name(config["row"], config["seed"], uid)
        if target in taken:
            plan.left.append(
                (run.folder, f"{target.name} already exists (the same run under the new identity)")
            )
            continue
        taken.add(target)
        renamed[run.old_uid] = uid, target
        plan.moves.append((run.folder, target))
        configs[target] = config
    return plan, configs


def migrate_store(root: Path, dry_run: bool, log: Callable[[str], None]) -> Plan:
    """Migrate the store at `root` (or only say how, with `dry_run`); returns the plan it followed."""
    plan, configs = plan_migration(root)
    for old, new in plan.moves:
        log(f"{'would move' if dry_run else 'moved'} {old.relative_to(root)} -> {new.relative_to(root)}")
        if not dry_run:  # the old config is kept first: a migration cut off here is taken up again
            if not (old / OLD_CONFIG).exists():
                atomic_write_text(old / OLD_CONFIG, (old / CONFIG).read_text())
            atomic_write_text(old / CONFIG, OmegaConf.to_yaml(OmegaConf.create(configs[new])))
            os.rename(old, new)
    for folder, why in plan.left:
        log(f"left {folder.relative_to(root)}: {why}")
    verb = "would migrate" if dry_run else "migrated"
    log(f"{verb} {len(plan.moves)} run(s) in {root}; {len(plan.left)} left as they were")
    return plan
