"""How a cell reads: ours as mean +- std (n) at the paper's precision for that sub-table and metric, the
paper's numbers and gains as the paper prints them (`76.72 (+2.5)`, `51.6 (-1.2)`), column headers as the
paper names them, with an arrow for the better direction, and what was trained, in words."""

import math
from decimal import Decimal
from typing import Any

from harness.engines.spec import Progress, spec_of
from harness.eval import METRICS

# the paper's column names (Tab. 5: "IN-A (Acc.)", "IN-C (mCE)"); a metric missing here shows its name
NAMES = {
    "top1": "Top-1",
    "top5": "Top-5",
    "imagenet_a_top1": "IN-A (Acc.)",
    "mce": "IN-C (mCE)",
    "mean_corruption_error": "IN-C (mean error)",
    "jaccard": "Jaccard",
    "miou": "mIoU",
    "ssl_loss": "L_ssl",
    "spatial_entropy": "L_se",
}
ARROWS = {"higher": "↑", "lower": "↓"}
DEFAULT_DIGITS = 2  # a sub-table without any of the paper's numbers
VERDICTS = {"clear": "clear", "noise": "within noise", "untested": "1 seed: untested"}
AUDIT_MARK = "⚠"


def name(metric: str) -> str:
    return NAMES.get(metric, metric)


def header(metric: str) -> str:
    """`Top-1 ↑`, `IN-C (mCE ↓)`: the arrow points the way that is better, inside the paper's brackets."""
    text, arrow = name(metric), ARROWS[METRICS[metric].direction]
    return f"{text[:-1]} {arrow})" if text.endswith(")") else f"{text} {arrow}"


def exact(value: float) -> Decimal:
    """The number as written in the recipe (the shortest repr of the float), exactly."""
    return Decimal(repr(float(value)))


def decimals(value: float) -> int:
    """How many decimals the paper wrote: 75.72 -> 2, 41.0 -> 1, 52.8 -> 1 (trailing zeros are lost when a
    recipe is read, so 85.20 counts as 85.2)."""
    if not math.isfinite(value):
        return 0
    return max(0, -exact(value).as_tuple().exponent)


def precision(values: list[float]) -> int:
    """The decimals of a sub-table's column: the most any of the paper's numbers in it has."""
    found = [decimals(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return max(found) if found else DEFAULT_DIGITS


def _plain(value: float, digits: int) -> str:
    value = round(float(value), digits) + 0.0  # no "-0.00"
    return f"{value:.{digits}f}"


def duration(seconds: float) -> str:
    """A wall time a reader can take in: hours from one hour, else minutes, else seconds (a local table's
    runs sum to minutes, where "0.0 h" would read as nothing run)."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def gain(value: float) -> str:
    """A gain in the paper's style: +2.5, +0.42, -0.46, +18.17 (the shortest form, no trailing zeros)."""
    value = float(value) + 0.0
    text = format(exact(value).normalize(), "f") if value else "0"
    return text if text.startswith("-") else f"+{text}"


def gain_span(low: float, high: float) -> str:
    """The paper's gains from `low` to `high` in its style: "-0.46 to +2.5", "+0.9" when they are one; ""
    without any (NaN)."""
    if math.isnan(low):
        return ""
    return gain(low) + (f" to {gain(high)}" if gain(high) != gain(low) else "")


def signed(value: float, digits: int) -> str:
    """Our gain at the paper's precision: +2.00 beside the paper's +0.42, -1.2 beside its -1.2."""
    text = _plain(value, digits)
    return text if text.startswith("-") else f"+{text}"


def number(value: float) -> str:
    """One of the paper's numbers as it prints it: 75.72, 41.0, 52.8."""
    return f"{value:.{max(1, decimals(value))}f}"


def _without_value(cell: dict[str, Any]) -> str:
    """What a cell with no value from any seed says instead."""
    state = cell["state"]
    if state in ("not run", "not submitted"):
        return "not run"
    if "failed" in state:
        return f"failed: {cell['failure']}"
    if "running" in state:
        return f"running ({cell['running_epochs']} epochs done)"
    if "unavailable" in state:
        return f"unavailable: {cell['missing']}"
    return state


def spread(mean: float, std: float, n: int, digits: int, show_n: bool = True) -> str:
    """`21.00 ± 0.50 (n=3)`; one seed has no spread: `21.00 (n=1)`; without the count where the table
    says it once for all its cells."""
    text = _plain(mean, digits)
    if n > 1:
        text += f" ± {_plain(std, digits)}"
    return f"{text} (n={n})" if show_n else text


def verdict(cell: dict[str, Any]) -> str:
    """`clear, paired p=0.019`, `clear, Welch p<0.001`, `within noise, paired p=0.41` or `1 seed:
    untested`."""
    text, p = VERDICTS[cell["verdict"]], cell["p"]
    if cell["verdict"] not in ("clear", "noise"):
        return text
    test = {"paired": "paired ", "welch": "Welch "}.get(cell.get("test", ""), "")
    if p < 0.001:
        return f"{text}, {test}p<0.001"
    return f"{text}, {test}p={p:.3f}" if p < 0.1 else f"{text}, {test}p={p:.2f}"  # 0.048, 0.052 stay apart


def gain_interval(cell: dict[str, Any]) -> str:
    """` [+0.52, +2.81]`: the 95 % interval of a paired gain ("" for a gain not tested in pairs)."""
    if cell.get("test") != "paired":
        return ""
    return f" [{signed(cell['ci_low'], cell['digits'])}, {signed(cell['ci_high'], cell['digits'])}]"


def ours_parts(cell: dict[str, Any]) -> tuple[str, str]:
    """Ours at the final epoch over the seeds (the count only where it differs from the sub-table's
    `group_seeds`), and its gain over the baseline row with the verdict ("" without a baseline)."""
    if cell["n"] == 0:
        return _without_value(cell), ""
    text = spread(cell["mean"], cell["std"], cell["n"], cell["digits"], cell["n"] != cell.get("group_seeds"))
    if cell["n"] < cell["seeds"]:
        text += f"; {cell['seeds'] - cell['n']} seed(s) {cell['state']}"
    if math.isnan(cell["gain"]):
        return text, ""
    return text, f"{signed(cell['gain'], cell['digits'])}{gain_interval(cell)}; {verdict(cell)}"


def ours(cell: dict[str, Any]) -> str:
    """`22.50 ± 1.80 (+1.67; within noise, p=0.32)` in one line."""
    value, gain = ours_parts(cell)
    return f"{value} ({gain})" if gain else value


def best(cell: dict[str, Any]) -> str:
    """The best validated epoch's value over the seeds (result.json's `best`), `-` where none was logged."""
    if cell["best_n"] == 0:
        return "-"
    show_n = cell["best_n"] != cell.get("group_seeds")
    return spread(cell["best_mean"], cell["best_std"], cell["best_n"], cell["digits"], show_n)


def paper(cell: dict[str, Any]) -> str:
    """`74.64 (+0.42)`; a printed gain that its two numbers do not give is marked `⚠`. Without a printed
    gain, the difference of the paper's two numbers, unless the recipe lists the printed gains (then the
    paper prints none there: Tab. 4's 88.95 beside its baseline's 88.95)."""
    if math.isnan(cell["paper"]):
        return "-"
    text = number(cell["paper"])
    if not math.isnan(cell["printed_gain"]):
        text += f" ({gain(cell['printed_gain'])})"
    elif not cell.get("paper_prints_gains") and not math.isnan(cell["paper_gain"]):
        text += f" ({signed(cell['paper_gain'], cell['gain_digits'])})"
    return text + (f" {AUDIT_MARK}" if cell["audit"] == "mismatch" else "")


def diff(cell: dict[str, Any]) -> str:
    return "-" if math.isnan(cell["diff"]) else signed(cell["diff"], cell["digits"])


def _count(value: Any, what: str) -> str:
    if isinstance(value, list | tuple):
        if len(set(value)) == 1:
            return f"{value[0]} {what}"
        return f"{sum(value)} {what} ({'+'.join(map(str, value))})" if what == "blocks" else None
    return f"{value} {what}"


def architecture(kwargs: dict[str, Any]) -> str:
    """The model as built, from its constructor arguments: `4 blocks, 144 wide, 6 heads, 64 px`."""
    parts = []
    depth = kwargs.get("depth", kwargs.get("depths"))
    if depth is not None:
        parts.append(_count(depth, "blocks"))
    width = kwargs.get("embed_dim", kwargs.get("embed_dims"))
    if width is not None:
        parts.append(f"{width[0]}-{width[-1]} wide" if isinstance(width, list | tuple) else f"{width} wide")
    heads = kwargs.get("num_heads")
    if heads is not None:
        parts.append(f"{heads[-1]} heads" if isinstance(heads, list | tuple) else f"{heads} heads")
    if kwargs.get("img_size") is not None:
        parts.append(f"{kwargs['img_size']} px")
    return ", ".join(p for p in parts if p)


def schedule(trained: dict[str, Any]) -> str:
    """What a run did, in its engine's progress unit: `8 epochs`, `8 epochs of fine-tuning after 24 of
    pre-training`, `evaluates the 24-epoch model`, `160 iterations of segmentation after 24 epochs of
    pre-training`."""
    spec, upstream = spec_of(trained["engine"]), trained.get("upstream_epochs")
    if spec.progress is Progress.none:
        return f"evaluates the {upstream}-epoch model" if upstream else "evaluation only"
    if spec.progress is Progress.iteration:
        return f"{trained['iterations']} iterations of {spec.activity}" + (
            f" after {upstream} epochs of pre-training" if upstream else ""
        )
    text = f"{trained['epochs']} epochs"
    if spec.activity:
        text += f" of {spec.activity}" + (f" after {upstream} of pre-training" if upstream else "")
    return text


def data(trained: dict[str, Any]) -> str:
    """`synthetic stand-in for imagenet100 (10 classes, 1,000 train / 200 val images)`."""
    if trained.get("dataset") != "synthetic":
        return ""
    spec = spec_of(trained["engine"])
    if spec.progress is Progress.none:
        return "synthetic stand-ins for the evaluation sets"
    stands_for = trained.get("stands_for")
    what = (
        f"synthetic stand-in for {stands_for}" if stands_for not in (None, "synthetic") else "synthetic data"
    )
    if "miou" in spec.metrics:  # segmented: the synthetic objects' label maps
        what = f"{what}: object vs background masks"
    return (
        f"{what} ({trained['classes']} classes, {trained['train_images']:,} train / "
        f"{trained['val_images']:,} val images)"
    )
