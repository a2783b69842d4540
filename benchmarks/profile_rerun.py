"""cProfile of a cached re-run of the `--quick` pipeline (tiny models): where its orchestration time goes.

  .venv/bin/python benchmarks/profile_rerun.py --out rerun.prof
Runs the pipeline three times in one process (fresh, cached, cached under the profiler), prints each wall time and
the node times, and writes the third run's profile; read it with `python -m pstats rerun.prof`.
"""

import argparse
import cProfile
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import harness as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("rerun.prof"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mckd-profile-"))
    bench.isolate_environment(work / "home", 1)
    mode = bench.MODES["quick"]
    data = bench.build_data(mode, work / "data", 40)
    cfg = bench.make_config(
        mode,
        bench.build_models(mode, work / "models"),
        data,
        work / "runs",
        bench.write_unlabeled(data, 32, work / "u.parquet"),
    )
    from flows.mckd import mckd_flow

    profiler = cProfile.Profile()
    for name in ("fresh", "cached", "cached, profiled"):
        started = time.perf_counter()
        if name.endswith("profiled"):
            profiler.enable()
        report = mckd_flow(cfg)
        profiler.disable()
        print(f"{name}: {time.perf_counter() - started:.2f} s, nodes {report['timings']}")
    profiler.dump_stats(args.out)
    print(f"profile: {args.out}; run dir {work}")


if __name__ == "__main__":
    main()
