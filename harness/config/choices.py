"""The choice fields of the schemas as enums, so that OmegaConf itself refuses a value that is not one of
them (naming the key and the choices). Member names are the values written in recipes, and a member is
equal to its value as a string (StrEnum), so that `recipe.scale == "local"` reads as it did; runs keep them
as plain strings (`OmegaConf.to_container(..., enum_to_str=True)`)."""

from enum import StrEnum


class Scale(StrEnum):
    paper = "paper"
    local = "local"


class Amp(StrEnum):
    """The autocast of a method's own code on CUDA: bf16 | fp16 (with a GradScaler) | off (float32)."""

    bf16 = "bf16"
    fp16 = "fp16"
    off = "off"


class Reported(StrEnum):
    """What the original work reports (top-1): the final epoch, the best one, or the best of the EMA."""

    final = "final"
    best = "best"
    best_ema = "best_ema"


class LossVariant(StrEnum):
    entropy = "entropy"  # L_se (Eq. 9)
    tv = "tv"  # the total variation (Eq. 14, Appendix B)


class Similarity(StrEnum):
    dot = "dot"  # S of Eq. 4
    cosine = "cosine"  # S of Eq. 15 (Appendix B)


class LossSchedule(StrEnum):
    constant = "constant"  # lambda held (the paper)
    warmup_cosine = "warmup_cosine"  # the public code: linear from 0 over warmup_epochs, then a cosine to 0


# the crops of multi-crop pre-training (DINO) that carry L_se: the two global ones, or all; `global` is a
# Python keyword, hence the functional form (OmegaConf matches members by name)
Crops = StrEnum("Crops", {"global": "global", "all": "all"})


class ProbeFeatures(StrEnum):
    last4 = "last4"  # the [CLS] of the last four blocks, normed, concatenated (DINO)
    final = "final"  # the [CLS] after the final norm (MoCo-v3)


class LauncherName(StrEnum):
    auto = "auto"  # slurm when sbatch is on the PATH, else local
    slurm = "slurm"
    local = "local"
    inline = "inline"


class Checkpoint(StrEnum):
    """The checkpoint of an upstream run that a downstream run loads."""

    final = "final"
    best = "best"  # the epoch of the best validation top-1


def names(choice: type[StrEnum]) -> list[str]:
    """The values a recipe may write for `choice`."""
    return [member.value for member in choice]
