"""`python -m benchmarks [--quick] [--out DIR]`: run every benchmark, print figures, write JSON."""

import argparse
import json
import os
import platform
from pathlib import Path

import numba
import torch

from benchmarks import bench_loss, bench_models, bench_recipes, bench_report

BENCHES = {
    "loss": bench_loss.run,
    "models": bench_models.run,
    "report": bench_report.run,
    "recipes": bench_recipes.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for the JSON files")
    args = parser.parse_args()
    machine = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    print(f"machine: {machine}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or BENCHES:
        rows = BENCHES[name](quick=args.quick)
        path = args.out / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
        tmp.replace(path)
        print(f"  wrote {path}")


if __name__ == "__main__":
    main()
