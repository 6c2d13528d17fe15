"""Training and inference throughput of the HM-LSTM paths against PyTorch's (cuDNN) nn.LSTM, same run.

    python benchmarks/gpu_speed.py                          # on the GPU machine: JSON to $OUT/gpu_speed.json
    python benchmarks/gpu_speed.py --device cpu --quick     # smoke test anywhere (tiny step counts)

Training = forward + cross-entropy + backward + grad-norm clip + Adam step, on (batch, T) segments with
the state carried (truncated BPTT), timed after warm-up between device synchronisations; figures are
characters/s = batch * T * steps / seconds. Configurations:
  ptb      the paper's PTB model: vocab 50, embed 128, 3 x 512, output embedding 512, batch 64 x 100
  bundled  the bundled English models: vocab 256, embed 128, 3 x 192, output embedding 192, batch 64 x 100
  tiny     3 x 16, for smoke tests
Variants:
  reference        CharLM.forward (HMLSTM.step, one layer at a time)
  fast             hmgen.cell.fast.fast_forward, eager
  fast+compile     ... with the per-step cell through torch.compile (CUDA, or --cpu-compile)
  fast+graphs      ... with the segment's forward and backward captured as CUDA graphs (CUDA)
  fast+compile+graphs
  cudnn-lstm       nn.LSTM x 3 single-layer modules (cuDNN on CUDA), same embedding, same gated output
                   module over the three layers' h (no layer norm: cuDNN has none)
  cudnn-stack      nn.LSTM(num_layers=3), which cuDNN can pipeline across layers, output module on top only
Inference (no grad, --lanes lanes): `segment` = teacher-forced (lanes, T) segments (what a coder's encoder
can batch), `step` = one symbol per lane per call with sampling (what decoding and sampling must do).
TF32 is off for every path unless --tf32 (cuDNN would otherwise use it and plain matmuls not).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hmgen.cell.fast import GraphedSegment, fast_forward, t1_weight  # noqa: E402
from hmgen.cell.reference import CharLM, ModelConfig, OutputModule, count_parameters  # noqa: E402

CONFIGS = {
    "ptb": dict(vocab=50, embed=128, hidden=[512, 512, 512], out=512),
    "bundled": dict(vocab=256, embed=128, hidden=[192, 192, 192], out=192),
    "tiny": dict(vocab=50, embed=8, hidden=[16, 16, 16], out=16),          # benchmarks/gpu/shot.py --dry-run
}


class CudnnLM(nn.Module):
    """The same input and output modules around PyTorch's fused LSTM."""

    def __init__(self, c: dict, stack: bool):
        super().__init__()
        self.stack = stack
        self.embed = nn.Embedding(c["vocab"], c["embed"])
        sizes = [c["embed"]] + c["hidden"]
        if stack:   # one module: cuDNN can run the layers as a wavefront; only the top layer's h comes out
            self.rnn = nn.ModuleList([nn.LSTM(c["embed"], c["hidden"][0], num_layers=len(c["hidden"]), batch_first=True)])
            self.out = OutputModule(c["hidden"][-1:], c["out"], c["vocab"])
        else:
            self.rnn = nn.ModuleList([nn.LSTM(sizes[l], sizes[l + 1], batch_first=True) for l in range(len(c["hidden"]))])
            self.out = OutputModule(c["hidden"], c["out"], c["vocab"])

    def initial_state(self, batch, device):
        return [(torch.zeros(r.num_layers, batch, r.hidden_size, device=device),) * 2 for r in self.rnn]

    def forward(self, x, state, a=1.0):
        h, hs, new = self.embed(x), [], []
        for r, s in zip(self.rnn, state):
            h, s = r(h, s)
            hs.append(h)
            new.append(s)
        return self.out(torch.cat(hs, dim=-1)), new, None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, warmup: int, steps: int, device) -> float:
    """Seconds per call of fn() after warm-up, between synchronisations."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / steps


def train_speed(name, c, variant, args, device) -> float:
    """Characters per second of training for one configuration and variant."""
    torch.manual_seed(0)
    B, T = args.batch, args.seq_len
    if variant.startswith("cudnn"):
        model = CudnnLM(c, stack=variant == "cudnn-stack").to(device)
    else:
        model = CharLM(ModelConfig(vocab_size=c["vocab"], arch="hmlstm", embed_dim=c["embed"], hidden=c["hidden"],
                                   out_embed=c["out"])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.randint(0, c["vocab"], (B, T), device=device)
    y = torch.randint(0, c["vocab"], (B, T), device=device)
    box = {"state": model.initial_state(B, device)}
    compiled = "compile" in variant
    if variant == "reference" or variant.startswith("cudnn"):
        forward = model
    elif "graphs" in variant:
        forward = GraphedSegment(model, B, T, compiled=compiled)
    else:
        def forward(x_, s, a):
            return fast_forward(model, x_, s, a, compiled=compiled)

    def step():
        logits, state, _ = forward(x, box["state"], 1.0)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        box["state"] = [tuple(t.detach() for t in layer) for layer in state]

    sec = timed(step, args.warmup, args.steps, device)
    return B * T / sec, count_parameters(model)


@torch.no_grad()
def infer_speed(c, variant, mode, args, device) -> float:
    """Characters per second of no-grad inference over `lanes` lanes."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=c["vocab"], arch="hmlstm", embed_dim=c["embed"], hidden=c["hidden"],
                               out_embed=c["out"])).to(device).eval()
    lanes, T = args.lanes, (args.seq_len if mode == "segment" else 1)
    x = torch.randint(0, c["vocab"], (lanes, T), device=device)
    box = {"state": model.initial_state(lanes, device), "x": x}
    compiled = "compile" in variant
    packed = t1_weight(model.rnn)            # built once: no gradient needed at inference

    def call():
        if variant == "reference":
            logits, box["state"], _ = model(box["x"], box["state"])
        else:
            logits, box["state"], _ = fast_forward(model, box["x"], box["state"], compiled=compiled, packed=packed)
        if mode == "step":   # sample the next symbol of every lane
            box["x"] = torch.multinomial(torch.softmax(logits[:, -1].float(), -1), 1)

    n = args.steps * (1 if mode == "segment" else args.seq_len)
    return lanes * T / timed(call, args.warmup, n, device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", default="ptb,bundled")
    ap.add_argument("--variants", default="reference,fast,fast+compile,fast+graphs,fast+compile+graphs,cudnn-lstm,cudnn-stack")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--lanes", type=int, default=256, help="inference lanes")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps (smoke test)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs)")
    ap.add_argument("--cpu-compile", action="store_true", help="also try torch.compile on CPU (slow to compile)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and cuDNN (all paths alike)")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-infer", action="store_true")
    ap.add_argument("--json", help="output file (default: $OUT/gpu_speed.json, else benchmarks/results/)")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s)"
    cuda_only = {"fast+graphs", "fast+compile+graphs"} | (set() if args.cpu_compile else {"fast+compile"})

    rows = []
    for name in args.configs.split(","):
        c = CONFIGS[name]
        for variant in ([] if args.no_train else args.variants.split(",")):
            if device.type != "cuda" and variant in cuda_only:
                continue
            row = {"config": name, "task": "train", "variant": variant, "batch": f"{args.batch}x{args.seq_len}"}
            try:
                row["chars_per_s"], row["parameters"] = train_speed(name, c, variant, args, device)
            except Exception as e:   # a broken path is a row in the table, not the end of the run
                row["error"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        if args.no_infer:
            continue
        for mode in ("segment", "step"):
            for variant in ("reference", "fast", "fast+compile"):
                if device.type != "cuda" and variant in cuda_only:
                    continue
                row = {"config": name, "task": f"infer-{mode}", "variant": variant,
                       "batch": f"{args.lanes}x{args.seq_len if mode == 'segment' else 1}"}
                try:
                    row["chars_per_s"] = infer_speed(c, variant, mode, args, device)
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)

    # ratios against the cuDNN baseline of the same configuration
    for r in rows:
        base = next((b for b in rows if b["config"] == r["config"] and b["task"] == "train"
                     and b["variant"] == "cudnn-lstm" and "chars_per_s" in b), None)
        if r["task"] == "train" and base and "chars_per_s" in r:
            r["vs_cudnn_lstm"] = round(r["chars_per_s"] / base["chars_per_s"], 3)
    meta = {"device": hw, "torch": torch.__version__, "tf32": args.tf32, "warmup": args.warmup,
            "steps": args.steps, "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv)}

    print(f"\n{hw}, torch {torch.__version__}, fp32 (TF32 {'on' if args.tf32 else 'off'}), "
          f"{args.warmup} warm-up + {args.steps} timed steps\n")
    print("| config | task | batch | variant | chars/s | × cuDNN-style LSTM |")
    print("|---|---|---|---|---:|---:|")
    for r in rows:
        speed = f"{r['chars_per_s']:,.0f}" if "chars_per_s" in r else f"failed: {r['error'][:60]}"
        ratio = f"{r['vs_cudnn_lstm']:.2f}" if "vs_cudnn_lstm" in r else ""
        print(f"| {r['config']} | {r['task']} | {r['batch']} | {r['variant']} | {speed} | {ratio} |")

    out = Path(args.json) if args.json else (Path(os.environ["OUT"]) / "gpu_speed.json" if os.environ.get("OUT")
                                             else Path("benchmarks/results") / f"gpu_speed-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
