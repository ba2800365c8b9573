"""Side-by-side table of DataDAM seconds per iteration: ddistill (benchmarks/datadam_speed.py outputs) vs the
official main_DataDAM.py timed on the same machine (benchmarks/results/datadam_official_cpu_real*.json; how
that was run is recorded in each file).

    python benchmarks/datadam_vs_official.py
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    lines = ["# DataDAM distillation speed on CPU: ddistill vs the official code\n",
             "CIFAR-10 (JPEG mirror), IPC 10, the official code's settings (batch-norm ConvNet-3, attention exponent 1, "
             "DSA) = ddistill preset `official`; seconds per iteration, medians. Commands: "
             "`python benchmarks/datadam_speed.py --preset official --batch-real B` and "
             "`python benchmarks/datadam_vs_official.py`.\n",
             "| real / class | official code | ddistill plain fp32 | ddistill default (CPU) | speed-up of default | "
             "ddistill default: peak RSS above data |", "|---:|---:|---:|---:|---:|---:|"]
    for b in (256, 64):
        official = json.loads((RESULTS / f"datadam_official_cpu_real{b}.json").read_text())
        ours = json.loads((RESULTS / f"datadam_speed_official_ipc10_real{b}.json").read_text())
        rows = {r["setting"]: r for r in ours["rows"]}
        off = official["seconds_per_iteration_median"]
        default = rows["default_cpu"]
        lines.append(f"| {b} | {off:.2f} | {rows['plain_fp32']['seconds_per_iteration_median']:.2f} | "
                     f"{default['seconds_per_iteration_median']:.2f} | "
                     f"{off / default['seconds_per_iteration_median']:.1f}x | "
                     f"{default['peak_rss_above_data_mib']:.0f} MiB |")
    (RESULTS / "datadam_vs_official.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
