"""The pipeline graph of a recipe: its own runs and every upstream run they consume through `from:`, each
once, upstream first, with what `run` does with each.

Why a graph rather than a list of runs: a finetune or evaluate run needs its upstream run's checkpoint, so
`run` on a downstream recipe trains what is missing upstream first (on Slurm: in the same submission pass,
the downstream job waiting on the upstream one with `afterok`), never trains a done or live upstream run
again, and says before anything starts that a done upstream run's checkpoint is gone. `--force` is about
the recipe's own runs only: an upstream run belongs to another recipe, and is forced there.
"""

from dataclasses import dataclass, field
from pathlib import Path

from harness.launch import launcher_name, run_name
from harness.lifecycle import RunState, read_submission, run_states
from harness.recipe import ResolvedRun
from harness.results import checkpoint_path

DONE, LIVE, LAUNCH, UNNEEDED = "done", "live", "launch", "not needed"


class PipelineError(RuntimeError):
    """The graph cannot be launched as it stands; raised before anything is launched."""


@dataclass(eq=False)
class Node:
    run: ResolvedRun
    own: bool  # one of the recipe's own runs (else an upstream run, reached through `from:`)
    upstream: "Node | None" = None
    dependants: list["Node"] = field(default_factory=list)
    state: RunState = field(default_factory=lambda: RunState("not submitted"))
    action: str = LAUNCH  # done | live | launch | not needed (set by `plan`)

    @property
    def name(self) -> str:
        return run_name(self.run)

    def needed_checkpoint(self) -> Path | None:
        """The upstream file this run loads (`from.checkpoint` is the downstream's choice), or None."""
        if self.upstream is None:
            return None
        return checkpoint_path(self.upstream.run.folder, self.run.config.upstream.checkpoint)


def _depth(node: Node) -> int:
    """How many upstream runs stand before this one (0: it consumes none)."""
    return 0 if node.upstream is None else 1 + _depth(node.upstream)


def graph(runs: list[ResolvedRun]) -> list[Node]:
    """`runs` and every upstream run they reach, once each, upstream before downstream (stage by stage),
    with their states.

    A run is one node whichever row reaches it: nodes are keyed by folder (table and uid), so two rows that
    consume the same upstream run share its node (their `.upstream` are distinct, equal objects)."""
    nodes: dict[Path, Node] = {}

    def visit(run: ResolvedRun, own: bool) -> Node:
        node = nodes.get(run.folder)
        if node is None:
            upstream = visit(run.upstream, own=False) if run.upstream is not None else None
            node = nodes[run.folder] = Node(run, own, upstream)
            if upstream is not None:
                upstream.dependants.append(node)
        node.own = node.own or own
        return node

    for run in runs:
        visit(run, own=True)
    ordered = sorted(nodes.values(), key=_depth)  # stable: stage by stage, each in the recipes' order
    for node, state in zip(ordered, run_states([n.run.folder for n in ordered]), strict=True):
        node.state = state
    return ordered


def plan(nodes: list[Node], force: bool, cancel: bool = False) -> None:
    """Set each node's action. A live run is never launched twice, unless it is one of the recipe's own
    runs and `force` and `cancel` are set (its job is cancelled first). A done run stays done unless it is
    one of the recipe's own runs and `force` is set. An upstream run launches only if a launching run needs
    it: the upstream of a done downstream run is left as it is, whatever its state."""
    for node in reversed(nodes):  # dependants before their upstream
        forced = force and node.own
        if node.state.live and not (forced and cancel):
            node.action = LIVE
        elif node.state.state == "done" and not forced:
            node.action = DONE
        elif node.own or any(d.action == LAUNCH for d in node.dependants):
            node.action = LAUNCH
        else:
            node.action = UNNEEDED


def _missing_checkpoint(node: Node) -> Path | None:
    """The checkpoint file a launching run needs from its done upstream run, if that file is gone."""
    if node.action != LAUNCH or node.upstream is None or node.upstream.action != DONE:
        return None
    needed = node.needed_checkpoint()
    return needed if needed is not None and not needed.exists() else None


def _train_again(run: ResolvedRun) -> str:
    """The command that trains an upstream run again: its recipe at the scale, seed and run store it was
    resolved with (the downstream's), forced, for the rows it fills only."""
    c = run.config
    overrides = f"scale={c.scale} 'seeds=[{c.seed}]' runs_root={c.runs_root}"
    return f"python -m harness run {c.recipe_file} {overrides} --rows {','.join(run.rows)} --force"


def check(nodes: list[Node]) -> None:
    """Raise PipelineError, before anything launches, if a launching run cannot get its upstream: a done
    upstream run whose checkpoint file is gone, or a live upstream job that a Slurm job cannot wait for."""
    for node in nodes:
        up, missing = node.upstream, _missing_checkpoint(node)
        if up is not None and missing is not None:
            raise PipelineError(
                f"{node.name} needs {missing.name} of its upstream run {up.run.uid} (rows "
                f"{', '.join(up.run.rows)} of {up.run.config.recipe_file}), which is done but its folder "
                f"{up.run.folder} has no {missing.name}: train the upstream run again with "
                f"`{_train_again(up.run)}`, then run this recipe again"
            )
        waits_on_live = node.action == LAUNCH and up is not None and up.action == LIVE
        if waits_on_live and launcher_name(node.run) == "slurm":
            submission = read_submission(up.run.folder)
            if submission is None or submission["launcher"] != "slurm":
                raise PipelineError(
                    f"{node.name} would be a Slurm job waiting for its upstream run {up.name}, which is "
                    f"{up.state.state} as {up.state.job or 'an inline run'}: a Slurm job can only wait for "
                    "a Slurm job; run this recipe again once that run is done"
                )


def slurm_after(nodes: list[Node]) -> dict[str, tuple[str, ...]]:
    """The Slurm job each launching run waits for (`afterok`) because its upstream run is live: the job id
    from the upstream's submitted.json. (An upstream launched in the same pass is `launch`'s to add.)"""
    after = {}
    for node in nodes:
        up = node.upstream
        if node.action == LAUNCH and up is not None and up.action == LIVE:
            submission = read_submission(up.run.folder)
            if submission is not None and submission["launcher"] == "slurm":
                after[node.run.uid] = (submission["job_id"],)
    return after


def waits_for(node: Node) -> str:
    """What a launching run waits for, in words: `after 3f2a9c1e7b00 (table2 vit-s)`, with the live job's
    id when there is one; `-` when it can start at once; the upstream checkpoint it lacks, if it does."""
    up, missing = node.upstream, _missing_checkpoint(node)
    if up is not None and missing is not None:
        return f"{up.name}: MISSING {missing.name}"
    if node.action != LAUNCH or up is None or up.action not in (LAUNCH, LIVE):
        return "-"
    return f"after {up.name}" + (f": {up.state.job}" if up.action == LIVE and up.state.job else "")


def upstream_state(node: Node) -> str:
    """The upstream run's state for `status`: `3f2a9c1e7b00 (table2 vit-s): done`, and whether the
    checkpoint this run needs is there."""
    up = node.upstream
    if up is None:
        return "-"
    needed = node.needed_checkpoint()
    missing = up.state.state == "done" and needed is not None and not needed.exists()
    return f"{up.name}: {up.state.state}" + (f" (no {needed.name})" if missing else "")
