"""`python -m benchmarks [--quick] [--out DIR] [--store RUNS]`: run the benchmarks, print figures, write JSON.

`python -m benchmarks gpu [--cpu-smoke] ...` (its own options: `gpu --help`) is run only when named: every
figure the project needs from a GPU in one short run. So are `local` and `scaleout` (minutes each)."""

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

import numba
import torch

# imported when run: each benchmark brings only its own dependencies (the GPU machine has no Hydra)
BENCHES = {
    "loss": "bench_loss",
    "models": "bench_models",
    "report": "bench_report",
    "recipes": "bench_recipes",
    "attach": "bench_attach",
}
# run only when named (minutes of training; scaleout: processes spawned, JPEGs decoded for a minute or more):
# `python -m benchmarks local scaleout`
ON_REQUEST = {"local": "bench_local", "scaleout": "bench_scaleout"}


def main() -> None:
    if sys.argv[1:2] == ["gpu"]:
        from benchmarks import bench_gpu

        raise SystemExit(bench_gpu.main(sys.argv[2:]))
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names",
        nargs="*",
        choices=[*BENCHES, *ON_REQUEST, []],
        help="benchmarks to run (default: all but local and scaleout)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke run)")
    parser.add_argument(
        "--store",
        type=Path,
        help="local: also say what the finished local runs in this run store could detect, per sub-table",
    )
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
        module = {**BENCHES, **ON_REQUEST}[name]
        options = {"store": args.store} if name == "local" else {}
        rows = importlib.import_module(f"benchmarks.{module}").run(quick=args.quick, **options)
        path = args.out / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
        tmp.replace(path)
        print(f"  wrote {path}")


if __name__ == "__main__":
    main()
