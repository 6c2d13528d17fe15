"""GPU check of every fast path against the reference CharLM.forward (tests/test_fast.py covers the eager
path on CPU; the compiled cell and the CUDA graphs need this script on the GPU machine).

    python benchmarks/gpu/check_fast.py                     # CUDA: eager, compiled, graphs, compiled+graphs
    python benchmarks/gpu/check_fast.py --device cpu        # eager only (add --compile: slow to compile)

For each model (paper PTB 3x512 HM-LSTM, bundled 3x192, an unequal-size 3-layer one, and the LSTM
baselines; --models picks some), dtype (--dtypes) (float64, and float32 with TF32 off; the compiled cell in float64 only on the
unequal-size model, to keep compile time down) and path: one forward + backward on random input
and carried state; prints the largest relative error (max |fast - ref| / max |ref|) of logits, final
state, loss and all gradients, the number of z that differ, and PASS/FAIL. Exit status 1 on any FAIL.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hmgen.cell.fast import GraphedSegment, fast_forward  # noqa: E402
from hmgen.cell.reference import CharLM, ModelConfig  # noqa: E402

MODELS = {
    "ptb-3x512": ModelConfig(vocab_size=50, arch="hmlstm", embed_dim=128, hidden=[512, 512, 512], out_embed=512),
    "bundled-3x192": ModelConfig(vocab_size=256, arch="hmlstm", embed_dim=128, hidden=[192, 192, 192], out_embed=192),
    "unequal-64/96/32": ModelConfig(vocab_size=50, arch="hmlstm", embed_dim=32, hidden=[64, 96, 32], out_embed=48),
    "lstm-3x256": ModelConfig(vocab_size=50, arch="lstm", embed_dim=128, hidden=[256, 256, 256], out_embed=256),
    "lstm-3x512": ModelConfig(vocab_size=50, arch="lstm", embed_dim=128, hidden=[512, 512, 512], out_embed=512),
    "tiny-3x16": ModelConfig(vocab_size=50, arch="hmlstm", embed_dim=8, hidden=[16, 16, 16], out_embed=16),  # shot.py --dry-run
    "tiny-lstm-3x16": ModelConfig(vocab_size=50, arch="lstm", embed_dim=8, hidden=[16, 16, 16], out_embed=16),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
TOL = {torch.float64: 1e-9, torch.float32: 2e-4}


def run(model, forward, x, y, state, a):
    """One forward + backward. The loss takes logits, the final h and c and z (all gradient paths)."""
    model.zero_grad(set_to_none=True)
    logits, new, z = forward(x, [tuple(t.detach() for t in layer) for layer in state], a)
    g = torch.Generator(device=x.device).manual_seed(3)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    for h, c, _ in new:
        loss = loss + 0.1 * ((torch.randn(h.shape, generator=g, device=x.device) * h).sum()
                             + (torch.randn(c.shape, generator=g, device=x.device) * c).sum())
    loss = loss + (torch.randn(z.shape, generator=g, device=x.device) * z).sum()
    loss.backward()
    out = {"logits": logits.detach().clone(), "loss": loss.detach().clone()}
    out.update({f"state.{l}.{k}": t.detach().clone() for l, layer in enumerate(new) for k, t in zip("hcz", layer)})
    out.update({f"grad.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return out, z.detach().clone()


def compare(ref, out):
    worst, name = 0.0, ""
    for k, r in ref.items():
        if k not in out:
            return float("inf"), f"{k} missing"
        err = float((out[k].double() - r.double()).abs().max() / r.double().abs().max().clamp(min=1e-30))
        if err > worst:
            worst, name = err, k
    return worst, name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=30)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--compile", action="store_true", help="also check the compiled cell on CPU")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--paths", help="comma-separated subset of eager,compiled,graphs,compiled+graphs")
    ap.add_argument("--json", help="also append one JSON line per row to this file (as rows finish)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cuda = device.type == "cuda"
    paths = ["eager"] + (["compiled"] if cuda or args.compile else []) + (["graphs", "compiled+graphs"] if cuda else [])
    if args.paths:
        paths = [p for p in paths if p in args.paths.split(",")]
    print(f"device: {torch.cuda.get_device_name(device) if cuda else 'CPU'}, torch {torch.__version__}, "
          f"batch {args.batch} x {args.seq_len}, TF32 off")
    print("| model | dtype | path | max rel. error | where | z differing | result |")
    print("|---|---|---|---:|---|---:|---|")
    failed = 0
    for name in args.models.split(","):
        for dtype in (DTYPES[d] for d in args.dtypes.split(",")):
            torch.manual_seed(0)
            model = CharLM(MODELS[name]).to(device, dtype)
            with torch.no_grad():   # move the boundary rows about, so that detectors fire and stay silent
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
            B, T, V = args.batch, args.seq_len, MODELS[name].vocab_size
            x = torch.randint(0, V, (B, T), device=device)
            y = torch.randint(0, V, (B, T), device=device)
            state = [(torch.randn_like(h), torch.randn_like(c), (torch.rand_like(z) < 0.5).to(dtype))
                     for h, c, z in model.initial_state(B, device)]
            if model.rnn.hierarchical:   # the top layer's carried z is always 0
                state[-1] = (state[-1][0], state[-1][1], torch.zeros_like(state[-1][2]))
            a = 1.5
            ref, z_ref = run(model, lambda x_, s, a_: model(x_, s, a_), x, y, state, a)
            for path in paths:
                if "compiled" in path and dtype == torch.float64 and not name.startswith("unequal"):
                    continue   # each compile costs ~10-30 s: float64 compiled on one model is enough
                t_path = time.perf_counter()
                try:
                    if "graphs" in path:
                        seg = GraphedSegment(model, B, T, compiled=path.startswith("compiled"))
                        forward = seg
                    else:
                        def forward(x_, s, a_, c=(path == "compiled")):
                            return fast_forward(model, x_, s, a_, compiled=c)
                    out, z = run(model, forward, x, y, state, a)
                    err, where = compare(ref, out)
                    dz = int((z != z_ref).sum())
                    ok = err <= TOL[dtype] and dz == 0
                except Exception as e:   # report, go on with the other paths
                    err, where, dz, ok = float("nan"), f"{type(e).__name__}: {e}"[:80], -1, False
                failed += not ok
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps({"model": name, "dtype": str(dtype)[6:], "path": path, "max_rel_error": err,
                                            "where": where, "z_differing": dz, "pass": ok,
                                            "seconds": round(time.perf_counter() - t_path, 1)}) + "\n")
                print(f"| {name} | {str(dtype)[6:]} | {path} | {err:.2e} | {where} | {dz} | {'PASS' if ok else 'FAIL'} |",
                      flush=True)
    print(f"\n{'all PASS' if not failed else f'{failed} FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
