"""One GPU shot: checks, speed figures, every bundled model trained at once, evaluated, packed into $OUT.

    python benchmarks/gpu/shot.py                    # on the GPU machine (benchmarks/gpu/README.md has the call)
    python benchmarks/gpu/shot.py --dry-run          # the same orchestration on CPU, tiny sizes and data, ~2 min

Within a wall-clock budget it enforces itself (--budget, default 540 s, everything included), in order:
  1. checks   device, torch; the fast paths against the reference forward (benchmarks/gpu/check_fast.py,
              values and gradients). A run uses `hmgen train --fast` only where its path passed (and was not
              slower in step 2); otherwise the reference forward. A failing path never stops the shot.
  2. speed    training characters/s of the HM-LSTM paths vs cuDNN nn.LSTM, inference at 256 lanes
              (benchmarks/gpu_speed.py, cut off at its share of the budget; the rows done so far count).
  3. train    every run of RUNS as its own `hmgen train ... --time-limit` process, all at once on the one GPU;
              a run that fails in its first half is started again once with half the learning rate.
  4. export   each run's best model as NAME.safetensors + NAME.json (float16 weights when float32 would not
              fit the return limit; sha256 in the JSON rewritten to match).
  5. eval     `hmgen eval` of every exported text model on the validation split (and PTB test).
  6. compress `hmgen compress --device cuda` of 256 kB of English validation text with the English models, and
              back (skipped with a note when constriction cannot be imported).
  7. pack     $OUT: summary.md, shot.log, and shot.tar (split into shot.tar.part-NN when > 15 MiB):
              runs/NAME/{best.safetensors,best.json,metrics.jsonl} (best.* = the returned weights, evaluated),
              logs, check/speed/eval JSON, archives. The tool's limits: <= 8 files of <= 16 MiB,
              <= 64 MiB together, <= 2 folders deep; names [A-Za-z0-9._-]. Unpack: cat shot.tar* | tar -x

Large batches (hmgen's choice, written down in benchmarks/gpu/README.md): a recurrent step costs about the
same at batch 64 and 1024 on a GPU, so runs use hundreds of streams; the learning rate is scaled from the
recipe's (batch, lr) by sqrt(batch / recipe batch) (Adam: the update's noise falls as 1/sqrt(batch)), with a
linear warm-up (--warmup steps of hmgen train) because early straight-through gradients are large.

Warm start: --init DIR (default DATA/init, made by `prepare.sh --init UNPACKED/runs`) holds
NAME.safetensors/.json of an earlier shot; a run with a file there starts from those weights
(`hmgen train --init`, fresh optimiser state).
"""
from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# `hmgen train` and `hmgen eval` with constriction, svgwrite and numba made unimportable: the GPU image has
# none of the first two (numba: not to be relied on), so training must not import them — the dry run on a
# machine that has them proves it
HMGEN_NO_CODER = [sys.executable, "-c", "import runpy, sys; sys.modules.update(constriction=None, svgwrite=None, "
                  "numba=None); sys.argv[0] = 'hmgen'; runpy.run_module('hmgen', run_name='__main__')"]
PART = 15 * 2**20            # one returned file (the tool's limit is 16 MiB)
TAR_CAP = 60 * 2**20         # everything in the tar (the tool's limit is 64 MiB together, 8 files)


def scaled_lr(batch: int, recipe_batch: int, recipe_lr: float) -> float:
    """The large-batch rule: sqrt scaling of Adam's learning rate from the recipe's batch."""
    return round(recipe_lr * math.sqrt(batch / recipe_batch), 6)


@dataclass
class Run:
    name: str
    data: str                         # corpus spec, relative to the data folder ("english", "ptb:ptb", "iam:iam")
    options: list[str]                # hmgen train options: the model and its recipe
    batch: int
    recipe: tuple[int, float]         # (batch, lr) of the small-batch recipe the LR is scaled from
    check_model: str | None           # check_fast.py model whose paths decide --fast (None: no fast path)
    # evaluated at the end: (figure name, data spec relative to the data folder, split or None for a whole file)
    evals: list[tuple[str, str, str | None]] = field(default_factory=list)
    ship: bool = True                 # weights returned (False: baselines, figures only, when space is short)

    @property
    def lr(self) -> float:
        return scaled_lr(self.batch, *self.recipe)


def gpu_runs(english: int) -> list[Run]:
    """The shot. Sizes: the paper's where it gives them (PTB 3x512, Graves' 3x400); `english` = the largest
    width that compresses at >= 25 kB/s on the 2-core CPU (README.md's table). Batches: text 512 streams
    (PTB 128: its 5M-character training split is 392 steps an epoch at 128 x 100, so slope annealing and
    validation per epoch stay meaningful), handwriting 128 lines."""
    E = f"{english},{english},{english}"
    # in-run validations (16 streams, sequential: ~6 s per 200k symbols on the GPU) every ~10-15% of a run;
    # every run also validates once after its time limit, so a best model always exists
    eng = ["--slope-rate", "0", "--clip", "1", "--seq-len", "100", "--eval-every", "1500", "--eval-symbols", "200000"]
    ptb = ["--hidden", "512,512,512", "--out-embed", "512", "--seq-len", "100", "--clip", "1", "--lr-divide", "50",
           "--patience", "1", "--eval-every", "800", "--eval-symbols", "100000"]
    hw = ["--hidden", "400,400,400", "--no-layer-norm", "--seq-len", "100", "--clip", "3", "--lr-divide", "4",
          "--patience", "1", "--slope-rate", "0.004", "--slope-max", "3", "--eval-every", "300",
          "--eval-symbols", "100000"]
    ptb_eval = [("valid", "ptb:ptb", "valid"), ("test", "ptb:ptb", "test")]
    eng_eval = [("valid", "english/english.valid.txt.xz", None)]     # the file alone: no training text loaded
    return [
        Run("english", "english", ["--hidden", E, "--out-embed", str(english)] + eng, 512, (64, 0.002),
            "ptb-3x512", eng_eval),    # the fast path is shape-generic: one compiled check
        Run("english-192", "english", ["--hidden", "192,192,192", "--out-embed", "192"] + eng, 512, (64, 0.002),
            "ptb-3x512", eng_eval),    # the fallback CPU default if 3 x `english` is too slow here
        Run("english-large", "english", ["--hidden", "512,512,512", "--out-embed", "512"] + eng, 512, (64, 0.002),
            "ptb-3x512", eng_eval),
        Run("ptb-hmlstm", "ptb:ptb", ptb + ["--slope-start", "1", "--slope-rate", "0.04", "--slope-max", "5"], 128,
            (64, 0.002), "ptb-3x512", ptb_eval),
        Run("ptb-lstm", "ptb:ptb", ptb + ["--arch", "lstm"], 128, (64, 0.002), "lstm-3x512", ptb_eval, ship=False),
        Run("handwriting", "iam:iam", hw + ["--arch", "hmlstm"], 128, (32, 0.001), None),
        Run("handwriting-lstm", "iam:iam", hw + ["--arch", "lstm"], 128, (32, 0.001), None, ship=False),
    ]


def dry_runs() -> list[Run]:
    """The same runs at toy size for --dry-run (CPU, generated data)."""
    tiny = ["--hidden", "16,16,16", "--out-embed", "16", "--embed-dim", "8", "--seq-len", "20",
            "--eval-every", "25", "--eval-symbols", "2000"]
    hw = ["--hidden", "16,16,16", "--no-layer-norm", "--seq-len", "20", "--mixtures", "2", "--window", "2",
          "--eval-every", "10", "--eval-symbols", "2000", "--max-points", "200"]
    runs = gpu_runs(16)
    sizes = {"english": tiny + ["--slope-rate", "0"], "english-192": tiny + ["--slope-rate", "0"],
             "english-large": tiny + ["--slope-rate", "0"],
             "ptb-hmlstm": tiny, "ptb-lstm": tiny + ["--arch", "lstm"],
             "handwriting": hw + ["--arch", "hmlstm"], "handwriting-lstm": hw + ["--arch", "lstm"]}
    for r in runs:
        r.options, r.batch = sizes[r.name], 8
        r.check_model = None if r.check_model is None else ("tiny-lstm-3x16" if "lstm" in r.check_model else "tiny-3x16")
    return runs


# ----------------------------------------------------------------------------- budget


@dataclass
class Plan:
    budget: float
    checks: float
    speed: float
    startup: float      # interpreter, torch, data loading before a run's clock starts
    final_valid: float  # a run's own last validation after its time limit
    eval: float
    compress: float
    pack: float
    reserve: float

    def train_window(self, now: float) -> float:
        """Seconds from `now` (since the start) until the runs must have ended."""
        return self.budget - self.eval - self.compress - self.pack - self.reserve - now


GPU_PLAN = dict(checks=45, speed=40, startup=30, final_valid=25, eval=40, compress=25, pack=15, reserve=10)
DRY_PLAN = dict(checks=8, speed=10, startup=20, final_valid=8, eval=25, compress=25, pack=5, reserve=5)
# (the dry run's eval: seven `hmgen eval` processes, each importing torch, on a 2-core CPU beside other work; 10 s
# cut the first one off on a slow day, 2026-12-08)


class Log:
    """Print and keep: everything printed goes to stdout and to shot.log."""

    def __init__(self, path: Path):
        self.f = open(path, "w")
        self.t0 = time.time()

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.f.write(text + "\n")
        self.f.flush()

    def elapsed(self) -> float:
        return time.time() - self.t0


def child_env(threads: int) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_child(cmd: list[str], timeout: float, log_path: Path, env: dict, stdout_path: Path | None = None) -> int | None:
    """Run cmd with a wall-clock limit; stderr (and stdout unless stdout_path) into log_path.
    Returns the exit status, or None when it was stopped at the limit."""
    with open(log_path, "ab") as err, open(stdout_path or log_path, "ab") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True)
        try:
            return p.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            stop(p)
            return None


def stop(p: subprocess.Popen, grace: float = 5) -> None:
    """SIGINT (hmgen exits cleanly), then SIGKILL the process group."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5)):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# ----------------------------------------------------------------------------- 1-2: checks and speed


def device_info(log: Log, device: str) -> dict:
    import torch
    info = {"torch": torch.__version__, "python": sys.version.split()[0], "device": device}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("shot: no CUDA device (use --dry-run on a CPU machine)")
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    cuda=torch.version.cuda, multiprocessors=p.multi_processor_count)
    try:
        info["constriction"] = subprocess.run([sys.executable, "-c", "import constriction, importlib.metadata as m; print(m.version('constriction'))"],
                                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["constriction"] = None
    try:   # the archive's adaptive part (hmgen.archive.adaptive) is numba-compiled on every device
        info["numba"] = subprocess.run([sys.executable, "-c", "import numba; print(numba.__version__)"],
                                       capture_output=True, text=True, timeout=60).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["numba"] = None
    if not info["numba"]:
        info["constriction"] = None          # compress cannot run: the step is skipped with a note
    log(f"device: {info.get('gpu', 'CPU')}; torch {info['torch']}; python {info['python']}; "
        f"constriction {info['constriction'] or 'not importable'}; numba {info['numba'] or 'not importable'}")
    return info


def run_checks(log: Log, work: Path, runs: list[Run], device: str, timeout: float, env: dict) -> dict:
    """check_fast.py on the runs' model shapes, float32 (what trains). -> {(model, path): pass}."""
    models = list(dict.fromkeys(r.check_model for r in runs if r.check_model))   # the first run's first
    out = work / "checks.jsonl"
    batch = str(max(r.batch for r in runs if r.check_model))
    paths = "eager,compiled" if device == "cuda" else "eager"     # the paths `hmgen train --fast` can take
    cmd = [sys.executable, str(HERE / "check_fast.py"), "--device", device, "--models", ",".join(models),
           "--dtypes", "float32", "--batch", batch, "--seq-len", "20", "--paths", paths, "--json", str(out)]
    rc = run_child(cmd, timeout, work / "logs" / "checks.log", env)
    rows = read_jsonl(out)
    log(f"checks ({'cut off at ' + str(round(timeout)) + ' s' if rc is None else 'exit ' + str(rc)}):")
    for r in rows:
        log(f"  {r['model']:>16} {r['path']:<9} {'PASS' if r['pass'] else 'FAIL'}  max rel. error {r['max_rel_error']:.2e} "
            f"({r['where'] or '-'}), {r['seconds']} s")
    return {(r["model"], r["path"]): bool(r["pass"]) for r in rows}


def run_speed(log: Log, work: Path, device: str, batch: int, timeout: float, env: dict, dry: bool) -> list[dict]:
    """gpu_speed.py rows (the ones finished within the timeout: it prints each as a JSON line on stderr)."""
    err = work / "logs" / "speed.log"
    # the ceiling, the path the runs use, the reference, the graphed path; then inference (it comes last in
    # gpu_speed.py, so few variants keep it inside the cut-off)
    variants = "cudnn-lstm,fast+compile,reference,fast+compile+graphs" if device == "cuda" \
        else "reference,fast,cudnn-lstm"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--device", device,
           "--configs", "tiny" if dry else "ptb", "--variants", variants, "--batch", str(batch),
           "--lanes", "256", "--json", str(work / "speed.json")] + (["--quick"] if dry else ["--steps", "5", "--warmup", "2"])
    rc = run_child(cmd, timeout, err, env)
    rows = [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{") and '"variant"' in line]
    base = next((r["chars_per_s"] for r in rows if r["variant"] == "cudnn-lstm" and r["task"] == "train"
                 and "chars_per_s" in r), None)
    log(f"speed ({'cut off at ' + str(round(timeout)) + ' s: rows so far' if rc is None else 'exit ' + str(rc)}), "
        f"{'3x16' if dry else '3x512'} config, fp32:")
    log("| task | batch | variant | chars/s | x cuDNN LSTM |")
    log("|---|---|---|---:|---:|")
    for r in rows:
        cps = r.get("chars_per_s")
        ratio = f"{cps / base:.2f}" if (cps and base and r["task"] == "train") else ""
        log(f"| {r['task']} | {r['batch']} | {r['variant']} | {f'{cps:,.0f}' if cps else 'failed'} | {ratio} |")
    (work / "speed.rows.json").write_text(json.dumps(rows, indent=1))
    return rows


def pick_fast(run: Run, checks: dict, speed: list[dict], device: str) -> tuple[bool, str]:
    """--fast for this run? Its path must have passed, and must not have been slower than the reference."""
    if run.check_model is None:
        return False, "no fast path for this model"
    path = "compiled" if device == "cuda" else "eager"
    if not checks.get((run.check_model, path)):
        return False, f"{path} path did not pass on {run.check_model}: reference forward"
    variant = "fast+compile" if device == "cuda" else "fast"
    sp = {r["variant"]: r.get("chars_per_s") for r in speed if r["task"] == "train"}
    if sp.get(variant) and sp.get("reference") and sp[variant] < sp["reference"]:
        return False, f"{variant} slower than reference ({sp[variant]:,.0f} < {sp['reference']:,.0f} chars/s)"
    return True, f"{path} path passed"


# ----------------------------------------------------------------------------- 3: training


def train_help() -> str:
    r = subprocess.run(HMGEN_NO_CODER + ["train", "--help"], capture_output=True, text=True,
                       env=child_env(1), cwd=ROOT, timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)


@dataclass
class Job:
    run: Run
    out: Path
    cmd: list[str]
    proc: subprocess.Popen | None = None
    attempt: int = 1
    started: float = 0.0
    rc: int | None = None
    note: str = ""
    lr: float = 0.0
    init: Path | None = None


def train_command(run: Run, data: Path, out: Path, time_limit: float, lr: float, device: str, threads: int,
                  fast: bool, init: Path | None, warmup: int) -> list[str]:
    spec = run.data.split(":", 1)
    corpus = f"{spec[0]}:{data / spec[1]}" if len(spec) == 2 else str(data / spec[0])
    cmd = HMGEN_NO_CODER + ["train", corpus, "--out", str(out), "--time-limit", str(round(time_limit)),
           "--batch-size", str(run.batch), "--lr", str(lr), "--warmup", str(warmup), "--device", device,
           "--threads", str(threads), "--ckpt-every", "1000000", "--log-every", "20", "--name", run.name,
           "--json", "-q"] + run.options
    if fast:
        cmd.append("--fast")
    if init is not None:
        cmd += ["--init", str(init)]
    return cmd


def run_training(log: Log, plan: Plan, work: Path, runs: list[Run], data: Path, device: str, threads: int,
                 fast: dict, init_dir: Path | None, can_init: bool, warmup: int) -> dict[str, Job]:
    window = plan.train_window(log.elapsed())
    deadline = log.t0 + plan.budget - plan.eval - plan.compress - plan.pack - plan.reserve
    limit = max(window - plan.startup - plan.final_valid, 5)
    log(f"\ntraining: {len(runs)} runs at once, --time-limit {limit:.0f} s each, all stopped by "
        f"{deadline - log.t0:.0f} s after the start")
    jobs: dict[str, Job] = {}
    for r in runs:
        init = None
        if init_dir is not None and (init_dir / f"{r.name}.json").is_file():
            if can_init:
                init = init_dir / r.name
            else:
                log(f"  {r.name}: {init_dir / r.name} present but `hmgen train` has no --init: trained from scratch")
        out = work / "runs" / r.name
        cmd = train_command(r, data, out, limit, r.lr, device, threads, fast[r.name], init, warmup)
        jobs[r.name] = Job(r, out, cmd, lr=r.lr, init=init)
        log(f"  {r.name}: batch {r.batch}, lr {r.lr} (recipe {r.recipe[1]} at {r.recipe[0]}, sqrt-scaled), "
            f"warm-up {warmup}, {'--fast' if fast[r.name] else 'reference forward'}"
            f"{', warm start from ' + str(init) if init else ''}")
        log("    hmgen " + " ".join(cmd[len(HMGEN_NO_CODER):]))
    env = child_env(threads)

    def launch(job: Job):
        (work / "logs").mkdir(exist_ok=True)
        with open(work / "logs" / f"{job.run.name}.{job.attempt}.log", "ab") as err, \
                open(work / "logs" / f"{job.run.name}.{job.attempt}.json", "wb") as out:
            job.proc = subprocess.Popen(job.cmd, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True)
        job.started = time.time()

    for job in jobs.values():
        launch(job)
    last_status = time.time()
    while any(j.proc.poll() is None for j in jobs.values()):
        now = time.time()
        if now >= deadline:
            for j in jobs.values():
                if j.proc.poll() is None:
                    j.note += " stopped at the deadline;"
                    stop(j.proc)
            break
        for j in jobs.values():
            rc = j.proc.poll()
            if rc not in (None, 0) and j.attempt == 1 and deadline - now > 0.5 * window and not j.note:
                # failed early: once more in its own folder — without the warm start if it had one (weights
                # that do not fit), else at half the learning rate (it diverged, most likely)
                j.lr = j.lr if j.init else j.lr / 2
                j.note = (f" attempt 1 failed (exit {rc}), restarted {'without --init' if j.init else ''}"
                          f" with lr {j.lr};")
                log(f"  {j.run.name}:{j.note}")
                j.attempt, j.out, j.init = 2, j.out.with_name(j.run.name + ".2"), None
                left = deadline - now - plan.startup - plan.final_valid
                j.cmd = train_command(j.run, data, j.out, max(left, 5), j.lr, device, threads,
                                      fast[j.run.name], None, warmup)
                launch(j)
        if now - last_status >= (5 if device == "cpu" else 30):
            last_status = now
            log(f"  [{log.elapsed():4.0f} s] " + "; ".join(progress(j) for j in jobs.values()))
        time.sleep(0.5)
    for j in jobs.values():
        j.rc = j.proc.wait()
    log(f"  [{log.elapsed():4.0f} s] training done: " + "; ".join(f"{j.run.name} exit {j.rc}" for j in jobs.values()))
    return jobs


def progress(job: Job) -> str:
    recs = [r for r in read_jsonl(job.out / "metrics.jsonl") if "step" in r and "event" not in r]
    if not recs:
        return f"{job.run.name} starting"
    last = next((r for r in reversed(recs) if "loss" in r), recs[-1])
    speed = last.get("symbols_per_s") or last.get("points_per_s")
    fig = next((f"valid {r.get('valid_bpc', r.get('valid_nll_line'))}" for r in reversed(recs)
                if "valid_bpc" in r or "valid_nll_line" in r), "")
    return f"{job.run.name} step {last['step']} loss {last.get('loss')} {speed or '-'}/s {fig}".strip()


# ----------------------------------------------------------------------------- 4-6: export, eval, compress


def export(log: Log, jobs: dict[str, Job], dest: Path) -> dict[str, dict]:
    """best.{safetensors,json} of each run -> dest/NAME.*; float16 where the float32 total would not fit."""
    from safetensors.torch import load_file, save_file

    from hmgen.fs import file_sha256
    dest.mkdir(parents=True, exist_ok=True)
    found = {n: best_of(j) for n, j in jobs.items() if best_of(j) is not None}
    sizes = {n: (b.with_suffix(".safetensors")).stat().st_size for n, b in found.items()}
    order = sorted(found, key=lambda n: (not jobs[n].run.ship, n))       # shipped models first
    half, total = set(), sum(sizes.values())
    for n in sorted(found, key=lambda n: -sizes[n]):                    # largest first to float16
        if total <= TAR_CAP - 4 * 2**20:
            break
        half.add(n)
        total -= sizes[n] // 2
    result = {}
    for n in order:
        tensors = load_file(str(found[n].with_suffix(".safetensors")))
        if n in half:   # big float matrices only; small vectors (biases, gains, style banks) stay float32
            tensors = {k: (v.half() if v.is_floating_point() and v.numel() >= 4096 else v) for k, v in tensors.items()}
        w = dest / f"{n}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(w))
        meta = json.loads(found[n].with_suffix(".json").read_text())
        meta.update(name=n, weights_sha256=file_sha256(w), weights_dtype="float16" if n in half else "float32")
        (dest / f"{n}.json").write_text(json.dumps(meta, indent=2) + "\n")
        result[n] = {"path": str(dest / n), "bytes": w.stat().st_size, "dtype": meta["weights_dtype"]}
    for n in jobs:
        if n not in found:
            log(f"  {n}: no best model (no validation finished)")
    log("export: " + ", ".join(f"{n} {r['dtype']} {r['bytes'] / 2**20:.1f} MiB" for n, r in result.items()))
    return result


def evaluate(log: Log, work: Path, jobs: dict[str, Job], exported: dict, data: Path, device: str,
             timeout: float, env: dict, threads: int) -> dict:
    """`hmgen eval` of every exported text model on its evaluation splits, all at once."""
    procs = []
    for n, j in jobs.items():
        if n not in exported:
            continue
        for label, spec, split in j.run.evals:
            name, _, rest = spec.partition(":")
            corpus = f"{name}:{data / rest}" if rest else str(data / name)
            f = work / "eval" / f"{n}.{label}.json"
            f.parent.mkdir(exist_ok=True)
            # PTB: hmgen eval's default 16 streams, so that `hmgen eval ptb:DIR --split test -m MODEL` here
            # reproduces the figure; English validation (1.8 MB): 64 streams, 4x fewer sequential steps
            streams = "16" if name == "ptb" else "64"
            cmd = HMGEN_NO_CODER + ["eval", corpus] + (["--split", split] if split else []) + [
                "-m", exported[n]["path"], "--device", device, "--streams", streams, "--json", "-q",
                "--threads", str(threads)]
            with open(f, "wb") as out, open(work / "logs" / "eval.log", "ab") as err:
                procs.append((n, label, f, subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT,
                                                            start_new_session=True)))
    end = time.time() + timeout
    figures: dict = {}
    for n, label, f, p in procs:
        try:
            p.wait(timeout=max(end - time.time(), 1))
        except subprocess.TimeoutExpired:
            stop(p)
        try:
            r = json.loads(f.read_text())
            figures.setdefault(n, {})[f"{label}_bpc"] = round(r["bpc"], 4)
            figures[n][f"{label}_symbols"] = r["symbols"]
            figures[n][f"{label}_layers"] = r.get("layers")
        except (ValueError, KeyError, OSError):
            figures.setdefault(n, {})[f"{label}_bpc"] = None
    for n, j in jobs.items():     # handwriting: the run's own last validation (NLL per line)
        s = read_summary(j)
        if "best_valid_nll" in s:
            figures.setdefault(n, {})["valid_nll_line"] = s["best_valid_nll"]
    (work / "eval.json").write_text(json.dumps(figures, indent=1))
    return figures


def best_of(job: Job) -> Path | None:
    """The run's best model (after a restart: the restart's, else the first attempt's)."""
    for d in (job.out, job.out.with_name(job.run.name)):
        if (d / "best.json").is_file():
            return d / "best"
    return None


def read_summary(job: Job) -> dict:
    f = job.out.parents[1] / "logs" / f"{job.run.name}.{job.attempt}.json"
    try:
        return json.loads(f.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError, OSError):
        return {}


SAMPLE_BYTES = 256_000


def compress_check(log: Log, work: Path, exported: dict, data: Path, device: str, timeout: float, env: dict,
                   have_constriction: bool) -> dict:
    """Archives of the first SAMPLE_BYTES of English validation text, made on `device`, decoded there too. Format 5
    runs the file's models on the CPU, one thread per independent block (text is coded with and without the network),
    so 1 MB would take the CPU's time, not the GPU's, and pass the step's 25 s; 256 kB is one block, not timed
    against that limit on a GPU yet."""
    if not have_constriction:
        log("compress: skipped (constriction or numba cannot be imported: carry constriction's wheel, see README.md)")
        return {"skipped": "constriction or numba not importable"}
    valid = next(iter(sorted((data / "english").glob("*valid*"))), None)
    if valid is None:
        return {"skipped": "no English validation file"}
    raw = (lzma.open(valid).read() if valid.suffix == ".xz" else valid.read_bytes())[:SAMPLE_BYTES]
    sample = work / "sample.txt"
    sample.write_bytes(raw)
    (work / "archives").mkdir(exist_ok=True)
    out, end = {}, time.time() + timeout
    for n in ("english", "english-large"):   # the default candidate and the big one
        if n not in exported or time.time() >= end:
            continue
        hmz = work / "archives" / f"{n}.sample.hmz"
        m = ["-m", exported[n]["path"], "--device", device, "-q"]
        t = time.time()
        rc = run_child([sys.executable, "-m", "hmgen", "compress", "-c", str(sample)] + m, end - t,
                       work / "logs" / "compress.log", env, stdout_path=hmz)
        t_enc = time.time() - t
        back = work / "back.txt"
        back.unlink(missing_ok=True)
        t = time.time()
        rc2 = run_child([sys.executable, "-m", "hmgen", "decompress", "-c", str(hmz)] + m, end - t,
                        work / "logs" / "compress.log", env, stdout_path=back) if rc == 0 else None
        t_dec = time.time() - t
        if rc != 0:   # cut off or failed: no partial archive comes back
            hmz.unlink(missing_ok=True)
            out[n] = {"error": "cut off at the time limit" if rc is None else f"compress exit {rc}"}
            log(f"compress {n}: {out[n]['error']}")
            continue
        ok = None if rc2 is None else (rc2 == 0 and back.read_bytes() == raw)     # None: cut off
        out[n] = {"input": f"first {len(raw)} bytes of {valid.name}", "archive_bytes": hmz.stat().st_size,
                  "bpc": round(8 * hmz.stat().st_size / len(raw), 4), "compress_s": round(t_enc, 1),
                  "decompress_s": round(t_dec, 1), "round_trip": ok, "device": device}
        log(f"compress {n}: {len(raw):,} -> {hmz.stat().st_size:,} bytes ({out[n]['bpc']} bpc), "
            f"{t_enc:.1f} s / {t_dec:.1f} s on {device} (process start-up included), round trip {verdict(ok)}")
    (work / "compress.json").write_text(json.dumps(out, indent=1))
    return out


# ----------------------------------------------------------------------------- 7: pack


def pack(log: Log, work: Path, out: Path, jobs: dict[str, Job], exported: dict) -> list[str]:
    """One tar in priority order (shipped models first; what does not fit is left out and listed), cut into
    parts of at most PART bytes. Returns what was left out."""
    # a run's returned weights are its runs/NAME/best.* (the exported files: what models/bundle.py and
    # `hmgen eval -m` read), beside its metrics.jsonl
    items: list[tuple[Path, str]] = [(work / "summary.md", "summary.md")]
    for n in sorted(exported, key=lambda n: (not jobs[n].run.ship, n)):
        items += [(work / "models" / f"{n}.json", f"runs/{n}/best.json")]
    for name in ("eval.json", "checks.jsonl", "speed.json", "speed.rows.json", "compress.json", "plan.json"):
        items.append((work / name, name))
    for n, j in jobs.items():
        for d in sorted(work.joinpath("runs").glob(f"{n}*")):
            for f in ("metrics.jsonl", "checkpoint.json"):
                items.append((d / f, f"runs/{d.name}/{f}"))
    items += [(f, f"logs/{f.name}") for f in sorted((work / "logs").glob("*"))]
    items += [(f, f"archives/{f.name}") for f in sorted((work / "archives").glob("*"))]
    items += [(work / "models" / f"{n}.safetensors", f"runs/{n}/best.safetensors")
              for n in sorted(exported, key=lambda n: (not jobs[n].run.ship, -exported[n]["bytes"]))]
    left_out, total = [], 0
    tar_path = work / "shot.tar"
    with tarfile.open(tar_path, "w") as tar:
        for src, arc in items:
            if not src.is_file():
                continue
            size = src.stat().st_size + 1024
            if total + size > TAR_CAP:
                left_out.append(arc)
                continue
            tar.add(src, arcname=arc)
            total += size
    size = tar_path.stat().st_size
    if size <= PART:
        shutil.copy(tar_path, out / "shot.tar")
    else:
        with open(tar_path, "rb") as f:
            for i in range((size + PART - 1) // PART):
                (out / f"shot.tar.part-{i:02d}").write_bytes(f.read(PART))
    log(f"pack: shot.tar {size / 2**20:.1f} MiB in {max(1, (size + PART - 1) // PART)} file(s)"
        + (f"; left out (no room): {', '.join(left_out)}" if left_out else ""))
    return left_out


def check_out(out: Path) -> list[str]:
    """The tool's return limits, checked on $OUT."""
    files = [f for f in out.rglob("*") if f.is_file()]
    problems = []
    if len(files) > 8:
        problems.append(f"{len(files)} files (limit 8)")
    if sum(f.stat().st_size for f in files) > 64 * 2**20:
        problems.append("over 64 MiB together")
    for f in files:
        rel = f.relative_to(out)
        if f.stat().st_size > 16 * 2**20:
            problems.append(f"{rel}: over 16 MiB")
        if len(rel.parts) > 3 or not all(re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in rel.parts):
            problems.append(f"{rel}: too deep or odd name")
    return problems


# ----------------------------------------------------------------------------- dry-run data


def make_dry_data(root: Path) -> Path:
    """Tiny stand-ins in the carried folder's layout: english/, ptb/ (xz), iam/ (the aligned npz), init/."""
    import numpy as np
    rng = np.random.default_rng(0)
    words = "the of and to in is was for that with as on by at from his her it an be this which".split()
    text = lambda n: (" ".join(rng.choice(words, n)) + "\n").encode()   # noqa: E731
    (root / "english").mkdir(parents=True)
    (root / "english" / "english.tiny.train.txt.xz").write_bytes(lzma.compress(text(6000)))
    (root / "english" / "english.valid.txt.xz").write_bytes(lzma.compress(text(800)))
    (root / "ptb").mkdir()
    for split, n in (("train", 4000), ("valid", 500), ("test", 500)):
        chars = " ".join("_" if c == " " else c for c in text(n).decode().replace("\n", " "))
        (root / "ptb" / f"ptb.char.{split}.txt.xz").write_bytes(lzma.compress(chars.encode()))
    (root / "iam").mkdir()
    lines, starts, first = [], [0], []
    split = ["train"] * 40 + ["val_v"] * 6 + ["test_f"] * 6
    for i in range(len(split)):
        n = int(rng.integers(60, 120))
        d = np.stack([rng.integers(1, 12, n), rng.integers(-6, 7, n), (rng.random(n) < 0.1).astype(int)], 1)
        d[-1, 2] = 1
        lines.append(d)
        starts.append(starts[-1] + n)
        first.append([0, 0])
    texts = [" ".join(rng.choice(words, 3)) for _ in split]
    np.savez(root / "iam" / "iamondb_lines.npz", strokes=np.concatenate(lines).astype(np.int16),
             line_start=np.array(starts), first_xy=np.array(first, np.int32), text=np.array(texts),
             line_id=np.array([f"a{i:02d}-000-{i:02d}" for i in range(len(split))]), split=np.array(split))
    # a warm start for one run (what prepare.sh --init makes): an untrained model of english's dry-run shape, with
    # today's training cell (LN on c only: a model of the older per-term-LN cell no longer fits a new run)
    import torch

    from hmgen.cell.reference import CharLM, ModelConfig
    from hmgen.modelio import save_model
    from hmgen.text.data import Vocab
    torch.manual_seed(0)
    (root / "init").mkdir()                        # save_model writes into an existing folder only
    save_model(root / "init" / "english", CharLM(ModelConfig(vocab_size=256, arch="hmlstm", embed_dim=8, hidden=[16, 16, 16],
                                                             out_embed=16, ln_terms=False)), Vocab("bytes"))
    return root


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, generated data, ~125 s")
    ap.add_argument("--budget", type=float, help="wall-clock seconds for everything (default 540; dry run 125)")
    ap.add_argument("--data", type=Path, help="the carried data folder (default data/shot; dry run: generated)")
    ap.add_argument("--out", type=Path, help="where the returned files go (default $OUT)")
    ap.add_argument("--work", type=Path, help="run folders (default runs/shot; dry run: a temporary folder)")
    ap.add_argument("--init", type=Path, help="warm start: a folder of NAME.safetensors/.json (default data/shot/init)")
    ap.add_argument("--only", help="comma-separated run names (default: all)")
    ap.add_argument("--english", type=int, default=256, help="width of the `english` model (README.md's CPU table)")
    ap.add_argument("--warmup", type=int, help="LR warm-up steps of every run (default 200; dry run 5)")
    ap.add_argument("--threads", type=int, help="torch threads per process (default 2; dry run 1)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    plan = Plan(budget=args.budget or (125 if dry else 540), **(DRY_PLAN if dry else GPU_PLAN))
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:
        ap.error("no --out and no $OUT")
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="shot-") if dry else None
    work = args.work or (Path(tmp.name) / "work" if dry else ROOT / "runs" / "shot")
    if work.exists() and any(work.iterdir()):
        ap.error(f"{work} is not empty (an earlier shot's runs): remove it or give --work")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log = Log(out / "shot.log")
    data = args.data or (make_dry_data(Path(tmp.name) / "data") if dry else ROOT / "data" / "shot")
    init_dir = args.init or data / "init"
    init_dir = init_dir if init_dir and init_dir.is_dir() else None
    threads = args.threads or (1 if dry else 2)
    warmup = args.warmup if args.warmup is not None else (5 if dry else 200)
    runs = dry_runs() if dry else gpu_runs(args.english)
    if args.only:
        runs = [r for r in runs if r.name in args.only.split(",")]
    env = child_env(threads)

    log(f"hmgen GPU shot{' (DRY RUN: CPU, tiny sizes, generated data)' if dry else ''}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; data {data}; work {work}; out {out}")
    t_train = plan.train_window(plan.checks + plan.speed + 5)
    log(f"budget plan ({plan.budget:.0f} s in all): checks {plan.checks:.0f}, speed {plan.speed:.0f}, "
        f"training ~{t_train:.0f} (each run: start-up ~{plan.startup:.0f}, --time-limit "
        f"~{t_train - plan.startup - plan.final_valid:.0f}, own last validation ~{plan.final_valid:.0f}), "
        f"eval {plan.eval:.0f}, compress {plan.compress:.0f}, pack {plan.pack:.0f}, reserve {plan.reserve:.0f}")
    missing = [r.name for r in runs if not (data / r.data.split(":")[-1]).exists()]
    if missing:
        log(f"no data for {', '.join(missing)} under {data}: those runs are left out (benchmarks/gpu/prepare.sh)")
        runs = [r for r in runs if r.name not in missing]

    info = device_info(log, device)
    helptext = train_help()
    can_init = "--init" in helptext
    if init_dir and not can_init:
        log("note: `hmgen train` has no --init yet: warm start unavailable, every run starts from scratch")
    checks = run_checks(log, work, runs, device, plan.checks, env)
    speed = run_speed(log, work, device, max([r.batch for r in runs if r.check_model] or [64]), plan.speed, env, dry)
    fast = {}
    can_fast = "--fast" in helptext
    for r in runs:
        fast[r.name], why = pick_fast(r, checks, speed, device) if can_fast else (False, "hmgen train has no --fast")
        log(f"path {r.name}: {'--fast' if fast[r.name] else 'reference'} ({why})")
    (work / "plan.json").write_text(json.dumps({"plan": plan.__dict__, "info": info, "runs": [
        {"name": r.name, "batch": r.batch, "lr": r.lr, "recipe": r.recipe, "options": r.options, "fast": fast[r.name]}
        for r in runs]}, indent=1))

    jobs = run_training(log, plan, work, runs, data, device, threads, fast, init_dir, can_init, warmup)
    exported = export(log, jobs, work / "models")
    figures = evaluate(log, work, jobs, exported, data, device,
                       max(plan.budget - plan.compress - plan.pack - plan.reserve - log.elapsed(), 5), env, threads)
    comp = compress_check(log, work, exported, data, device,
                          max(plan.budget - plan.pack - plan.reserve - log.elapsed(), 5), env, bool(info["constriction"]))
    for n, f in figures.items():    # the figures of the returned weights go into their JSON
        if n in exported:
            p = work / "models" / f"{n}.json"
            meta = json.loads(p.read_text())
            meta.setdefault("figures", {}).update({k: v for k, v in f.items() if not k.endswith("_layers")}, shot=True)
            p.write_text(json.dumps(meta, indent=2) + "\n")

    summary = summary_table(jobs, exported, figures, comp, info, fast)
    log("\n" + summary)
    (work / "summary.md").write_text(summary + "\n")
    left_out = pack(log, work, out, jobs, exported)
    (out / "summary.md").write_text(summary + ("\n\nleft out of shot.tar: " + ", ".join(left_out) if left_out else "") + "\n")
    problems = check_out(out)
    log(f"$OUT: {', '.join(sorted(f.name for f in out.iterdir()))}; "
        f"{'within the return limits' if not problems else 'PROBLEMS: ' + '; '.join(problems)}; "
        f"{log.elapsed():.0f} s of {plan.budget:.0f}")
    if tmp is not None:
        tmp.cleanup()
    return 1 if problems else 0


def verdict(ok: bool | None) -> str:
    return "not finished (cut off at the time limit)" if ok is None else "OK" if ok else "FAILED"


def summary_table(jobs, exported, figures, comp, info, fast) -> str:
    rows = [f"device {info.get('gpu', 'CPU')}, torch {info['torch']}", "",
            "| run | batch | lr | path | steps | train s | chars/s (last log) | valid | test | weights | note |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for n, j in jobs.items():
        s = read_summary(j)
        recs = [r for r in read_jsonl(j.out / "metrics.jsonl") if "loss" in r]
        speed = (recs[-1].get("symbols_per_s") or recs[-1].get("points_per_s")) if recs else None
        f = figures.get(n, {})
        valid = f.get("valid_bpc", f.get("valid_nll_line"))
        e = exported.get(n)
        rows.append(f"| {n} | {j.run.batch} | {j.lr:g}{' (init)' if j.init else ''} | {'fast' if fast[n] else 'ref'} | {s.get('step', '-')} | "
                    f"{s.get('train_seconds', '-')} | {speed or '-'} | {valid if valid is not None else '-'} | "
                    f"{f.get('test_bpc', '') or ''} | {e['dtype'] + ' ' + format(e['bytes'] / 2**20, '.1f') + ' MiB' if e else 'none'} | "
                    f"exit {j.rc}{';' + j.note if j.note else ''} |")
    rows.append("\nvalid/test: bpc of the returned weights (handwriting: NLL nats/line, the run's own validation)")
    for n, c in (comp or {}).items():
        if isinstance(c, dict) and "error" in c:
            rows.append(f"compress {n}: {c['error']}")
        elif isinstance(c, dict):
            rows.append(f"compress {n}: {c['bpc']} bpc on {c['input']}, {c['compress_s']} s / {c['decompress_s']} s "
                        f"on {c['device']}, round trip {verdict(c['round_trip'])}")
        else:
            rows.append(f"compress: {c}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
