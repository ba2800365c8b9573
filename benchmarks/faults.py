"""Fault matrix of ``ddistill distill``: real processes killed, disks that refuse writes, folders the run may not
write, two runs fighting over one name, damaged caches. For every case: did the run survive (it either finished or
failed with one line, and ``--resume`` then finished), and was any data lost (a finished run changed, or a resumed set
that differs from an uninterrupted run's)? Writes ``benchmarks/results/faults.{md,json}``.

    python benchmarks/faults.py --kills 20 --out benchmarks/results/faults

The run is DM on scikit-learn's digits (IPC 2, a depth-2 width-16 ConvNet, eager fp32, checkpoint every 5 steps),
long enough (--iterations) that random kill times land before, between and during checkpoints. The reference is one
uninterrupted run with the same config and seed; "same set" means ``torch.equal`` on every tensor.

Cases:
- ``kill -9 at a random time``: the process is killed at a uniform random time within the reference run's duration,
  then resumed with ``--resume``;
- ``kill -9 inside a checkpoint write``: a wrapper pauses the 3rd checkpoint write after half the temporary file is
  written and the harness kills the process there; then ``--resume``;
- ``full disk``: file writes above a size limit fail (``RLIMIT_FSIZE``, a real ``EFBIG`` from the kernel) while the
  run writes its set; then the limit is lifted and the run resumed;
- ``read-only run folder``: the folder is made immutable (``chattr +i``); a new run and a resume are started;
- ``two runs, one name``: two processes started together with the same ``name``;
- ``damaged caches``: a truncated decoded-image cache, a half-extracted TU dataset without its labels, a pickle planted
  in PyG's processed/ folder, a truncated TU zip (each in a fresh cache, then the dataset is loaded).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CONFIG = {"seed": 0, "dataset": {"name": "digits"}, "grid": False,
          "synthesizer": {"name": "dm", "ipc": 2, "batch_real": 32, "checkpoint_every": 5, "augment": "none",
                          "model_kwargs": {"depth": 2, "width": 16},
                          "perf": {"compile": False, "bf16": False, "channels_last": False}}}

#: Pauses the 3rd checkpoint write half-way (the harness kills the process there).
PAUSE_IN_CHECKPOINT = r"""
import os, sys, time
import ddistill.io as io
calls = {"n": 0}
original = io.atomic_write
def slow_write(path, write, binary=True):
    if str(path).endswith("checkpoint.pt"):
        calls["n"] += 1
        if calls["n"] == 3:
            def half(f):
                import io as _io
                buf = _io.BytesIO(); write(buf); data = buf.getvalue()
                f.write(data[: len(data) // 2]); f.flush()
                print("PAUSED", flush=True); time.sleep(120)
            return original(path, half, binary=binary)
    return original(path, write, binary=binary)
io.atomic_write = slow_write
from ddistill.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _yaml(path: Path, name: str, out_dir: Path, iterations: int) -> Path:
    import yaml

    cfg = json.loads(json.dumps(CONFIG))
    cfg.update(name=name, out_dir=str(out_dir))
    cfg["synthesizer"]["iterations"] = iterations
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "DDISTILL_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _distill(cfg: Path, env: dict, *extra: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "ddistill.cli", "distill", str(cfg), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, preexec_fn=preexec)


def _tensors(path: Path) -> dict:
    import torch

    blob = torch.load(path, weights_only=True)
    return blob["tensors"]


def _same(a: Path, b: Path) -> bool:
    import torch

    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _one_line_error(proc: subprocess.CompletedProcess) -> bool:
    err = proc.stderr.strip().splitlines()
    return proc.returncode == 2 and "Traceback" not in proc.stderr and len(err) >= 1 and err[-1].startswith(
        "ddistill: error:")


# ---------------------------------------------------------------------------------------------------------------
def case_random_kills(work: Path, env: dict, reference: Path, seconds: float, kills: int, iterations: int,
                      rng: random.Random) -> dict:
    rows = []
    for k in range(kills):
        out = work / f"kill{k}"
        cfg = _yaml(work / f"kill{k}.yaml", "run", out, iterations)
        delay = rng.uniform(0.0, seconds)
        proc = subprocess.Popen([PY, "-m", "ddistill.cli", "distill", str(cfg)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        step = None
        ckpt = out / "run" / "checkpoint.pt"
        if ckpt.exists():
            import torch

            step = int(torch.load(ckpt, weights_only=True)["step"])
        resumed = _distill(cfg, env, "--resume")
        ok = resumed.returncode == 0 and _same(out / "run" / "synset.pt", reference)
        leftovers = [p.name for p in (out / "run").glob(".*.tmp")]
        rows.append({"kill_after_s": round(delay, 2), "killed": killed, "checkpoint_step": step,
                     "resume_rc": resumed.returncode, "same_set": ok, "tmp_files_left": leftovers})
    return {"case": f"kill -9 at a random time ({kills} runs)", "tried": kills,
            "survived": sum(r["same_set"] for r in rows), "data_lost": sum(not r["same_set"] for r in rows),
            "details": rows}


def case_kill_in_checkpoint(work: Path, env: dict, reference: Path, iterations: int) -> dict:
    out = work / "ckpt_kill"
    cfg = _yaml(work / "ckpt_kill.yaml", "run", out, iterations)
    proc = subprocess.Popen([PY, "-c", PAUSE_IN_CHECKPOINT, "distill", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    paused = False
    for line in proc.stdout:
        if line.strip() == "PAUSED":
            paused = True
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = out / "run"
    tmp = [p.name for p in run.glob(".*.tmp")]
    import torch

    step = int(torch.load(run / "checkpoint.pt", weights_only=True)["step"]) if (run / "checkpoint.pt").exists() else None
    resumed = _distill(cfg, env, "--resume")
    same = resumed.returncode == 0 and _same(run / "synset.pt", reference)
    return {"case": "kill -9 inside a checkpoint write (3rd write, half the file on disk)", "tried": 1,
            "survived": int(same and paused), "data_lost": int(not same),
            "details": {"paused_in_write": paused, "half_written_tmp_files": tmp, "checkpoint_step_on_disk": step,
                        "tmp_files_after_resume": [p.name for p in run.glob(".*.tmp")], "same_set": same}}


def case_full_disk(work: Path, env: dict, reference: Path, iterations: int) -> dict:
    out = work / "full"
    cfg = _yaml(work / "full.yaml", "run", out, iterations)

    def limit() -> None:  # in the child: writes above 4 KiB fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    failed = _distill(cfg, env, preexec=limit)
    run = out / "run"
    one_line = _one_line_error(failed)
    tmp = [p.name for p in run.glob(".*.tmp")]
    resumed = _distill(cfg, env, "--resume")
    same = resumed.returncode == 0 and _same(run / "synset.pt", reference)
    return {"case": "full disk (RLIMIT_FSIZE 4 KiB: every checkpoint / set write fails with EFBIG)", "tried": 1,
            "survived": int(one_line and same), "data_lost": int(not same),
            "details": {"returncode": failed.returncode, "message": failed.stderr.strip().splitlines()[-1:],
                        "tmp_files_left": tmp, "resume_rc": resumed.returncode, "same_set_after_resume": same}}


def case_read_only(work: Path, env: dict, iterations: int) -> dict:
    """The output folder is made immutable (``chattr +i``), which refuses writes even to root (tests here run as
    root, so a plain chmod would not hold); an existing finished run inside must survive too."""
    out = work / "readonly"
    cfg = _yaml(work / "readonly.yaml", "run", out, iterations)
    first = _distill(cfg, env)  # a finished run, then the folder is frozen

    def files() -> dict[str, bytes]:  # the run's data (the .lock file holds only the owner's pid)
        return {p.name: p.read_bytes() for p in (out / "run").iterdir() if p.is_file() and p.name != ".lock"}

    before = files()
    frozen = [out, out / "run"]
    flags = [subprocess.run(["chattr", "+i", str(f)], capture_output=True).returncode == 0 for f in frozen]
    try:
        fresh = _distill(_yaml(work / "readonly2.yaml", "other", out, iterations), env)
        resumed = _distill(cfg, env, "--resume", "synthesizer.iterations=" + str(iterations + 5))
    finally:
        for f in frozen:
            subprocess.run(["chattr", "-i", str(f)], capture_output=True)
    after = files()
    ok = all(flags) and first.returncode == 0 and _one_line_error(fresh) and _one_line_error(resumed)
    return {"case": "read-only output folder (chattr +i): a new run there, and a resume of a finished run", "tried": 2,
            "survived": int(ok) * 2, "data_lost": int(before != after),
            "details": {"immutable_set": flags, "new_run": fresh.stderr.strip().splitlines()[-1:],
                        "resume": resumed.stderr.strip().splitlines()[-1:], "finished_run_unchanged": before == after}}


def case_two_runs(work: Path, env: dict, reference: Path, iterations: int) -> dict:
    out = work / "twin"
    cfg = _yaml(work / "twin.yaml", "run", out, iterations)
    procs = [subprocess.Popen([PY, "-m", "ddistill.cli", "distill", str(cfg)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    loser = [err for rc, err in results if rc != 0]
    ok = codes == [0, 2] and all("in use by another ddistill run" in e or "already holds" in e for e in loser)
    same = _same(out / "run" / "synset.pt", reference)
    import yaml

    recorded = yaml.safe_load((out / "run" / "config.yaml").read_text())
    consistent = recorded["synthesizer"]["iterations"] == iterations and recorded["seed"] == 0
    return {"case": "two runs started together with one name", "tried": 1, "survived": int(ok and same and consistent),
            "data_lost": int(not same), "details": {"return_codes": codes, "loser_message": [e.strip().splitlines()[-1]
                                                                                          for e in loser],
                                                      "same_set": same, "config_matches_set": consistent}}


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def case_caches(work: Path, env: dict, tu_root: Path) -> dict:
    """Damaged caches, each in a fresh cache folder, loaded in a subprocess (as a user's next run would)."""
    rows = []

    def load(code: str, cache: Path) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-c", code], cwd=ROOT, env={**env, "DDISTILL_CACHE": str(cache)},
                              capture_output=True, text=True)

    # 1. truncated decoded-image cache
    imgs = work / "imgs"
    from PIL import Image

    for split in ("train", "test"):
        for c in range(2):
            (imgs / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (60 * c + i, 9, 9)).save(imgs / split / f"c{c}" / f"{i}.png")
    cache = work / "cache_img"
    code = (f"from ddistill.data import get_dataset; d = get_dataset('imagefolder', root={str(imgs)!r}); "
            f"print(int(d.x.float().sum()))")
    first = load(code, cache)
    for f in (cache / "decoded").glob("*.pt"):
        f.write_bytes(f.read_bytes()[:64])
    second = load(code, cache)
    rows.append({"cache": "truncated decoded-image cache", "ok": first.returncode == 0 and second.returncode == 0
                 and first.stdout == second.stdout})

    # 2-4. graph caches (need torch_geometric and the MUTAG zip)
    zpath = tu_root / "MUTAG.zip"
    if zpath.is_file():
        code = (f"from ddistill.data.graph import load_graph_dataset; d = load_graph_dataset('mutag', {str(tu_root)!r});"
                f" print(len(d.train) + len(d.val) + len(d.test), d.info.num_node_features)")
        ref = load(code, work / "cache_ref")
        cache = work / "cache_partial"
        raw = cache / "tu" / "MUTAG" / "raw"
        raw.mkdir(parents=True)
        import zipfile

        with zipfile.ZipFile(zpath) as zf:
            for member in zf.namelist():
                if member.endswith(("_A.txt", "_graph_indicator.txt", "_graph_labels.txt")):
                    (raw / Path(member).name).write_bytes(zf.read(member))
        partial = load(code, cache)
        rows.append({"cache": "half-extracted TU dataset (no node labels, no completion marker)",
                     "ok": partial.returncode == 0 and partial.stdout == ref.stdout})
        cache = work / "cache_pickle"
        marker = work / "PWNED"
        proc_dir = cache / "tu" / "MUTAG" / "processed"
        proc_dir.mkdir(parents=True)
        for name in ("data.pt", "pre_transform.pt", "pre_filter.pt"):
            with open(proc_dir / name, "wb") as f:
                pickle.dump(_Planted(str(marker)), f)
        planted = load(code, cache)
        rows.append({"cache": "pickle planted in PyG's processed/ folder", "ok": planted.returncode == 0
                     and not marker.exists() and planted.stdout == ref.stdout})
        bad_root = work / "bad_tu"
        bad_root.mkdir()
        data = zpath.read_bytes()
        (bad_root / "MUTAG.zip").write_bytes(data[: len(data) // 2])
        bad = load(code.replace(str(tu_root), str(bad_root)), work / "cache_badzip")
        leftover = (work / "cache_badzip" / "tu" / "MUTAG" / "raw").exists()
        rows.append({"cache": "truncated TU zip", "ok": bad.returncode != 0 and "MUTAG.zip is not a readable zip"
                     in bad.stderr and not leftover})
    return {"case": "damaged caches (" + ", ".join(r["cache"] for r in rows) + ")", "tried": len(rows),
            "survived": sum(r["ok"] for r in rows), "data_lost": 0, "details": rows}


# ---------------------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--tu", default="../shared/data/tu", help="folder holding MUTAG.zip (cache cases)")
    p.add_argument("--out", default="benchmarks/results/faults")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from ddistill.io import machine_info, write_json

    work = Path(tempfile.mkdtemp(prefix="ddistill-faults-"))
    os.chmod(work, 0o755)
    env = _env(work / "cache")
    try:
        ref_cfg = _yaml(work / "ref.yaml", "run", work / "ref", args.iterations)
        t0 = time.perf_counter()
        ref = _distill(ref_cfg, env)
        seconds = time.perf_counter() - t0
        if ref.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{ref.stderr}")
        reference = work / "ref" / "run" / "synset.pt"
        rng = random.Random(args.seed)
        cases = [
            case_random_kills(work, env, reference, seconds, args.kills, args.iterations, rng),
            case_kill_in_checkpoint(work, env, reference, args.iterations),
            case_full_disk(work, env, reference, args.iterations),
            case_read_only(work, env, args.iterations),
            case_two_runs(work, env, reference, args.iterations),
            case_caches(work, env, Path(args.tu)),
        ]
        for c in cases:
            print(f"{c['case']}: {c['survived']}/{c['tried']} survived, data lost {c['data_lost']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/faults.py " + " ".join(sys.argv[1:])
    result = {"benchmark": "faults", "command": command, "machine": machine_info(), "reference_run_seconds": seconds,
              "run": CONFIG | {"iterations": args.iterations}, "cases": cases,
              "total": {k: sum(c[k] for c in cases) for k in ("tried", "survived", "data_lost")}}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    t = result["total"]
    lines = ["# Fault matrix of `ddistill distill`\n",
             f"Command: `{command}`. Run: DM on scikit-learn's digits, {args.iterations} iterations, checkpoint every 5 "
             f"steps (reference run {seconds:.1f} s wall-clock including start-up). Survived = the run finished, or "
             f"failed with one line and then finished on `--resume`, with a set bit-identical to the uninterrupted "
             f"run's; data lost = a finished run changed or a resumed set that differs. Details per run in "
             f"`faults.json`.\n",
             "| case | tried | survived | data lost |", "|---|---:|---:|---:|"]
    lines += [f"| {c['case']} | {c['tried']} | {c['survived']} | {c['data_lost']} |" for c in cases]
    lines.append(f"| **total** | **{t['tried']}** | **{t['survived']}** | **{t['data_lost']}** |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
