"""Readers of the transfer and robustness datasets (Tabs. 3 to 6): Stanford Cars and DomainNet (Clipart,
Painting, Sketch) for training from scratch, CIFAR-10/100, Flowers102 and Oxford-IIIT Pets for
fine-tuning, ImageNet-A and ImageNet-C for robustness, PASCAL VOC 2012 segmentation for the attention
Jaccard. Each reads the on-disk layout that torchvision (or the dataset's own archive) produces; nothing
here downloads.

The layout checks raise `LayoutError(problem, path)`; the registry turns it into a `DatasetNotFoundError`
that names the dataset, its expected layout and the config key to set. torchvision's classes are not used:
its CIFAR10/100 and Flowers102 verify the MD5 sums of the original archives' files, so they refuse any other
file (a test tree included), and its StanfordCars says only "Dataset not found." whatever is missing and
cannot read an annotation file of one record. The readers below follow their parsing instead.
"""

import os
import pickle
import pkgutil
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import Flowers102, ImageFolder, VOCSegmentation
from torchvision.datasets.folder import default_loader

from harness.eval.corruption import CORRUPTIONS, EXTRA_CORRUPTIONS

Transform = Callable[[Any], Any]

# timm's IMAGENET_DEFAULT_MEAN / _STD, written out so that importing the registry does not import timm
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LayoutError(Exception):
    """The files under a dataset root are missing or not what the layout says; `path` is where it looked."""

    def __init__(self, problem: str, path: Path):
        super().__init__(problem)
        self.problem = problem
        self.path = path


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise LayoutError(f"{what} does not exist", path)


def _require_files(directory: Path, names: Sequence[str], what: str) -> None:
    _require_dir(directory, f"the {what} folder")
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise LayoutError(f"the {what} folder lacks {', '.join(missing)}", directory)


def class_folders(directory: Path) -> set[str]:
    """The names of the sub-folders of `directory` (one per class in the ImageFolder layouts)."""
    with os.scandir(directory) as entries:
        return {entry.name for entry in entries if entry.is_dir()}


def _missing_files(paths: Sequence[str], what: str, where: Path) -> None:
    """Report the files of `paths` that do not exist: their count and the first five, relative to `where`."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        names = ", ".join(os.path.relpath(path, where) for path in missing[:5])
        raise LayoutError(f"{len(missing)} of the {len(paths)} {what} are missing (e.g. {names})", where)


class ListedImages(torch.utils.data.Dataset):
    """Image files with labels from a list: `.samples` (path, label), `.targets`, `.classes`, like
    ImageFolder; items are (transform(RGB PIL image), label)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Transform | None):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = default_loader(path)
        return (self.transform(image) if self.transform is not None else image), label


# ---------------------------------------------------------------------------------------------- CIFAR

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {
    "cifar10": {
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "val": ["test_batch"],
        "meta": "batches.meta",
    },
    "cifar100": {"train": ["train"], "val": ["test"], "meta": "meta"},
}
# (label key in a batch, class-name key in the meta file, number of classes); CIFAR-100 uses fine labels
_CIFAR_KEYS = {"cifar10": ("labels", "label_names", 10), "cifar100": ("fine_labels", "fine_label_names", 100)}


def check_cifar(name: str, root: Path) -> None:
    files = _CIFAR_FILES[name]
    _require_files(
        root / CIFAR_FOLDERS[name], [*files["train"], *files["val"], files["meta"]], CIFAR_FOLDERS[name]
    )


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle with str keys: the original files (Python 2 pickles) load with str keys under
    encoding="latin1", as torchvision reads them; files written by Python 3 with bytes keys (b"data", which
    is also what encoding="bytes" gives) are accepted too."""
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
    except Exception as error:
        raise LayoutError(
            f"{path.name} is not a readable pickle ({type(error).__name__}: {error})", path
        ) from error
    if not isinstance(entry, dict):
        raise LayoutError(f"{path.name} holds a {type(entry).__name__}, not a dict", path)
    return {_text(key): value for key, value in entry.items()}


class CifarBatches(torch.utils.data.Dataset):
    """CIFAR-10 / CIFAR-100 from torchvision's python-batch layout: `.data` uint8 [N, 32, 32, 3] (HWC),
    `.targets` (fine labels for CIFAR-100), `.classes` from the meta file; items are (transform(PIL), label).
    "train" is the 50,000 training images (CIFAR-10: data_batch_1..5 in order), "val" the 10,000 test ones."""

    def __init__(self, name: str, root: Path, split: str, transform: Transform | None = None):
        folder = root / CIFAR_FOLDERS[name]
        label_key, names_key, num_classes = _CIFAR_KEYS[name]
        data, targets = [], []
        for filename in _CIFAR_FILES[name][split]:
            entry = _unpickle(folder / filename)
            if "data" not in entry or label_key not in entry:
                raise LayoutError(f"{filename} has no 'data' and {label_key!r} entries", folder / filename)
            array = np.asarray(entry["data"])
            labels = [int(label) for label in entry[label_key]]
            if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 3072:
                raise LayoutError(
                    f"{filename}: 'data' must be uint8 [N, 3072], got {array.dtype} {list(array.shape)}",
                    folder / filename,
                )
            if len(labels) != len(array) or not all(0 <= label < num_classes for label in labels):
                raise LayoutError(
                    f"{filename}: {label_key!r} must hold {len(array)} labels in 0..{num_classes - 1}",
                    folder / filename,
                )
            data.append(array)
            targets += labels
        self.data = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = targets
        meta = _unpickle(folder / _CIFAR_FILES[name]["meta"])
        self.classes = [_text(label) for label in meta.get(names_key, ())]
        if len(self.classes) != num_classes:
            raise LayoutError(
                f"{_CIFAR_FILES[name]['meta']}: {names_key!r} must list {num_classes} class names",
                folder / _CIFAR_FILES[name]["meta"],
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


# ------------------------------------------------------------------------------------------ Flowers102

FLOWERS_FOLDER = "flowers-102"


def check_flowers(root: Path) -> None:
    base = root / FLOWERS_FOLDER
    _require_files(base, ["imagelabels.mat", "setid.mat"], FLOWERS_FOLDER)
    _require_dir(base / "jpg", f"the {FLOWERS_FOLDER}/jpg image folder")


def _read_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The `keys` entries of a MATLAB file as scipy reads them with squeeze_me=True (as torchvision does),
    each made at least 1-d so that a one-element list or struct array still iterates."""
    from scipy.io import loadmat

    try:
        content = loadmat(path, squeeze_me=True)
    except Exception as error:
        raise LayoutError(f"{path.name} is not a readable .mat file ({error})", path) from error
    missing = [key for key in keys if key not in content]
    if missing:
        raise LayoutError(f"{path.name} has no {', '.join(missing)} entry", path)
    return {key: np.atleast_1d(content[key]) for key in keys}


def _load_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    return {key: value.astype(np.int64) for key, value in _read_mat(path, keys).items()}


def flowers102(root: Path, split: str, transform: Transform | None = None) -> ListedImages:
    """Flowers102 as SAR fine-tunes on it (docs/protocols.md section 2: SAR's `datasets.py` uses MoCo-v3's
    `oxford_flowers_dataset.py`): "train" = setid's trnid followed by valid (1,020 + 1,020 = 2,040
    images), "val" = tstid (6,149), the test set of Tab. 4. Label = imagelabels[id - 1] - 1 (the file's
    1..102 -> 0..101); image `id` is jpg/image_<id:05d>.jpg. Classes are torchvision's Flowers102 names."""
    base = root / FLOWERS_FOLDER
    labels = _load_mat(base / "imagelabels.mat", ["labels"])["labels"]
    setid = _load_mat(base / "setid.mat", ["trnid", "valid", "tstid"])
    if labels.size and (labels.min() < 1 or labels.max() > 102):
        raise LayoutError(
            f"imagelabels.mat: labels must lie in 1..102, got {labels.min()}..{labels.max()}",
            base / "imagelabels.mat",
        )
    ids = np.concatenate([setid["trnid"], setid["valid"]]) if split == "train" else setid["tstid"]
    if ids.size and (ids.min() < 1 or ids.max() > len(labels)):
        raise LayoutError(
            f"setid.mat: image ids must lie in 1..{len(labels)} (the length of imagelabels.mat)",
            base / "setid.mat",
        )
    samples = [(str(base / "jpg" / f"image_{i:05d}.jpg"), int(labels[i - 1]) - 1) for i in ids.tolist()]
    _missing_files([path for path, _ in samples], f"{split} images listed in setid.mat", base / "jpg")
    return ListedImages(samples, list(Flowers102.classes), transform)


# ------------------------------------------------------------------------------------------------ Pets

PETS_FOLDER = "oxford-iiit-pet"
_PETS_LISTS = {"train": "trainval.txt", "val": "test.txt"}


def check_pets(root: Path) -> None:
    base = root / PETS_FOLDER
    _require_files(base / "annotations", list(_PETS_LISTS.values()), f"{PETS_FOLDER}/annotations")
    _require_dir(base / "images", f"the {PETS_FOLDER}/images folder")


def pets(root: Path, split: str, transform: Transform | None = None) -> ListedImages:
    """Oxford-IIIT Pets, 37 breeds: "train" = annotations/trainval.txt (3,680 images), "val" = test.txt
    (3,669), as in MoCo-v3's `oxford_pets_dataset.py` and torchvision. Each line is `<image id> <class 1..37>
    <species> <breed id>`; label = class - 1; image = images/<image id>.jpg. Class names as torchvision
    forms them from the image ids (e.g. "American Bulldog")."""
    base = root / PETS_FOLDER
    listing = base / "annotations" / _PETS_LISTS[split]
    samples, names = [], {}
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= 37:
            raise LayoutError(f"{listing.name} line {number} is not '<image id> <class 1..37> ...'", listing)
        label = int(fields[1]) - 1
        samples.append((str(base / "images" / f"{fields[0]}.jpg"), label))
        names.setdefault(label, " ".join(part.title() for part in fields[0].rsplit("_", 1)[0].split("_")))
    if not samples:
        raise LayoutError(f"{listing.name} lists no images", listing)
    _missing_files([path for path, _ in samples], f"images listed in {listing.name}", base / "images")
    return ListedImages(samples, [names.get(i, f"class {i + 1}") for i in range(37)], transform)


# ------------------------------------------------------------------------------------- Stanford Cars

CARS_FOLDER = "stanford_cars"
CARS_CLASSES = 196
# split -> (annotation file, image folder) under stanford_cars/, the files torchvision's StanfordCars reads
_CARS_SPLITS = {
    "train": ("devkit/cars_train_annos.mat", "cars_train"),
    "val": ("cars_test_annos_withlabels.mat", "cars_test"),
}


def check_cars(root: Path) -> None:
    base = root / CARS_FOLDER
    _require_files(base, ["cars_test_annos_withlabels.mat"], CARS_FOLDER)
    _require_files(base / "devkit", ["cars_meta.mat", "cars_train_annos.mat"], f"{CARS_FOLDER}/devkit")
    for _, folder in _CARS_SPLITS.values():
        _require_dir(base / folder, f"the {CARS_FOLDER}/{folder} image folder")


def _cars_sample(record: np.void, number: int, path: Path, images: Path) -> tuple[str, int]:
    """(image path, label 0..195) of annotation `number` (1-based) of `path`: its `fname` and `class` - 1."""
    fname, label = record["fname"], np.asarray(record["class"])
    if not isinstance(fname, str) or not fname:
        raise LayoutError(f"{path.name}: annotation {number} has fname {fname!r}, expected a file name", path)
    if (
        label.shape != ()
        or label.dtype.kind not in "iuf"
        or not 1 <= label <= CARS_CLASSES
        or label != int(label)
    ):
        raise LayoutError(
            f"{path.name}: annotation {number} ({fname}) has class {record['class']!r}, expected an integer "
            f"in 1..{CARS_CLASSES}",
            path,
        )
    return str(images / fname), int(label) - 1


def _cars_classes(path: Path) -> list[str]:
    names = _read_mat(path, ["class_names"])["class_names"]
    if len(names) != CARS_CLASSES or not all(isinstance(name, str) for name in names):
        raise LayoutError(
            f"{path.name}: 'class_names' must hold {CARS_CLASSES} strings, got {len(names)} entries of "
            f"dtype {names.dtype}",
            path,
        )
    return [str(name) for name in names]


def stanford_cars(root: Path, split: str, transform: Transform | None = None) -> ListedImages:
    """Stanford Cars, 196 classes, read as torchvision 0.29's StanfordCars reads it (its download URL is
    dead): "train" = the 8,144 annotations of devkit/cars_train_annos.mat over cars_train/, "val" = the 8,041
    of cars_test_annos_withlabels.mat over cars_test/ (the test set of Tab. 3). Each record of the
    `annotations` struct array names its image (`fname`) and its `class` 1..196; label = class - 1. Class
    names are devkit/cars_meta.mat's `class_names`."""
    base = root / CARS_FOLDER
    annotations, folder = _CARS_SPLITS[split]
    path = base / annotations
    records = _read_mat(path, ["annotations"])["annotations"]
    missing = [repr(field) for field in ("fname", "class") if field not in (records.dtype.names or ())]
    if missing:
        raise LayoutError(
            f"{path.name}: the 'annotations' entry is not a struct array with {' and '.join(missing)} fields",
            path,
        )
    samples = [_cars_sample(record, number, path, base / folder) for number, record in enumerate(records, 1)]
    _missing_files([image for image, _ in samples], f"{split} images listed in {path.name}", base / folder)
    return ListedImages(samples, _cars_classes(base / "devkit" / "cars_meta.mat"), transform)


# ----------------------------------------------------------------------------------------- DomainNet

DOMAINNET_DOMAINS = ("clipart", "painting", "sketch")  # the three domains of Tab. 3
DOMAINNET_CLASSES = 345
_DOMAINNET_LISTS = {"train": "train", "val": "test"}  # split -> the suffix of the official list


def domainnet_list(root: Path, domain: str, split: str) -> Path:
    return root / f"{domain}_{_DOMAINNET_LISTS[split]}.txt"


def check_domainnet(domain: str, root: Path) -> None:
    lists = [domainnet_list(root, domain, split).name for split in _DOMAINNET_LISTS]
    _require_files(root, lists, "DomainNet root")
    _require_dir(root / domain, f"the {domain} image folder")


def _domainnet_entries(listing: Path, domain: str) -> list[tuple[str, int]]:
    """(relative image path, label) of each line `<domain>/<class name>/<file> <label 0..344>` of a list."""
    entries = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        parts = fields[0].split("/")
        if (
            len(fields) != 2
            or len(parts) != 3
            or parts[0] != domain
            or not fields[1].isdecimal()
            or int(fields[1]) >= DOMAINNET_CLASSES
        ):
            raise LayoutError(
                f"{listing.name} line {number} is {line.strip()!r}, expected "
                f"'{domain}/<class name>/<file> <label 0..{DOMAINNET_CLASSES - 1}>'",
                listing,
            )
        entries.append((fields[0], int(fields[1])))
    if not entries:
        raise LayoutError(f"{listing.name} lists no images", listing)
    return entries


def _domainnet_classes(lists: dict[Path, list[tuple[str, int]]]) -> list[str]:
    """The class names by label, from the class folders of the listed paths of both lists (so that a class
    missing from one list, like t-shirt from painting_train.txt, is still named); each label must go with
    one class folder and each class folder with one label."""
    names: dict[int, str] = {}
    labels: dict[str, int] = {}
    for listing, entries in lists.items():
        for path, label in entries:
            name = path.split("/")[1]
            known_name, known_label = names.setdefault(label, name), labels.setdefault(name, label)
            clashes = [f"label {label} to class {known_name!r}"] if known_name != name else []
            clashes += [f"class {name!r} label {known_label}"] if known_label != label else []
            if clashes:
                raise LayoutError(
                    f"{listing.name}: {path} has label {label}, but the lists also give "
                    f"{' and '.join(clashes)}; labels and class folders must correspond one to one",
                    listing,
                )
    return [names.get(label, f"class {label}") for label in range(DOMAINNET_CLASSES)]


def domainnet(domain: str, root: Path, split: str, transform: Transform | None = None) -> ListedImages:
    """One domain of DomainNet (cleaned), 345 classes: "train" = `<domain>_train.txt`, "val" =
    `<domain>_test.txt` (the test set of Tab. 3), images at `root/<listed path>`. Labels are the lists'
    numbers, never the folders' order: painting_train.txt has no t-shirt (327) image, so labels counted from
    the train folders would shift every later class against the test split."""
    lists = {
        domainnet_list(root, domain, name): _domainnet_entries(domainnet_list(root, domain, name), domain)
        for name in _DOMAINNET_LISTS
    }
    classes = _domainnet_classes(lists)
    listing = domainnet_list(root, domain, split)
    samples = [(str(root / path), label) for path, label in lists[listing]]
    _missing_files([image for image, _ in samples], f"images listed in {listing.name}", root)
    return ListedImages(samples, classes, transform)


# ------------------------------------------------------------------------------------ ImageNet-A and -C


@cache
def _timm_list(filename: str) -> tuple[str, ...]:
    text = pkgutil.get_data("timm.data", f"_info/{filename}")
    if text is None:
        raise FileNotFoundError(f"timm.data has no _info/{filename}")
    return tuple(text.decode().split())


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in the order of the class indices (timm's `imagenet_synsets.txt`)."""
    return _timm_list("imagenet_synsets.txt")


def imagenet_a_wnids() -> tuple[str, ...]:
    """ImageNet-A's 200 wnids in its class order (timm's `imagenet_a_synsets.txt`, sorted, and equal to
    Hendrycks' `indices_in_1k` mapped to wnids): label i of the ImageNet-A set is the i-th wnid, and it is
    ImageNet-1k class `harness.eval.imagenet_a_indices()[i]`."""
    return _timm_list("imagenet_a_synsets.txt")


class WnidFolder(ImageFolder):
    """An ImageFolder over the given class folders, labelled 0.. in the given order, ignoring other
    folders; with `allow_empty`, classes without a folder or an image just hold no samples."""

    def __init__(
        self, root: Path, wnids: Sequence[str], transform: Transform | None, allow_empty: bool = False
    ):
        self._wnids = list(wnids)
        super().__init__(root, transform=transform, allow_empty=allow_empty)

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        return list(self._wnids), {wnid: i for i, wnid in enumerate(self._wnids)}


def check_imagenet_a(root: Path) -> None:
    _require_dir(root, "the ImageNet-A folder")
    present = class_folders(root)
    missing = [wnid for wnid in imagenet_a_wnids() if wnid not in present]
    if missing:
        raise LayoutError(
            f"{len(missing)} of its 200 class folders are missing (e.g. {', '.join(missing[:5])})", root
        )


def imagenet_a(root: Path, transform: Transform | None = None) -> WnidFolder:
    """ImageNet-A (7,500 images): labels 0..199 in `imagenet_a_wnids()` order, for evaluation only."""
    return WnidFolder(root, imagenet_a_wnids(), transform)


# The 15 corruptions of the mCE (noise, blur, weather, digital; the order of harness.eval.CORRUPTIONS) and
# the 4 held-out ones of the "extra" archive, which can be read too but are not part of the mCE.
IMAGENET_C_CORRUPTIONS = CORRUPTIONS
IMAGENET_C_EXTRA_CORRUPTIONS = EXTRA_CORRUPTIONS
IMAGENET_C_SEVERITIES = (1, 2, 3, 4, 5)


def imagenet_c_transform() -> T.Compose:
    """The evaluation transform of ImageNet-C: to-tensor and ImageNet mean/std only. Its images are already
    224 x 224, and resizing (Resize(256) + CenterCrop(224), as AugMix's `imagenet.py` does) would rescale
    them (docs/protocols.md section 3; Bai et al. use ToTensor + Normalize)."""
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _transform_steps(transform: Any) -> list[Any]:
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, Sequence):
        return [step for inner in steps for step in _transform_steps(inner)]
    return [transform]


def check_no_resize(transform: Transform | None) -> None:
    """Reject a transform that resizes or crops (any step whose class name holds "Resize" or "Crop", in a
    Compose or not): ImageNet-C must be evaluated at its own 224 x 224 pixels."""
    for step in _transform_steps(transform):
        kind = type(step).__name__
        if "Resize" in kind or "Crop" in kind:
            raise ValueError(
                f"ImageNet-C images are already 224 x 224 and must not be resized or cropped, but the "
                f"transform holds {step!r}; use harness.data.imagenet_c_transform() (to-tensor + normalise "
                "only)"
            )


def check_imagenet_c_corruption(corruption: str | None, severity: int | None) -> tuple[str, int]:
    known = IMAGENET_C_CORRUPTIONS + IMAGENET_C_EXTRA_CORRUPTIONS
    if corruption not in known:
        raise ValueError(f"imagenet_c needs corruption= one of {', '.join(known)}, got {corruption!r}")
    if isinstance(severity, bool) or severity not in IMAGENET_C_SEVERITIES:
        raise ValueError(f"imagenet_c needs severity= one of 1..5, got {severity!r}")
    return corruption, severity


def check_imagenet_c_split(root: Path, corruption: str, severity: int) -> None:
    directory = root / corruption / str(severity)
    _require_dir(directory, f"the {corruption}/{severity} folder")
    if not class_folders(directory):
        raise LayoutError(f"the {corruption}/{severity} folder holds no class folders", directory)


def check_imagenet_c(root: Path) -> None:
    """All 15 x 5 (corruption, severity) folders of the mCE exist and hold class folders."""
    _require_dir(root, "the ImageNet-C folder")
    missing = [c for c in IMAGENET_C_CORRUPTIONS if not (root / c).is_dir()]
    if missing:
        raise LayoutError(
            f"{len(missing)} of its 15 corruption folders are missing ({', '.join(missing)})", root
        )
    for corruption in IMAGENET_C_CORRUPTIONS:
        for severity in IMAGENET_C_SEVERITIES:
            check_imagenet_c_split(root, corruption, severity)


def imagenet_c(root: Path, corruption: str, severity: int, transform: Transform | None = None) -> WnidFolder:
    """One (corruption, severity) split of ImageNet-C, 50,000 images labelled by ImageNet-1k class index
    (`imagenet_wnids()` order), with `imagenet_c_transform()` unless another non-resizing one is given."""
    transform = imagenet_c_transform() if transform is None else transform
    check_no_resize(transform)
    return WnidFolder(root / corruption / str(severity), imagenet_wnids(), transform, allow_empty=True)


# ------------------------------------------------------------------------------------------ VOC 2012

VOC_FOLDER = "VOCdevkit/VOC2012"
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_VOID = 255
VOC_SIZE = (480, 480)  # SAR's evaluate_segmentation.py: Resize((480, 480)), patch 16 -> a 30 x 30 grid


def check_voc(root: Path) -> None:
    base = root / VOC_FOLDER
    _require_dir(base, f"the {VOC_FOLDER} folder")
    for folder in ("JPEGImages", "SegmentationClass"):
        _require_dir(base / folder, f"the {VOC_FOLDER}/{folder} folder")
    _require_files(base / "ImageSets" / "Segmentation", ["val.txt"], f"{VOC_FOLDER}/ImageSets/Segmentation")


class VOCSegmentationVal(VOCSegmentation):
    """PASCAL VOC 2012 segmentation val (1,449 images, ImageSets/Segmentation/val.txt) as SAR's
    `evaluate_segmentation.py` reads it (docs/protocols.md section 4): items are (image, label map), both
    resized to `size` (H, W) without keeping the aspect ratio, the image bilinearly (torchvision Resize's
    default there) and then passed through `transform` (default: to-tensor + ImageNet mean/std), the label
    map with nearest neighbour (PIL forces it on palette images) into an int64 [H, W] tensor of 0 background,
    1..20 classes and 255 void. `.images` / `.targets` are the JPEG / PNG paths (torchvision's names)."""

    classes: ClassVar[list[str]] = list(VOC_CLASSES)

    def __init__(
        self, root: Path, size: int | tuple[int, int] = VOC_SIZE, transform: Transform | None = None
    ):
        super().__init__(str(root), year="2012", image_set="val", download=False)
        height, width = (size, size) if isinstance(size, int) else size
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        self.size = (int(height), int(width))
        self.image_transform = (
            transform
            if transform is not None
            else T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        )
        base = root / VOC_FOLDER
        _missing_files(self.images, "images listed in val.txt", base / "JPEGImages")
        _missing_files(self.targets, "label maps listed in val.txt", base / "SegmentationClass")

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        height, width = self.size
        with Image.open(self.images[index]) as file:
            image = file.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        with Image.open(self.targets[index]) as file:
            if file.mode not in ("P", "L"):
                raise ValueError(
                    f"{self.targets[index]}: a VOC label map must be a palette (or grey) PNG of class "
                    f"indices, got mode {file.mode}"
                )
            target = file.resize((width, height), Image.Resampling.NEAREST)
        return self.image_transform(image), torch.from_numpy(np.array(target, dtype=np.int64))
