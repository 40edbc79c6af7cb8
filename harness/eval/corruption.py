"""ImageNet-C: the mean corruption error (mCE) of Hendrycks & Dietterich (2019), normalised by AlexNet's
errors, and the unnormalised mean error logged beside it (Tab. 5; see docs/protocols.md section 3)."""

import math
from collections.abc import Mapping, Sequence

SEVERITIES = 5

# The 15 corruptions of the benchmark (noise, blur, weather, digital), in the paper's order.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
# The "extra" archive's held-out corruptions: not part of mCE; Hendrycks' ImageNet-C/test.py averages all 19.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

# AlexNet's (torchvision's pretrained AlexNet) top-1 error per corruption and severity 1..5, as fractions of
# the 50,000 images. Source: Dan Hendrycks' per-severity table in hendrycks/robustness issue #10 ("Maybe more
# detailed robustness results on AlexNet?"), written there as spreadsheet formulas =Average(s1, ..., s5).
# Values such as 0.656239999999999 are printed here as 0.65624 (every entry is a multiple of 1/50,000).
# Cross-check: each row's mean equals AugMix's ALEXNET_ERR (google-research/augmix imagenet.py, "taken from
# hendrycks/robustness") to 6 decimals, e.g. gaussian_noise 0.886428, jpeg_compression 0.606500; the test
# suite checks all 15 against that table.
ALEXNET_ERRORS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}


def _table(errors: Mapping[str, Sequence[float]], what: str, corruptions: Sequence[str]) -> dict[str, tuple]:
    """`errors` checked: exactly `corruptions`, 5 severities each, finite fractions in [0, 1]."""
    if not isinstance(errors, Mapping):
        raise TypeError(
            f"{what} must map each corruption to its {SEVERITIES} errors, got {type(errors).__name__}"
        )
    missing = [name for name in corruptions if name not in errors]
    extra = sorted(str(name) for name in errors if name not in corruptions)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected {', '.join(extra)}")
        raise ValueError(f"{what}: {'; '.join(problems)} (expected the {len(corruptions)} corruptions)")
    table = {}
    for name in corruptions:
        values = tuple(float(value) for value in errors[name])
        if len(values) != SEVERITIES:
            raise ValueError(f"{what}[{name!r}]: {len(values)} severities, expected {SEVERITIES}")
        for severity, value in enumerate(values, 1):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(
                    f"{what}[{name!r}] severity {severity}: error {value} is not a fraction in [0, 1]"
                )
        table[name] = values
    return table


def mce(
    errors: Mapping[str, Sequence[float]],
    reference: str | Mapping[str, Sequence[float]] = "alexnet",
) -> float:
    """Mean corruption error in percent: 100 x the mean over the 15 corruptions c of
    CE_c = sum_s E[c][s] / sum_s R[c][s] (severities s = 1..5), where E are `errors` (top-1 error rates as
    fractions) and R the reference's. `reference="alexnet"` is the standard mCE (ALEXNET_ERRORS); a mapping
    of the same shape normalises by another model instead (e.g. a baseline row at local scale)."""
    table = _table(errors, "errors", CORRUPTIONS)
    if isinstance(reference, str):
        if reference != "alexnet":
            raise ValueError(f"reference must be 'alexnet' or a mapping of errors, not {reference!r}")
        reference = ALEXNET_ERRORS
    base = _table(reference, "reference", CORRUPTIONS)
    ratios = []
    for name in CORRUPTIONS:
        denominator = math.fsum(base[name])
        if denominator == 0:
            raise ValueError(f"reference[{name!r}]: errors sum to 0, cannot normalise by them")
        ratios.append(math.fsum(table[name]) / denominator)
    return 100.0 * math.fsum(ratios) / len(ratios)


def mean_corruption_error(
    errors: Mapping[str, Sequence[float]], corruptions: Sequence[str] = CORRUPTIONS
) -> float:
    """The unnormalised figure: 100 x the mean of all the errors (15 corruptions x 5 severities = 75 by
    default). Pass `corruptions=CORRUPTIONS + EXTRA_CORRUPTIONS` for the 19-corruption average that
    Hendrycks' ImageNet-C/test.py prints as "mCE (unnormalized by AlexNet errors)"."""
    corruptions = tuple(corruptions)
    if not corruptions:
        raise ValueError("no corruptions to average over")
    table = _table(errors, "errors", corruptions)
    values = [value for name in corruptions for value in table[name]]
    return 100.0 * math.fsum(values) / len(values)
