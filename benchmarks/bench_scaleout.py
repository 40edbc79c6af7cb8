"""What a training run costs beyond its model: a second process, and the CPU work of ImageNet's pipeline.

1. training: the local ViT-S/16 member (Tab. 2's `vit-s` row at `scale=local`: its model, its batch of 64
   split over the processes as the harness splits it, its loss and fused AdamW step through
   `harness.core.steps.optimizer_step`) on random images, in 1 process and in 2 (DDP over gloo), timed in
   blocks round-robin in one spawned pair of processes (one process alone while the other waits), so that
   a shared machine's drifts hit all alike: images/s and the ratio 2 / 1 at equal threads per process,
   and images per CPU-second of the processes that ran (less sensitive to the machine's other load).
   Each count runs with torch's default threads per process (as `launcher=inline` and
   `launcher=local resources.tasks_per_node=2` run them: two processes oversubscribe the cores) and with
   half the cores each. The gradient sync two ways: the 2-process step against the same step under DDP's
   `no_sync`, and an all-reduce of a buffer the size of the gradients alone. Data loading is left out.
2. data: ImageNet's training pipeline on one core (`torch.set_num_threads(1)`, as in a loader worker):
   JPEGs of ImageNet's typical size (500x375 and 375x500, 1/f-spectrum content at quality 90: about
   113 KB, where ImageNet's training archive holds 138 GB for 1,281,167 images, 108 KB each) generated
   into a temporary ImageNet layout, read through the harness's own dataset and training transform
   (`harness.core.data.datasets` for Tab. 2's ViT-S/16 row at paper scale: DeiT's RandomResizedCrop 224,
   flip, RandAugment rand-m9-mstd0.5-inc1, normalise, random erasing 0.25) and per-sample seeding
   (`SeededDataset`): images per CPU-second (what a core of its own gives), the decode alone, and images
   per wall second. Files are read from the page cache; storage, collation and the copy to the GPU are
   not counted: the cost is a floor.
3. workers: the loader workers (cores) one GPU needs, its ViT-S/16 training images/s over the per-core
   rate, where `python -m benchmarks gpu` has left a result from a GPU in bench-results/; none otherwise.
"""

import json
import math
import os
import statistics
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import DictConfig, OmegaConf
from PIL import Image

RECIPE, ROW = "table2", "vit-s"
JPEG_QUALITY = 90
SPECTRUM_SLOPE = 1.0  # amplitude ~ 1/f: natural images' spectrum
GPU_RESULTS = Path("bench-results")  # where `python -m benchmarks gpu` writes gpu.json by default


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run; `batch` None is the recipe's local batch."""

    batch: int | None = None
    warmup_steps: int = 1
    steps_per_block: int = 4
    blocks: int = 3
    allreduce_repeats: int = 20
    jpegs: int = 64
    jpeg_size: tuple[int, int] = (375, 500)  # height, width; every other image is portrait
    data_seconds: float = 10.0  # the pipeline runs over the JPEGs until this much time has passed


FULL = Plan()
QUICK = Plan(warmup_steps=1, steps_per_block=2, blocks=1, allreduce_repeats=3, jpegs=8, data_seconds=1.0)


def _load(overrides: list[str]) -> DictConfig:
    """The config of Tab. 2's ViT-S/16 baseline row (its first seed's: the seeds share everything timed)."""
    from harness.config import RECIPES_DIR
    from harness.recipe import load_recipe

    _, runs = load_recipe(RECIPES_DIR / f"{RECIPE}.yaml", overrides)
    return next(r for r in runs if ROW in r.rows).config


# ---------------------------------------------------------------------------------------------------------
# 1. training


def _train_step(cfg: DictConfig, rank: int, size: int):
    """(the harness's supervised step on one fixed random batch of this process's share, the module called
    (in DDP when `size` > 1), the gradient elements DDP sums)."""
    from harness.core.data import criterion, mixup, num_classes, per_process_batch
    from harness.core.model import aux_loss, build_model, for_training
    from harness.core.precision import Precision
    from harness.core.steps import adamw, optimizer_step
    from harness.distributed import World

    world = World(rank, rank, size)
    torch.manual_seed(0)
    classes = num_classes(cfg)
    training, net = for_training(build_model(cfg, classes, world.device), cfg, world)
    optimizer = adamw(training, cfg.protocol)
    precision = Precision(cfg.protocol.amp, world.device)
    loss_fn = criterion(cfg.protocol, mixup(cfg.protocol, classes))
    batch = per_process_batch(cfg, world)
    images = torch.randn(batch, 3, cfg.data.input_size, cfg.data.input_size)
    targets = torch.randint(0, classes, (batch,))
    if cfg.loss.sar:
        raise ValueError(f"{RECIPE} {ROW} is the baseline row: this step trains on cross-entropy alone")

    def step() -> None:
        with precision.autocast():
            logits, S, _ = net(images)
        ce = loss_fn(logits.float(), targets)
        aux_loss(cfg, S.detach())  # the engine logs L_se where it does not train on it
        optimizer_step(ce, optimizer, net, precision, cfg.protocol.clip_grad)

    elements = sum(p.numel() for p in training.parameters() if p.requires_grad)
    return step, net, elements


def _block(step, steps: int, context) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per step over `steps` consecutive steps, both processes
    starting and ending together; a process with no `step` waits at the barriers (the other runs alone)."""
    dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    if step is not None:
        for _ in range(steps):
            with context():
                step()
    cpu = time.process_time() - cpu
    dist.barrier()
    return (time.perf_counter() - start) / steps, cpu / steps


def _allreduce_seconds(elements: int, repeats: int) -> float:
    """Median time of one all-reduce of a float32 buffer of `elements` (what DDP sends per step)."""
    buffer = torch.zeros(elements)
    times = []
    for _ in range(repeats + 2):  # the first two warm the connections
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def _worker(rank: int, config: dict, plan: Plan, shapes: list[tuple[int, int]], folder: str) -> None:
    """One of two processes: times each (processes, threads) shape's step in blocks, round-robin, so that
    a shared machine's drifts hit all alike; rank 0 alone runs the 1-process step (the whole batch, no DDP)
    while rank 1 waits. The 2-process shape of the fewest threads is also timed under DDP's `no_sync`; then
    the all-reduce. Writes its wall and CPU seconds per step, per block, to `folder`/rank<rank>.json."""
    store = dist.FileStore(os.path.join(folder, "store"), 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        cfg = OmegaConf.create(config)
        solo = _train_step(cfg, 0, 1)[0] if rank == 0 else None
        step, net, elements = _train_step(cfg, rank, 2)
        fewest = min(threads for _, threads in shapes)
        variants = []  # (name, threads, step or None, context)
        for size, threads in shapes:
            if size == 1:
                variants.append((f"{size}x{threads}", threads, solo, nullcontext))
                continue
            variants.append((f"{size}x{threads}", threads, step, nullcontext))
            if threads == fewest:
                variants.append((f"{size}x{threads} no_sync", threads, step, net.no_sync))
        for _, threads, fn, context in variants:
            torch.set_num_threads(threads)
            _block(fn, max(1, plan.warmup_steps), context)
        wall: dict[str, list[float]] = {name: [] for name, *_ in variants}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in variants}
        for _ in range(plan.blocks):
            for name, threads, fn, context in variants:
                torch.set_num_threads(threads)
                seconds, cpu_seconds = _block(fn, plan.steps_per_block, context)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
        torch.set_num_threads(fewest)
        result = {
            "wall": wall,
            "cpu": cpu,
            "grad_elements": elements,
            "allreduce_seconds": _allreduce_seconds(elements, plan.allreduce_repeats),
        }
        Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def training(plan: Plan) -> list[dict]:
    """1 process and 2, each with torch's default threads per process and with half the cores each (one
    thread count where the two are the same): one row per (processes, threads)."""
    cfg = _load(["scale=local"])
    if plan.batch is not None:
        cfg.protocol.batch_size = plan.batch
    cores = len(os.sched_getaffinity(0))
    default, split = torch.get_num_threads(), max(1, cores // 2)
    threads = [default] if split == default else [default, split]
    shapes = [(size, t) for size in (1, 2) for t in threads]
    config = OmegaConf.to_container(cfg, resolve=True)
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(
            _worker, args=(config, plan, shapes, folder), nprocs=2, join=True, start_method="spawn"
        )
        measured = [json.loads(Path(folder, f"rank{rank}.json").read_text()) for rank in (0, 1)]
    batch, wall = cfg.protocol.batch_size, measured[0]["wall"]
    rows = []
    for size, threads in shapes:
        name = f"{size}x{threads}"
        seconds = statistics.median(wall[name])
        # the CPU seconds of the processes that ran the step (rank 1 waits while rank 0 runs alone)
        cpu = sum(statistics.median(m["cpu"][name]) for m in measured[:size])
        row = {
            "bench": "training",
            "processes": size,
            "threads_per_process": threads,
            "batch": batch,
            "per_process_batch": batch // size,
            "input_size": cfg.data.input_size,
            "ms_per_step": seconds * 1e3,
            "ms_per_step_blocks": [t * 1e3 for t in wall[name]],
            "images_per_s": batch / seconds,
            "cpu_ms_per_step": cpu * 1e3,
            "images_per_cpu_s": batch / cpu,
            "grad_mb": measured[0]["grad_elements"] * 4 / 2**20,
        }
        if size > 1:
            row["allreduce_ms"] = measured[0]["allreduce_seconds"] * 1e3
        if f"{name} no_sync" in wall:
            row["no_sync_ms_per_step"] = statistics.median(wall[f"{name} no_sync"]) * 1e3
            row["sync_exposed_ms"] = row["ms_per_step"] - row["no_sync_ms_per_step"]
        rows.append(row)
    alone = {row["threads_per_process"]: row["images_per_s"] for row in rows if row["processes"] == 1}
    for row in rows:
        row["ratio_vs_1_process"] = row["images_per_s"] / alone[row["threads_per_process"]]
    kwargs = OmegaConf.to_container(cfg.model_kwargs)
    print(
        f"\ntraining step of the local ViT-S/16 member ({cfg.model} {kwargs}), batch {batch} split over the "
        f"processes, random images (no data loading), {cores} cores; medians of {plan.blocks} blocks of "
        f"{plan.steps_per_block} steps, round-robin"
    )
    for r in rows:
        line = (
            f"  {r['processes']} process(es) x {r['threads_per_process']} thread(s): "
            f"{r['ms_per_step']:7.1f} ms/step {r['images_per_s']:6.1f} images/s "
            f"({r['ratio_vs_1_process']:.2f}x 1 process of as many threads), "
            f"{r['images_per_cpu_s']:5.1f} images per CPU-second"
        )
        if "sync_exposed_ms" in r:
            line += (
                f" | gradient sync: step {r['sync_exposed_ms']:+.1f} ms against no_sync"
                f" ({r['no_sync_ms_per_step']:.1f})"
            )
        print(line)
    best = {size: max(r["images_per_s"] for r in rows if r["processes"] == size) for size in (1, 2)}
    print(f"  fastest 2 processes / fastest 1 process: {best[2] / best[1]:.2f}x images/s")
    print(
        f"  all-reduce of a buffer the size of the gradients ({rows[-1]['grad_mb']:.1f} MB, gloo, "
        f"{min(t for _, t in shapes)} thread(s)): {rows[-1]['allreduce_ms']:.1f} ms"
    )
    return rows


# ---------------------------------------------------------------------------------------------------------
# 2. data


def natural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [height, width, 3]: noise shaped to natural images' 1/f amplitude spectrum, channels correlated,
    so that JPEG compresses it about as much as a photograph."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0
    amplitude = radius**-SPECTRUM_SLOPE
    amplitude[0, 0] = 0.0
    shared = rng.standard_normal((height, width))
    channels = [
        np.fft.irfft2(
            np.fft.rfft2(0.7 * shared + 0.3 * rng.standard_normal((height, width))) * amplitude,
            s=(height, width),
        )
        for _ in range(3)
    ]
    x = np.stack(channels, axis=-1)
    x = (x - x.mean()) / x.std()
    return np.clip(128 + 45 * x, 0, 255).astype(np.uint8)


def write_imagenet(root: Path, plan: Plan) -> list[int]:
    """An ImageNet layout under `root` (one class: `plan.jpegs` training JPEGs, one val image); the training
    JPEGs' sizes in bytes."""
    rng = np.random.default_rng(0)
    height, width = plan.jpeg_size
    sizes = []
    for split, count in (("train", plan.jpegs), ("val", 1)):
        folder = root / split / "n01440764"
        folder.mkdir(parents=True)
        for i in range(count):
            shape = (height, width) if i % 2 == 0 else (width, height)
            path = folder / f"{i:08d}.JPEG"
            Image.fromarray(natural_image(rng, *shape)).save(path, "JPEG", quality=JPEG_QUALITY)
            if split == "train":
                sizes.append(path.stat().st_size)
    return sizes


def _rate(fn, count: int, seconds: float) -> tuple[float, float]:
    """(items per wall second, items per CPU second of this process) of `fn(i)` over i = 0, 1, ...
    (cycling through `count`), for `seconds` at least and one pass over the items at least, after one
    warm-up pass. On one thread, the CPU rate is what a core of its own would give: a shared machine's
    other processes slow the wall rate, not it."""
    for i in range(count):
        fn(i)
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while done < count or time.perf_counter() - start < seconds:
        fn(done % count)
        done += 1
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def data(plan: Plan) -> dict:
    from harness.core.data import SeededDataset, datasets

    cfg = _load([])
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        sizes = write_imagenet(Path(folder), plan)
        cfg.data.root = folder
        with warnings.catch_warnings():  # one class folder of ImageNet's 1,000
            warnings.simplefilter("ignore")
            train, _ = datasets(cfg)
        seeded = SeededDataset(train)
        image, _ = seeded[0, (0, 0, 0, 0)]
        torch.set_num_threads(1)
        try:
            _, decode = _rate(lambda i: train.loader(train.samples[i][0]), len(train), plan.data_seconds / 4)
            wall, rate = _rate(lambda i: seeded[i, (0, 0, i, 0)], len(train), plan.data_seconds)
        finally:
            torch.set_num_threads(threads)
    row = {
        "bench": "data",
        "jpegs": len(sizes),
        "jpeg_size": list(plan.jpeg_size),
        "jpeg_kb_mean": statistics.mean(sizes) / 1e3,
        "sample_shape": list(image.shape),
        "transform": repr(train.transform),
        "decode_images_per_s_per_core": decode,
        "images_per_s_per_core": rate,
        "images_per_wall_s": wall,
        "num_workers": cfg.data.num_workers,  # the run's loader workers per process (per GPU)
    }
    print(
        f"\nImageNet training pipeline on one core ({cfg.model}'s {cfg.protocol.name} transform at "
        f"{cfg.data.input_size} px, RandAugment {cfg.protocol.auto_augment}, random erasing "
        f"{cfg.protocol.reprob}): {len(sizes)} JPEGs of {plan.jpeg_size[1]}x{plan.jpeg_size[0]} "
        f"(either way round), {row['jpeg_kb_mean']:.0f} KB on average"
    )
    print(
        f"  decoded + augmented: {rate:.1f} images/s per core, in CPU time (decode alone {decode:.1f}: "
        f"{100 * rate / decode:.0f} % of the time); {wall:.1f} images/s in wall time on this shared machine"
    )
    return row


# ---------------------------------------------------------------------------------------------------------
# 3. workers per GPU


def gpu_images_per_s(folder: Path) -> tuple[float, str] | None:
    """The fastest ViT-S/16 training variant of the newest `benchmarks gpu` result measured on a GPU in
    `folder` (images/s, where it came from), or None."""
    found = []
    for path in folder.glob("gpu*.json"):
        try:
            payload = json.loads(path.read_text())
            machine, variants = payload["machine"], payload["results"]["train_step"]["variants"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if machine.get("cpu_smoke") or machine.get("device") in (None, "cpu"):
            continue
        name, best = max(((n, v["images_per_s"]) for n, v in variants.items()), key=lambda nv: nv[1])
        step = payload["results"]["train_step"]
        source = f"{path} ({machine['device']}, {name}, batch {step.get('batch')} {step.get('dtype')})"
        found.append((path.stat().st_mtime, best, source))
    if not found:
        return None
    _, best, source = max(found)
    return best, source


def workers(per_core: float, num_workers: int, folder: Path) -> dict:
    """Loader workers per GPU, where a GPU result is on record; what the run's `num_workers` feed at most."""
    gpu = gpu_images_per_s(folder)
    row: dict = {"bench": "workers", "images_per_s_per_core": per_core, "num_workers": num_workers}
    row["num_workers_feed_images_per_s"] = num_workers * per_core
    print("\ndata-loading workers per GPU")
    print(
        f"  the run's data.num_workers = {num_workers} feed at most {num_workers} x {per_core:.1f} = "
        f"{row['num_workers_feed_images_per_s']:.0f} images/s per GPU"
    )
    if gpu is None:
        row.update({"gpu_images_per_s": None, "gpu_source": None, "workers_per_gpu": None})
        print("  GPU images/s: not measured (no GPU run on record)")
        return row
    images_per_s, source = gpu
    row.update({"gpu_images_per_s": images_per_s, "gpu_source": source})
    row["workers_per_gpu"] = images_per_s / per_core
    print(f"  GPU images/s: {images_per_s:.0f} from {source}")
    print(
        f"  workers per GPU: {images_per_s:.0f} / {per_core:.1f} = {row['workers_per_gpu']:.1f} "
        f"(at least {math.ceil(row['workers_per_gpu'])} cores of this machine's kind)"
    )
    return row


def measure(plan: Plan, gpu_results: Path = GPU_RESULTS) -> list[dict]:
    rows = training(plan)
    rows.append(data(plan))
    rows.append(workers(rows[-1]["images_per_s_per_core"], rows[-1]["num_workers"], gpu_results))
    rows.append({"bench": "plan", **asdict(plan)})
    return rows


def run(quick: bool = False) -> list[dict]:
    return measure(QUICK if quick else FULL)
