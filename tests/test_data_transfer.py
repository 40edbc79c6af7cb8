"""The transfer and robustness datasets of the registry (Stanford Cars, DomainNet, CIFAR-10/100,
Flowers102, Pets, ImageNet-A, ImageNet-C, VOC 2012) against tiny trees written under tmp_path in the real
on-disk layouts: lengths, labels, image shapes, and the errors that name what is missing and which config
key to set."""

import pickle
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from numpy.lib import recfunctions
from PIL import Image
from torchvision import transforms
from torchvision.datasets import StanfordCars

from harness.data import (
    DATASETS,
    EVALUATION_ONLY,
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA_CORRUPTIONS,
    OFFICIAL_SIZES,
    VOC_CLASSES,
    VOC_VOID,
    DatasetNotFoundError,
    LabeledSubset,
    VOCSegmentationVal,
    build_dataset,
    check_available,
    dataset_spec,
    imagenet_a_wnids,
    imagenet_c_transform,
    imagenet_wnids,
)
from harness.eval import imagenet_a_indices
from harness.eval.corruption import CORRUPTIONS, EXTRA_CORRUPTIONS

# The tiny trees are far smaller than the official splits; the size warning is tested once on its own.
pytestmark = [
    pytest.mark.filterwarnings("ignore:dataset .* split holds .* images, the official one:UserWarning"),
    pytest.mark.filterwarnings(
        "ignore:dataset 'imagenet_c' .* of the 1000 ImageNet class folders:UserWarning"
    ),
]

DOMAINNET = ("domainnet_clipart", "domainnet_painting", "domainnet_sketch")
NEW = (
    "stanford_cars",
    *DOMAINNET,
    "cifar10",
    "cifar100",
    "flowers102",
    "pets",
    "imagenet_a",
    "imagenet_c",
    "voc2012",
)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_image(path: Path, size: tuple[int, int] = (12, 10), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value % 256, 90, 160)).save(path)


# --------------------------------------------------------------------------------------------- CIFAR


def cifar_images(first: int, labels: list[int]) -> np.ndarray:
    """Image k (global index first + k): red plane = k, green = its label, blue = 7, in CIFAR's row
    layout [N, 3072] = R plane, G plane, B plane."""
    red = np.repeat(np.arange(first, first + len(labels), dtype=np.uint8)[:, None], 1024, axis=1)
    green = np.repeat(np.asarray(labels, dtype=np.uint8)[:, None], 1024, axis=1)
    return np.concatenate([red, green, np.full_like(red, 7)], axis=1)


def dump(path: Path, entry: dict, bytes_keys: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = lambda key: key.encode() if bytes_keys else key
    with open(path, "wb") as file:
        pickle.dump({encode(key): value for key, value in entry.items()}, file, protocol=2)


CIFAR10_TRAIN = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9, 9]]  # labels of data_batch_1..5
CIFAR100_TRAIN = [0, 99, 42, 7, 99, 0]


def write_cifar10(root: Path, bytes_keys: bool = True) -> Path:
    folder = root / "cifar-10-batches-py"
    first = 0
    for i, labels in enumerate(CIFAR10_TRAIN, 1):
        dump(folder / f"data_batch_{i}", {"data": cifar_images(first, labels), "labels": labels}, bytes_keys)
        first += len(labels)
    dump(folder / "test_batch", {"data": cifar_images(100, [3, 1]), "labels": [3, 1]}, bytes_keys)
    names = [name.encode() if bytes_keys else name for name in ("airplane", "automobile", *"abcdefgh")]
    dump(folder / "batches.meta", {"label_names": names}, bytes_keys)
    return root


def write_cifar100(root: Path, bytes_keys: bool = False) -> Path:
    folder = root / "cifar-100-python"
    coarse = [label // 5 for label in CIFAR100_TRAIN]
    train = {"data": cifar_images(0, CIFAR100_TRAIN), "fine_labels": CIFAR100_TRAIN, "coarse_labels": coarse}
    dump(folder / "train", train, bytes_keys)
    dump(
        folder / "test", {"data": cifar_images(50, [5]), "fine_labels": [5], "coarse_labels": [1]}, bytes_keys
    )
    names = [f"class{i}" for i in range(100)]
    dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]}, bytes_keys)
    return root


def test_registry_knows_the_new_datasets() -> None:
    assert set(NEW) <= set(DATASETS)
    assert [dataset_spec(n).num_classes for n in NEW] == [196, 345, 345, 345, 10, 100, 102, 37, 200, 1000, 21]
    assert EVALUATION_ONLY == {"imagenet_a", "imagenet_c", "voc2012"}  # Cars and DomainNet are trained on
    assert (
        OFFICIAL_SIZES["stanford_cars", "train"] == 8_144 and OFFICIAL_SIZES["stanford_cars", "val"] == 8_041
    )
    sizes = [(OFFICIAL_SIZES[name, "train"], OFFICIAL_SIZES[name, "val"]) for name in DOMAINNET]
    assert sizes == [(33_525, 14_604), (50_416, 21_850), (48_212, 20_916)]
    for name in NEW:
        spec = dataset_spec(name)
        assert spec.name == name and spec.description and spec.layout
    assert (
        "cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}"
        in DATASETS["cifar10"].layout
    )
    assert "<root>/<corruption>/<severity 1..5>/<wnid>/*.JPEG" in DATASETS["imagenet_c"].layout
    assert (
        "stanford_cars/{cars_train/*.jpg, cars_test/*.jpg, devkit/cars_meta.mat"
        in DATASETS["stanford_cars"].layout
    )
    assert (
        "<root>/sketch/<class name>/*.jpg with the official lists <root>/sketch_train.txt"
        in DATASETS["domainnet_sketch"].layout
    )


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar10_reads_the_python_batches(tmp_path: Path, bytes_keys: bool) -> None:
    write_cifar10(tmp_path, bytes_keys)
    train = build_dataset("cifar10", "train", tmp_path)
    assert len(train) == 11
    assert train.targets == [label for batch in CIFAR10_TRAIN for label in batch]  # batches 1..5 in order
    assert train.classes[:2] == ["airplane", "automobile"] and len(train.classes) == 10
    image, label = train[10]
    assert image.size == (32, 32) and image.mode == "RGB"
    assert image.getpixel((5, 31)) == (10, 9, 7) and label == 9  # planes -> HWC, last image of batch 5
    val = build_dataset("cifar10", "val", tmp_path, transforms.ToTensor())
    assert len(val) == 2 and val.targets == [3, 1]
    tensor, label = val[1]
    assert tensor.shape == (3, 32, 32) and label == 1
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([101, 1, 7]) / 255)


def test_cifar100_uses_fine_labels_and_fraction(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    train = build_dataset("cifar100", "train", tmp_path)
    assert train.targets == CIFAR100_TRAIN and len(train.classes) == 100 and train.classes[99] == "class99"
    assert build_dataset("cifar100", "val", tmp_path, fraction=0.5).targets == [5]  # val is never cut
    half = build_dataset("cifar100", "train", tmp_path, fraction=0.5, fraction_seed=1)
    assert isinstance(half, LabeledSubset) and sorted(half.targets) == [0, 7, 42, 99]


def test_cifar_missing_and_malformed_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_3") as error:
        check_available("cifar10", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data.root=" in message
    assert DATASETS["cifar10"].layout in message

    dump(
        tmp_path / "cifar-10-batches-py" / "data_batch_3",
        {"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]},
        True,
    )
    check_available("cifar10", tmp_path)  # only the files' presence is checked here
    with pytest.raises(DatasetNotFoundError, match=re.escape("'data' must be uint8 [N, 3072]")):
        build_dataset("cifar10", "train", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetNotFoundError, match="data_batch_3 is not a readable pickle"):
        build_dataset("cifar10", "train", tmp_path)

    write_cifar100(tmp_path)
    dump(tmp_path / "cifar-100-python" / "test", {"data": cifar_images(0, [1]), "labels": [1]}, False)
    with pytest.raises(DatasetNotFoundError, match="no 'data' and 'fine_labels'"):
        build_dataset("cifar100", "val", tmp_path)


# ---------------------------------------------------------------------------------------- Flowers102

FLOWER_LABELS = [1, 102, 5, 1, 102, 50, 3, 4, 7, 8, 9, 10]  # imagelabels.mat, image ids 1..12


def write_flowers(root: Path) -> Path:
    base = root / "flowers-102"
    for i in range(1, len(FLOWER_LABELS) + 1):
        write_image(base / "jpg" / f"image_{i:05d}.jpg", (20 + i, 16), i)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS], dtype=np.uint8)})
    setid = {"trnid": [[3, 1]], "valid": [[2, 5]], "tstid": [[4, 6, 7, 8, 9, 10, 11, 12]]}
    scipy.io.savemat(base / "setid.mat", {key: np.array(ids, dtype=np.uint16) for key, ids in setid.items()})
    return root


def test_flowers_trains_on_train_plus_val_and_shifts_labels(tmp_path: Path) -> None:
    write_flowers(tmp_path)
    train = build_dataset("flowers102", "train", tmp_path)
    assert len(train) == 4  # trnid followed by valid
    assert [Path(path).name for path, _ in train.samples] == [
        "image_00003.jpg",
        "image_00001.jpg",
        "image_00002.jpg",
        "image_00005.jpg",
    ]
    assert train.targets == [4, 0, 101, 101]  # imagelabels 1..102 -> 0..101
    assert len(train.classes) == 102 and train.classes[0] == "pink primrose"
    image, label = train[2]
    assert image.size == (22, 16) and image.mode == "RGB" and label == 101
    val = build_dataset("flowers102", "val", tmp_path, transforms.ToTensor())
    assert len(val) == 8 and val.targets == [FLOWER_LABELS[i - 1] - 1 for i in (4, *range(6, 13))]
    assert val[0][0].shape == (3, 16, 24)


def test_flowers_missing_and_malformed(tmp_path: Path) -> None:
    write_flowers(tmp_path)
    (tmp_path / "flowers-102" / "jpg" / "image_00011.jpg").unlink()
    build_dataset("flowers102", "train", tmp_path)  # image 11 is a test image
    with pytest.raises(
        DatasetNotFoundError, match=r"1 of the 8 val images .* missing \(e.g. image_00011.jpg\)"
    ):
        build_dataset("flowers102", "val", tmp_path)
    scipy.io.savemat(tmp_path / "flowers-102" / "setid.mat", {"trnid": [[1]], "valid": [[2]]})
    with pytest.raises(DatasetNotFoundError, match=re.escape("setid.mat has no tstid entry")):
        build_dataset("flowers102", "train", tmp_path)
    (tmp_path / "flowers-102" / "setid.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape("folder lacks setid.mat")) as error:
        check_available("flowers102", tmp_path, config_key="data.flowers_root")
    assert "data.flowers_root=" in str(error.value) and "flowers-102/{jpg/image_00001.jpg" in str(error.value)


# ---------------------------------------------------------------------------------------------- Pets

PETS_TRAINVAL = ["Abyssinian_1 1 1 1", "american_bulldog_10 2 2 1", "yorkshire_terrier_5 37 2 25"]
PETS_TEST = ["Abyssinian_2 1 1 1", "great_pyrenees_3 19 2 10"]


def write_pets(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    for line in PETS_TRAINVAL + PETS_TEST:
        write_image(base / "images" / f"{line.split()[0]}.jpg", (15, 11))
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "trainval.txt").write_text("\n".join(PETS_TRAINVAL) + "\n")
    (base / "annotations" / "test.txt").write_text(
        "#Image CLASS-ID SPECIES BREED ID\n" + "\n".join(PETS_TEST)
    )
    return root


def test_pets_reads_trainval_and_test(tmp_path: Path) -> None:
    write_pets(tmp_path)
    train = build_dataset("pets", "train", tmp_path)
    assert len(train) == 3 and train.targets == [0, 1, 36]
    assert len(train.classes) == 37
    assert (train.classes[0], train.classes[1], train.classes[36]) == (
        "Abyssinian",
        "American Bulldog",
        "Yorkshire Terrier",
    )
    image, label = train[1]
    assert image.size == (15, 11) and label == 1
    val = build_dataset("pets", "val", tmp_path, transforms.ToTensor())
    assert len(val) == 2 and val.targets == [0, 18] and val[1][0].shape == (3, 11, 15)


def test_pets_missing_and_malformed(tmp_path: Path) -> None:
    write_pets(tmp_path)
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape("annotations folder lacks test.txt")) as error:
        check_available("pets", tmp_path)
    assert "oxford-iiit-pet/{images/*.jpg, annotations/trainval.txt" in str(error.value)
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").write_text("Abyssinian_2 38 1 1\n")
    with pytest.raises(DatasetNotFoundError, match=re.escape("test.txt line 1 is not")):
        build_dataset("pets", "val", tmp_path)


# ------------------------------------------------------------------------------------- Stanford Cars

CARS_TRAIN = [("00001.jpg", 1), ("00002.jpg", 196), ("00003.jpg", 42)]  # (fname, class 1..196)
CARS_TEST = [("00001.jpg", 196), ("00002.jpg", 7)]  # the same file names as train, in cars_test/
CARS_NAMES = ["AM General Hummer SUV 2000", *(f"Make {i} Sedan 2012" for i in range(2, 197))]


def cars_annotations(records: list[tuple[str, int]], class_type: type = np.uint8) -> np.ndarray:
    """The 'annotations' struct array of the Cars .mat files: bbox_x1..bbox_y2, class, fname per image."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    array = np.zeros(len(records), dtype=[(field, "O") for field in fields])
    for i, (fname, label) in enumerate(records):
        array[i] = (np.uint16(3), np.uint16(4), np.uint16(50), np.uint16(40), class_type(label), fname)
    return array


def write_cars(root: Path) -> Path:
    base = root / "stanford_cars"
    for i, (fname, _) in enumerate(CARS_TRAIN):
        write_image(base / "cars_train" / fname, (30 + i, 20), i)
    for i, (fname, _) in enumerate(CARS_TEST):
        write_image(base / "cars_test" / fname, (17, 25 + i), i)
    (base / "devkit").mkdir()
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": cars_annotations(CARS_TRAIN)})
    scipy.io.savemat(
        base / "cars_test_annos_withlabels.mat", {"annotations": cars_annotations(CARS_TEST, np.float64)}
    )
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(CARS_NAMES, dtype=object)})
    return root


def test_cars_reads_torchvisions_layout(tmp_path: Path) -> None:
    write_cars(tmp_path)
    train = build_dataset("stanford_cars", "train", tmp_path)
    assert len(train) == 3 and train.targets == [0, 195, 41]  # class 1..196 -> 0..195
    assert train.classes == CARS_NAMES
    image, label = train[1]
    assert image.size == (31, 20) and image.mode == "RGB" and label == 195
    val = build_dataset("stanford_cars", "val", tmp_path, transforms.ToTensor())
    assert len(val) == 2 and val.targets == [195, 6] and val.classes == CARS_NAMES
    assert val[1][0].shape == (3, 26, 17)  # from cars_test/, not the cars_train/ file of the same name
    for split, torchvision_split in (("train", "train"), ("val", "test")):
        reference = StanfordCars(tmp_path, split=torchvision_split)  # it reads the same files the same way
        ours = build_dataset("stanford_cars", split, tmp_path)
        assert ours.samples == [(path, int(label)) for path, label in reference._samples]
        assert ours.classes == reference.classes
    half = build_dataset("stanford_cars", "train", tmp_path, fraction=0.5)
    assert isinstance(half, LabeledSubset) and len(half) == 3  # one image per class is kept


def test_cars_reads_a_file_of_one_annotation(tmp_path: Path) -> None:
    write_cars(tmp_path)
    one = {"annotations": cars_annotations(CARS_TRAIN[1:2])}  # squeeze_me makes it a 0-d struct
    scipy.io.savemat(tmp_path / "stanford_cars" / "devkit" / "cars_train_annos.mat", one)
    train = build_dataset("stanford_cars", "train", tmp_path)
    assert [(Path(path).name, label) for path, label in train.samples] == [("00002.jpg", 195)]


def test_cars_missing_and_malformed(tmp_path: Path) -> None:
    write_cars(tmp_path)
    base = tmp_path / "stanford_cars"
    (base / "cars_train" / "00002.jpg").unlink()
    with pytest.raises(
        DatasetNotFoundError,
        match=re.escape(
            "1 of the 3 train images listed in cars_train_annos.mat are missing (e.g. 00002.jpg)"
        ),
    ):
        build_dataset("stanford_cars", "train", tmp_path)
    write_cars(tmp_path / "again")
    base = tmp_path / "again" / "stanford_cars"
    scipy.io.savemat(
        base / "cars_test_annos_withlabels.mat", {"annotations": cars_annotations([("a.jpg", 0)])}
    )
    with pytest.raises(DatasetNotFoundError, match=re.escape("annotation 1 (a.jpg) has class 0, expected")):
        build_dataset("stanford_cars", "val", tmp_path / "again")
    unlabelled = recfunctions.drop_fields(cars_annotations(CARS_TEST), "class", usemask=False)
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": unlabelled})  # cars_test_annos
    with pytest.raises(DatasetNotFoundError, match="not a struct array with 'class' fields"):
        build_dataset("stanford_cars", "val", tmp_path / "again")
    scipy.io.savemat(
        base / "devkit" / "cars_meta.mat", {"class_names": np.array(CARS_NAMES[:-1], dtype=object)}
    )
    with pytest.raises(DatasetNotFoundError, match="'class_names' must hold 196 strings, got 195"):
        build_dataset("stanford_cars", "train", tmp_path / "again")

    (base / "cars_test_annos_withlabels.mat").rename(base / "cars_test_annos.mat")
    with pytest.raises(
        DatasetNotFoundError, match=re.escape("stanford_cars folder lacks cars_test_annos_withlabels.mat")
    ) as error:
        check_available("stanford_cars", tmp_path / "again", config_key="data.cars_root")
    message = str(error.value)
    assert str(base) in message and "data.cars_root=/path/to/the/folder/holding/stanford_cars" in message
    assert DATASETS["stanford_cars"].layout in message
    (base / "cars_test_annos.mat").rename(base / "cars_test_annos_withlabels.mat")
    (base / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(
        DatasetNotFoundError, match=re.escape("stanford_cars/devkit folder lacks cars_meta.mat")
    ):
        check_available("stanford_cars", tmp_path / "again")
    write_cars(tmp_path / "third")
    for image in (tmp_path / "third" / "stanford_cars" / "cars_test").iterdir():
        image.unlink()
    (tmp_path / "third" / "stanford_cars" / "cars_test").rmdir()
    with pytest.raises(DatasetNotFoundError, match="the stanford_cars/cars_test image folder does not exist"):
        check_available("stanford_cars", tmp_path / "third")


# ----------------------------------------------------------------------------------------- DomainNet

# label -> class folder: t-shirt is 327 and has no image in the official painting_train.txt; the other
# names only surround it
DOMAINNET_CLASSES = {
    0: "aircraft_carrier",
    1: "airplane",
    326: "syringe",
    327: "t-shirt",
    328: "table",
    344: "zigzag",
}


def domainnet_lines(domain: str, labels: list[int], first: int = 0) -> list[str]:
    """List lines `<domain>/<class>/<domain>_<label + 1:03d>_<k:06d>.jpg <label>`, the official naming."""
    return [
        f"{domain}/{DOMAINNET_CLASSES[label]}/{domain}_{label + 1:03d}_{first + k:06d}.jpg {label}"
        for k, label in enumerate(labels)
    ]


PAINTING_TRAIN = [0, 1, 1, 326, 328, 344]
PAINTING_TEST = [0, 326, 327, 328, 344]


def write_domainnet(root: Path, domain: str, train: list[int], test: list[int]) -> Path:
    lines = {"train": domainnet_lines(domain, train), "test": domainnet_lines(domain, test, len(train))}
    for split, listed in lines.items():
        for k, line in enumerate(listed):
            write_image(root / line.split()[0], (20 + k, 14 + len(split)), k)
        (root / f"{domain}_{split}.txt").write_text("\n".join(listed) + "\n")
    write_image(root / domain / "airplane" / "unlisted.jpg")  # in no list: not read
    return root


def test_domainnet_labels_come_from_the_lists(tmp_path: Path) -> None:
    write_domainnet(tmp_path, "painting", PAINTING_TRAIN, PAINTING_TEST)
    train = build_dataset("domainnet_painting", "train", tmp_path)
    val = build_dataset("domainnet_painting", "val", tmp_path, transforms.ToTensor())
    assert train.targets == PAINTING_TRAIN and val.targets == PAINTING_TEST
    assert len(train.classes) == len(val.classes) == 345 and train.classes == val.classes
    assert 327 not in train.targets and train.classes[327] == "t-shirt"  # named from the test list
    table = [[label for path, label in split.samples if "/table/" in path] for split in (train, val)]
    assert table == [[328], [328]]  # not 327, where numbering train's class folders would put it
    for dataset in (train, val):  # each image keeps its class's label in both splits
        for path, label in dataset.samples:
            assert dataset.classes[label] == Path(path).parent.name
            assert Path(path).name.startswith(f"painting_{label + 1:03d}_")
    image, label = train[4]
    assert image.size == (24, 19) and label == 328
    assert val[2][0].shape == (3, 18, 22) and val[2][1] == 327
    assert all("unlisted" not in path for path, _ in train.samples + val.samples)
    half = build_dataset("domainnet_painting", "train", tmp_path, fraction=0.5)
    assert sorted(half.targets) == [0, 1, 326, 328, 344]  # stratified over the listed labels


def test_domainnet_domains_are_separate_datasets(tmp_path: Path) -> None:
    write_domainnet(tmp_path, "clipart", [0, 327], [1])
    write_domainnet(tmp_path, "sketch", [344], [0, 344])
    assert build_dataset("domainnet_clipart", "train", tmp_path).targets == [0, 327]
    sketch = build_dataset("domainnet_sketch", "val", tmp_path)
    assert sketch.targets == [0, 344] and all("/sketch/" in path for path, _ in sketch.samples)
    with pytest.raises(
        DatasetNotFoundError, match=re.escape("the DomainNet root folder lacks painting_train.txt")
    ) as error:
        check_available("domainnet_painting", tmp_path, config_key="data.root")
    message = str(error.value)
    assert str(tmp_path) in message and "data.root=/path/to/domainnet" in message
    assert "<root>/painting_test.txt (lines 'painting/<class name>/<file>.jpg <label 0..344>'" in message


def test_domainnet_missing_and_malformed(tmp_path: Path) -> None:
    write_domainnet(tmp_path, "painting", PAINTING_TRAIN, PAINTING_TEST)
    build_dataset("domainnet_painting", "train", tmp_path)
    for line in domainnet_lines("painting", PAINTING_TEST, len(PAINTING_TRAIN))[1:3]:
        (tmp_path / line.split()[0]).unlink()
    with pytest.raises(
        DatasetNotFoundError,
        match=re.escape(
            "2 of the 5 images listed in painting_test.txt are missing (e.g. "
            "painting/syringe/painting_327_000007.jpg, painting/t-shirt/painting_328_000008.jpg)"
        ),
    ):
        build_dataset("domainnet_painting", "val", tmp_path)
    listing = tmp_path / "painting_train.txt"
    good = listing.read_text()
    for bad in ("painting/airplane/x.jpg 345", "clipart/airplane/x.jpg 1", "painting/x.jpg 1", "a.jpg"):
        listing.write_text(good + bad + "\n")
        with pytest.raises(DatasetNotFoundError, match=re.escape(f"painting_train.txt line 7 is {bad!r}")):
            build_dataset("domainnet_painting", "train", tmp_path)
    listing.write_text(good + "painting/table/x.jpg 329\n")  # table is 328 elsewhere
    with pytest.raises(DatasetNotFoundError, match="must correspond one to one") as error:
        build_dataset("domainnet_painting", "val", tmp_path)  # the train list is read for the class names
    assert "painting/table/x.jpg has label 329" in str(error.value)
    assert "also give class 'table' label 328;" in str(error.value)
    listing.write_text(good + "painting/desk/x.jpg 328\n")  # 328 is table elsewhere
    with pytest.raises(DatasetNotFoundError, match="give label 328 to class 'table'"):
        build_dataset("domainnet_painting", "train", tmp_path)
    listing.write_text("\n")
    with pytest.raises(DatasetNotFoundError, match=re.escape("painting_train.txt lists no images")):
        build_dataset("domainnet_painting", "train", tmp_path)
    (tmp_path / "painting").rename(tmp_path / "paintings")
    with pytest.raises(DatasetNotFoundError, match="the painting image folder does not exist"):
        check_available("domainnet_painting", tmp_path)


# ---------------------------------------------------------------------------------------- ImageNet-A


@pytest.fixture(scope="module")
def imagenet_a_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet-a")
    for i, wnid in enumerate(imagenet_a_wnids()):
        for k in range(1 + (i == 199)):
            write_image(root / wnid / f"{i}_{k}.jpg", (9, 7), i)
    write_image(root / "n01440764" / "not_in_a.jpg")  # an ImageNet class outside ImageNet-A: ignored
    (root / "README.txt").write_text("ImageNet-A")
    return root


def test_imagenet_a_class_order_is_timms(imagenet_a_root: Path) -> None:
    listed = pkgutil.get_data("timm.data", "_info/imagenet_a_synsets.txt").decode().split()
    assert list(imagenet_a_wnids()) == listed and len(listed) == 200
    assert listed[0] == "n01498041"
    # label i is ImageNet-1k class imagenet_a_indices()[i], the logits harness.eval keeps
    assert [imagenet_wnids()[index] for index in imagenet_a_indices()] == listed
    dataset = build_dataset("imagenet_a", "val", imagenet_a_root, transforms.ToTensor())
    assert len(dataset) == 201 and dataset.classes == listed
    assert dataset.targets == [*range(200), 199]
    for path, label in dataset.samples:
        assert Path(path).parent.name == listed[label]
    image, label = dataset[37]
    assert image.shape == (3, 7, 9) and label == 37
    with pytest.raises(ValueError, match="evaluation only"):
        build_dataset("imagenet_a", "train", imagenet_a_root)


def test_imagenet_a_names_missing_classes(tmp_path: Path) -> None:
    wnids = imagenet_a_wnids()
    for wnid in wnids[:-2]:
        (tmp_path / wnid).mkdir()
    with pytest.raises(DatasetNotFoundError, match="2 of its 200 class folders are missing") as error:
        check_available("imagenet_a", tmp_path, config_key="eval.imagenet_a_root")
    message = str(error.value)
    assert wnids[-1] in message and wnids[-2] in message and "eval.imagenet_a_root=" in message
    assert "<root>/<wnid>/*.jpg" in message
    for wnid in wnids[-2:]:
        (tmp_path / wnid).mkdir()
    check_available("imagenet_a", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no valid file"):  # class folders without images
        build_dataset("imagenet_a", "val", tmp_path)


# ---------------------------------------------------------------------------------------- ImageNet-C

C_WNIDS = ("n01440764", "n15075141")  # ImageNet classes 0 and 999


@pytest.fixture(scope="module")
def imagenet_c_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet-c")
    for corruption in (*IMAGENET_C_CORRUPTIONS, "speckle_noise"):
        for severity in range(1, 6):
            for k, wnid in enumerate(C_WNIDS):
                size = (224, 224) if (corruption, severity) == ("fog", 3) else (40, 30)
                write_image(root / corruption / str(severity) / wnid / f"{k}.JPEG", size, 10 * severity + k)
    return root


def test_imagenet_c_corruption_lists_match_the_metric() -> None:
    assert IMAGENET_C_CORRUPTIONS == CORRUPTIONS and len(CORRUPTIONS) == 15
    assert IMAGENET_C_EXTRA_CORRUPTIONS == EXTRA_CORRUPTIONS


def test_imagenet_c_split_is_not_resized(imagenet_c_root: Path) -> None:
    check_available("imagenet_c", imagenet_c_root)
    fog = build_dataset("imagenet_c", "val", imagenet_c_root, corruption="fog", severity=3)
    assert len(fog) == 2 and fog.targets == [0, 999] and len(fog.classes) == 1000
    assert fog.classes == list(imagenet_wnids())
    tensor, label = fog[1]
    assert tensor.shape == (3, 224, 224) and label == 999
    with Image.open(fog.samples[1][0]) as file:
        expected = transforms.Normalize(MEAN, STD)(transforms.ToTensor()(file.convert("RGB")))
    assert torch.allclose(tensor, expected)  # to-tensor + normalise, nothing else
    small = build_dataset("imagenet_c", "val", imagenet_c_root, corruption="gaussian_noise", severity=5)
    assert small[0][0].shape == (3, 30, 40)  # a 40 x 30 file stays 40 x 30: no resize, no crop
    assert [t.__class__.__name__ for t in imagenet_c_transform().transforms] == ["ToTensor", "Normalize"]
    extra = build_dataset("imagenet_c", "val", imagenet_c_root, corruption="speckle_noise", severity=1)
    assert extra.targets == [0, 999]


def test_imagenet_c_refuses_resizing_transforms_and_bad_splits(imagenet_c_root: Path) -> None:
    evaluation = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    for transform in (evaluation, transforms.CenterCrop(224), transforms.RandomResizedCrop(224)):
        with pytest.raises(ValueError, match="must not be resized or cropped"):
            build_dataset("imagenet_c", "val", imagenet_c_root, transform, corruption="fog", severity=1)
    build_dataset("imagenet_c", "val", imagenet_c_root, transforms.ToTensor(), corruption="fog", severity=1)
    with pytest.raises(ValueError, match="corruption= one of gaussian_noise"):
        build_dataset("imagenet_c", "val", imagenet_c_root)
    with pytest.raises(ValueError, match=re.escape("severity= one of 1..5, got 6")):
        build_dataset("imagenet_c", "val", imagenet_c_root, corruption="fog", severity=6)
    with pytest.raises(ValueError, match="evaluation only"):
        build_dataset("imagenet_c", "train", imagenet_c_root, corruption="fog", severity=1)
    with pytest.raises(ValueError, match="for imagenet_c only"):
        build_dataset("cifar10", "val", imagenet_c_root, corruption="fog", severity=1)


def test_imagenet_c_names_missing_folders(tmp_path: Path) -> None:
    for corruption in IMAGENET_C_CORRUPTIONS:
        for severity in range(1, 6):
            if (corruption, severity) != ("frost", 4):
                write_image(tmp_path / corruption / str(severity) / C_WNIDS[0] / "a.JPEG")
    (tmp_path / "frost" / "4").mkdir()
    with pytest.raises(DatasetNotFoundError, match="the frost/4 folder holds no class folders") as error:
        check_available("imagenet_c", tmp_path, config_key="eval.imagenet_c_root")
    assert "eval.imagenet_c_root=" in str(error.value) and str(tmp_path / "frost" / "4") in str(error.value)
    assert "<root>/<corruption>/<severity 1..5>/<wnid>/*.JPEG" in str(error.value)
    build_dataset("imagenet_c", "val", tmp_path, corruption="frost", severity=3)  # only its split is checked
    with pytest.raises(DatasetNotFoundError, match="frost/4 folder holds no class folders"):
        build_dataset("imagenet_c", "val", tmp_path, corruption="frost", severity=4)
    (tmp_path / "frost" / "4").rmdir()
    (tmp_path / "frost").rename(tmp_path / "frost_")
    with pytest.raises(DatasetNotFoundError, match=r"1 of its 15 corruption folders are missing \(frost\)"):
        check_available("imagenet_c", tmp_path)


# ------------------------------------------------------------------------------------------ VOC 2012

VOC_IDS = ("2007_000032", "2007_000033")


def label_map(height: int, width: int, shift: int) -> np.ndarray:
    """Vertical stripes of background, classes 1..20 and a void border of 255."""
    labels = np.zeros((height, width), np.uint8)
    for j in range(width):
        labels[:, j] = (j // 4 + shift) % 21
    labels[:2], labels[-2:], labels[:, :2], labels[:, -2:] = VOC_VOID, VOC_VOID, VOC_VOID, VOC_VOID
    return labels


def write_voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    palette = list(np.random.default_rng(0).integers(0, 256, 768))
    for k, name in enumerate((*VOC_IDS, "2007_000039")):
        height, width = 40 + 8 * k, 90 - 4 * k
        write_image(base / "JPEGImages" / f"{name}.jpg", (width, height), 40 * k)
        target = Image.fromarray(label_map(height, width, 5 * k), mode="L").convert("P")
        target.putpalette(palette)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        target.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VOC_IDS) + "\n")
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000039\n")
    return root


def test_voc_resizes_image_and_labels_alike(tmp_path: Path) -> None:
    write_voc(tmp_path)
    val = build_dataset("voc2012", "val", tmp_path)
    assert isinstance(val, VOCSegmentationVal) and len(val) == 2  # val.txt only
    assert val.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 21
    for index, name in enumerate(VOC_IDS):
        image, labels = val[index]
        assert image.shape == (3, 480, 480) and labels.shape == (480, 480) and labels.dtype == torch.int64
        original = label_map(40 + 8 * index, 90 - 4 * index, 5 * index)
        assert set(labels.unique().tolist()) == set(np.unique(original).tolist())  # no blended labels
        assert {0, 20, VOC_VOID} <= set(labels.unique().tolist())
        with Image.open(tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"{name}.png") as file:
            nearest = np.array(file.resize((480, 480), Image.Resampling.NEAREST))
        assert np.array_equal(labels.numpy(), nearest)
        with Image.open(tmp_path / "VOCdevkit/VOC2012/JPEGImages" / f"{name}.jpg") as file:
            resized = file.convert("RGB").resize((480, 480), Image.Resampling.BILINEAR)
        assert torch.allclose(image, transforms.Normalize(MEAN, STD)(transforms.ToTensor()(resized)))
    image, labels = build_dataset("voc2012", "val", tmp_path, transforms.ToTensor(), size=(64, 96))[1]
    assert image.shape == (3, 64, 96) and labels.shape == (64, 96) and image.min() >= 0
    assert build_dataset("voc2012", "val", tmp_path, size=32)[0][1].shape == (32, 32)
    with pytest.raises(ValueError, match="evaluation only"):
        build_dataset("voc2012", "train", tmp_path)
    with pytest.raises(ValueError, match="size= is for voc2012 only"):
        build_dataset("pets", "val", tmp_path, size=480)


def test_voc_missing_and_malformed(tmp_path: Path) -> None:
    write_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    Image.new("RGB", (9, 9)).save(base / "SegmentationClass" / f"{VOC_IDS[1]}.png")  # a colour-coded map
    with pytest.raises(ValueError, match="palette"):
        build_dataset("voc2012", "val", tmp_path)[1]
    (base / "JPEGImages" / f"{VOC_IDS[0]}.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 of the 2 images listed in val.txt are missing"):
        build_dataset("voc2012", "val", tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape("lacks val.txt")) as error:
        check_available("voc2012", tmp_path)
    assert "VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png" in str(error.value)
    with pytest.raises(DatasetNotFoundError, match="VOCdevkit/VOC2012 folder does not exist") as error:
        check_available("voc2012", base)  # the root is the folder that holds VOCdevkit
    assert "data.root=/path/to/the/folder/holding/VOCdevkit" in str(error.value)


# ------------------------------------------------------------------------------------ all of them


@pytest.mark.parametrize("name", NEW)
def test_check_available_names_key_and_layout(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        check_available(name, None)
    message = str(error.value)
    assert repr(name) in message and "no dataset root" in message and "data.root=" in message
    assert DATASETS[name].layout in message and "scale=local" in message
    with pytest.raises(DatasetNotFoundError) as error:
        check_available(name, tmp_path / "nowhere", config_key="eval.root")
    message = str(error.value)
    assert repr(name) in message and "eval.root=" in message and "data.root" not in message
    assert str(tmp_path / "nowhere") in message and DATASETS[name].layout in message
    split = {"corruption": "fog", "severity": 1} if name == "imagenet_c" else {}
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_dataset(name, "val", tmp_path / "nowhere", **split)


def test_sizes_unlike_the_official_ones_are_warned_about(tmp_path: Path) -> None:
    write_pets(tmp_path)
    with pytest.warns(UserWarning, match="'pets': the train split holds 3 images, the official one 3680"):
        build_dataset("pets", "train", tmp_path)
