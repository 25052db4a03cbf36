"""Every pipeline's ``smoke`` preset on the real datasets: does it finish in about a minute?

The smoke presets cap training and evaluation examples (``max_train_examples``,
``max_eval_examples``), so ``rnnapps run NAME --preset smoke --data-dir DATA``
checks the whole path on real data in seconds, not the hours a full pass takes.
Each pipeline runs as a user runs it: the ``rnnapps`` command in a subprocess,
timed wall to wall (TensorFlow's import and the data loading included). Writes
``benchmarks/results/smoke.json`` with its ``provenance``.

Usage:
    python benchmarks/smoke.py --data-dir ../shared/data
    python benchmarks/smoke.py --data-dir ../shared/data --only sentiment ner
    python benchmarks/smoke.py --table      # the docs table of the saved results
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import provenance, provenance_start  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "smoke.json"
WORK = Path(__file__).parent / "work" / "smoke"
PIPELINES = ("sentiment", "ner", "translate", "autoencoder", "textgen", "pixelrnn", "draw")
# Options a user needs with the team's data folder: it has binarized MNIST but no SVHN.
EXTRA = {"draw": ["--set", "dataset=binarized_mnist"]}
# Each run's main metric, as its metrics.json names it.
METRIC = {
    "sentiment": "test_accuracy", "ner": "test_f1", "translate": "test_bleu_beam",
    "autoencoder": "test_token_accuracy", "textgen": "test_nats_per_char", "pixelrnn": "test_nll_nats",
    "draw": "test_nll_bound_nats",
}


def run_smoke(pipeline: str, data_dir: str) -> dict:
    """One ``rnnapps run PIPELINE --preset smoke`` on the real data: wall seconds, exit status, main metric."""
    work = WORK / pipeline
    shutil.rmtree(work, ignore_errors=True)
    rnnapps = Path(sys.executable).with_name("rnnapps")
    command = [str(rnnapps), "run", pipeline, "--preset", "smoke", "--data-dir", data_dir,
               "--output-dir", str(work / "runs"), "--export-dir", str(work / "exports"), *EXTRA.get(pipeline, [])]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    report = {"command": " ".join(["rnnapps", *command[1:]]), "wall_seconds": round(seconds, 1),
              "returncode": completed.returncode}
    metrics_files = sorted((work / "runs" / pipeline).glob("*/metrics.json"))
    if completed.returncode == 0 and metrics_files:
        metrics = json.loads(metrics_files[-1].read_text())
        report.update(metric=METRIC[pipeline], value=metrics.get(METRIC[pipeline]),
                      train_seconds=metrics.get("train_seconds_this_session"))
        config = json.loads((metrics_files[-1].parent / "config.json").read_text())
        report.update(max_train_examples=config.get("max_train_examples"),
                      max_eval_examples=config.get("max_eval_examples"))
    else:
        report["stderr_tail"] = completed.stderr[-2000:]
    return report


def table(results: dict) -> str:
    rows = ["| pipeline | wall (s) | of which training (s) | train / eval examples | metric |", "|---|---|---|---|---|"]
    for pipeline, report in results["pipelines"].items():
        metric = f"{report.get('metric')} {report.get('value'):.4g}" if report.get("value") is not None else "failed"
        rows.append(f"| {pipeline} | {report['wall_seconds']} | {report.get('train_seconds')} | "
                    f"{report.get('max_train_examples')} / {report.get('max_eval_examples')} | {metric} |")
    cpu = results["provenance"].get("cpu_model")
    return "\n".join(rows) + f"\n\nCPU: {cpu}, {results['provenance'].get('cpus_usable')} usable cores."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="The local data folder (docs/data.md layout).")
    parser.add_argument("--only", nargs="+", choices=PIPELINES, help="Run only these pipelines.")
    parser.add_argument("--table", action="store_true", help="Print the docs table of the saved results.")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(RESULTS.read_text())))
        return 0
    if not args.data_dir:
        parser.error("--data-dir is required to run")
    started = provenance_start()
    results = {"pipelines": {}}
    for pipeline in args.only or PIPELINES:
        results["pipelines"][pipeline] = report = run_smoke(pipeline, str(Path(args.data_dir).resolve()))
        print(f"{pipeline}: {report['wall_seconds']} s, rc {report['returncode']}, "
              f"{report.get('metric')}={report.get('value')}", flush=True)
    results["provenance"] = provenance(started)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(table(results))
    return 0 if all(report["returncode"] == 0 for report in results["pipelines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
