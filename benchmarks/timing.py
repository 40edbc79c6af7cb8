"""Wall-clock timing helpers: warm up, repeat, report the median (robust to the odd slow repeat)."""

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(
    fn: Callable[[], object], repeats: int, warmup: int = 3, min_seconds: float = 0.0
) -> float:
    """Median wall time of `fn()` over `repeats` calls (more if `min_seconds` is not reached)."""
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, float]:
    """Median wall time of each function, timed round-robin: a noisy machine's drifts hit all alike."""
    cuda = torch.cuda.is_available()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cuda_median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 10) -> float:
    """Median GPU time of `fn()` measured with CUDA events (no host synchronisation inside a repeat)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def cuda_graph_seconds(fn: Callable[[], object], repeats: int) -> float:
    """`fn` captured once in a CUDA graph (after 3 warm-up calls on a side stream), then the median replay;
    the capture fails if `fn` synchronises the host."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return cuda_median_seconds(graph.replay, repeats=repeats)
