"""ADE20K (SceneParsing, ADEChallengeData2016) in mmseg's layout, for Tab. 12
(docs/protocols.md sections 6, 9):
`<root>/ADEChallengeData2016/{images,annotations}/{training,validation}/`, images `*.jpg` and label maps
`*.png` of the same name. Label 0 ("other objects") is ignored and 1..150 become 0..149 (mmseg's
`reduce_zero_label`); the maps hold no 255, which marks ignored pixels from then on."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image

from harness.data.transfer import LayoutError

CLASSES = 150
FOLDER = "ADEChallengeData2016"
SPLITS = {"train": "training", "val": "validation"}
IGNORE_INDEX = 255

PairTransform = Callable[[Image.Image, np.ndarray], Any]


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """0 -> 255 (ignored), k -> k - 1 for k in 1..150, as mmseg's LoadAnnotations(reduce_zero_label=True)."""
    label = label.astype(np.int64)
    return np.where(label == 0, IGNORE_INDEX, label - 1).astype(np.uint8)


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label map) files of `split`, sorted by name; a LayoutError names what is missing."""
    base = root / FOLDER
    images, annotations = base / "images" / SPLITS[split], base / "annotations" / SPLITS[split]
    for folder in (images, annotations):
        if not folder.is_dir():
            raise LayoutError(f"the {split} split folder does not exist", folder)
    files = sorted(images.glob("*.jpg"))
    if not files:
        raise LayoutError(f"the {split} split holds no .jpg images", images)
    missing = [f.stem for f in files if not (annotations / f"{f.stem}.png").is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LayoutError(f"{len(missing)} images have no label map ({shown}.png)", annotations)
    return [(f, annotations / f"{f.stem}.png") for f in files]


def check_layout(root: Path) -> None:
    """Both splits are there, every image with its label map; raises LayoutError naming what is not."""
    for split in SPLITS:
        _pairs(root, split)


class ADE20K(torch.utils.data.Dataset):
    """One split: items are `transform(image, labels)` of the RGB PIL image and its uint8 label map
    (0..149, 255 ignored), or that pair itself without a transform."""

    def __init__(self, root: str | Path, split: str, transform: PairTransform | None = None) -> None:
        self.files = _pairs(Path(root).expanduser(), split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        image_file, label_file = self.files[index]
        image = Image.open(image_file).convert("RGB")
        with Image.open(label_file) as label:
            labels = reduce_zero_label(np.asarray(label))
        if labels.shape != (image.height, image.width):
            raise ValueError(f"{label_file}: label map {labels.shape} does not match its image's size")
        return self.transform(image, labels) if self.transform is not None else (image, labels)
