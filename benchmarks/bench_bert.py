"""Speed of the BERT forward pass and training step on every backend, against transformers.

Measures, in one process and interleaved round by round (the machine is shared and noisy,
so only ratios against the peer measured in the same round mean anything), on the real
MiniLM-L6 checkpoint at batch 32 × 128 tokens:

* forward (inference, no tape) and a full training step (forward, backward, AdamW) of a
  sequence classifier on the numpy, numba and torch backends, with ``transformers`` on
  torch as the peer;
* each fused Numba kernel against its NumPy composition (the reference backend) and
  torch's op, and the teaching matmul kernel against BLAS.

Prints medians and ratios to the peer (> 1 means faster than the peer).

    python benchmarks/bench_bert.py                # full size (a few minutes on 2 cores)
    python benchmarks/bench_bert.py --quick        # small shapes, for a smoke run
    python benchmarks/bench_bert.py --device cuda  # torch backend and peer on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import minidistill as md  # first: sets the thread-pool environment before NumPy loads
import numpy as np

from minidistill.backends import get_backend
from minidistill.models import BertConfig, BertForSequenceClassification
from minidistill.train import AdamW, param_groups


def _sync(device):
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn, device="cpu") -> float:
    """Seconds for one call of ``fn``."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleave(contenders: dict, rounds: int, device="cpu", skip=None) -> dict:
    """Run every contender once per round (after one warm-up each); median seconds."""
    skip = skip or {}
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            if r < skip.get(name, rounds):
                times[name].append(timed(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items() if ts}


# ---------------------------------------------------------------- model level
def model_contenders(path, batch, seq, device, dtype, autocast, backends):
    import torch
    import transformers

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 29000, size=(batch, seq))
    mask = np.ones_like(ids)
    labels = rng.integers(0, 2, size=batch)
    if path is None:  # BERT-base-sized random weights
        cfg = BertConfig(num_labels=2)
        md.manual_seed(0)
        hf_cfg = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"})
        peer = transformers.BertForSequenceClassification(hf_cfg)
    else:
        transformers.logging.set_verbosity_error()
        peer = transformers.BertForSequenceClassification.from_pretrained(str(path), num_labels=2)
    peer = peer.to(device)
    peer_opt = torch.optim.AdamW(peer.parameters(), lr=1e-5)
    tids, tmask, tlabels = (torch.tensor(a, device=device) for a in (ids, mask, labels))

    def peer_forward():
        peer.eval()
        with torch.no_grad(), _autocast(torch, device, autocast):
            peer(input_ids=tids, attention_mask=tmask)

    def peer_train():
        peer.train()
        with _autocast(torch, device, autocast):
            loss = peer(input_ids=tids, attention_mask=tmask, labels=tlabels).loss
        loss.backward()
        peer_opt.step()
        peer_opt.zero_grad()

    fwd_all, train_all = {"transformers": peer_forward}, {"transformers": peer_train}
    state = {k: v.detach().float().cpu().numpy() for k, v in peer.state_dict().items()}
    for name in backends:
        spec = f"torch:{device}" if name == "torch" else name
        ops = get_backend(spec)
        with md.use_backend(ops):
            model = BertForSequenceClassification(BertConfig.from_dict(peer.config.to_dict()))
        model.load_state_dict({k: v for k, v in state.items() if not k.endswith("position_ids")})
        opt = AdamW(param_groups(model, 0.01), lr=1e-5)
        ids_b, mask_b = ops.asarray(ids), ops.asarray(mask)
        # bf16: mixed precision as in training (float32 weights, bf16 products), as the peer's autocast
        low = "bfloat16" if dtype == "bfloat16" and name == "torch" else None

        def forward(model=model, ids_b=ids_b, mask_b=mask_b, low=low):
            model.eval()
            with md.no_grad(), md.core.autocast(low):
                model(ids_b, attention_mask=mask_b)

        def train(model=model, opt=opt, ids_b=ids_b, mask_b=mask_b, low=low):
            model.train()
            with md.core.autocast(low):
                loss = model(ids_b, attention_mask=mask_b, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()

        fwd_all[name], train_all[name] = forward, train
    return fwd_all, train_all


def _autocast(torch, device, autocast):
    import contextlib

    if autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, autocast))


# --------------------------------------------------------------- kernel level
def kernel_contenders(batch, seq, hidden, ffn, heads):
    import torch

    ref, nb = get_backend("numpy"), get_backend("numba")
    rng = np.random.default_rng(0)
    f32 = np.float32
    x_ffn = rng.standard_normal((batch * seq, ffn)).astype(f32)
    g_ffn = rng.standard_normal((batch * seq, ffn)).astype(f32)
    scores = rng.standard_normal((batch, heads, seq, seq)).astype(f32)
    mask = np.ones((batch, 1, 1, seq), dtype=bool)
    mask[: batch // 2, ..., seq // 2:] = False
    probs = ref.softmax_forward(scores, mask)
    h = rng.standard_normal((batch * seq, hidden)).astype(f32)
    gh = rng.standard_normal((batch * seq, hidden)).astype(f32)
    w, b = rng.standard_normal(hidden).astype(f32), rng.standard_normal(hidden).astype(f32)
    ids = rng.integers(0, 30522, size=batch * seq)
    stats_ref = ref.layer_norm_forward(h, w, b, 1e-12)[1:]
    stats_nb = nb.layer_norm_forward(h, w, b, 1e-12)[1:]
    y_out = rng.standard_normal((batch * seq, hidden)).astype(f32)
    t_out = torch.from_numpy(y_out.copy())
    T = {k: torch.from_numpy(v) for k, v in dict(x=x_ffn, g=g_ffn, s=scores, p=probs, h=h, gh=gh, w=w, b=b).items()}
    tmask = torch.from_numpy(mask)
    tids = torch.from_numpy(ids)
    TF = torch.nn.functional

    def t_gelu_bwd():
        x = T["x"].clone().requires_grad_()
        TF.gelu(x).backward(T["g"])

    def t_ln_bwd():
        x = T["h"].clone().requires_grad_()
        w_ = T["w"].clone().requires_grad_()
        b_ = T["b"].clone().requires_grad_()
        TF.layer_norm(x, (hidden,), w_, b_, 1e-12).backward(T["gh"])

    def t_softmax_bwd():
        s = T["s"].clone().requires_grad_()
        torch.softmax(s, -1).backward(T["p"])

    def t_emb_bwd():
        table = torch.zeros(30522, hidden)
        table.index_add_(0, tids, T["gh"])

    return {
        "gelu forward": {"numpy": lambda: ref.gelu_forward(x_ffn), "numba": lambda: nb.gelu_forward(x_ffn),
                         "torch": lambda: TF.gelu(T["x"])},
        "gelu backward": {"numpy": lambda: ref.gelu_backward(x_ffn, g_ffn), "numba": lambda: nb.gelu_backward(x_ffn, g_ffn),
                          "torch": t_gelu_bwd},
        "masked softmax forward": {"numpy": lambda: ref.softmax_forward(scores, mask, 0.17),
                                   "numba": lambda: nb.softmax_forward(scores, mask, 0.17),
                                   "torch": lambda: torch.softmax((T["s"] * 0.17).masked_fill(~tmask, float("-inf")), -1)},
        "softmax backward": {"numpy": lambda: ref.softmax_backward(probs, scores), "numba": lambda: nb.softmax_backward(probs, scores),
                             "torch": t_softmax_bwd},
        "layer norm forward": {"numpy": lambda: ref.layer_norm_forward(h, w, b, 1e-12),
                               "numba": lambda: nb.layer_norm_forward(h, w, b, 1e-12),
                               "torch": lambda: TF.layer_norm(T["h"], (hidden,), T["w"], T["b"], 1e-12)},
        "layer norm backward": {"numpy": lambda: ref.layer_norm_backward(gh, h, w, *stats_ref),
                                "numba": lambda: nb.layer_norm_backward(gh, h, w, *stats_nb), "torch": t_ln_bwd},
        "embedding grad scatter": {"numpy": lambda: ref.embedding_backward(ids, gh, 30522),
                                   "numba": lambda: nb.embedding_backward(ids, gh, 30522), "torch": t_emb_bwd},
        # in place on a preallocated output, as the linear layer uses it (the values drift
        # from call to call, which does not matter for timing)
        "bias + residual epilogue": {"numpy": lambda: ref.bias_add(y_out, w, h),
                                     "numba": lambda: nb.bias_add(y_out, w, h),
                                     "torch": lambda: t_out.add_(T["w"]).add_(T["h"])},
    }


def matmul_contenders(m, k, n):
    from minidistill.backends.numba_ops import matmul

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    return {"BLAS (numpy @)": lambda: a @ b, "numba teaching kernel": lambda: matmul(a, b)}, 2.0 * m * k * n


# ----------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small shapes and few rounds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu", help="device of the torch backend and the peer")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--model", default="minilm-l6", choices=["minilm-l6", "bert-base-random"])
    p.add_argument("--backends", default=None, help="comma-separated (default: numpy,numba,torch on CPU; torch on GPU)")
    p.add_argument("--batch", type=int, default=32, help="sequences per batch (128 tokens each)")
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    batch, seq = (8, 32) if args.quick else (args.batch, 128)
    rounds = 2 if args.quick else args.rounds
    on_gpu = args.device.startswith("cuda")
    backends = args.backends.split(",") if args.backends else (["torch"] if on_gpu else ["numpy", "numba", "torch"])
    autocast = "bfloat16" if args.dtype == "bfloat16" else None
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "python": sys.version.split()[0], "batch": batch, "seq": seq, "device": args.device,
              "dtype": args.dtype, "model": args.model, "rounds": rounds}
    path = md.assets.path("minilm-l6") if args.model == "minilm-l6" else None
    print(f"# {args.model}, batch {batch} × {seq} tokens, {args.device}, {args.dtype}, median of {rounds} interleaved rounds")

    fwd, train = model_contenders(path, batch, seq, args.device, args.dtype, autocast, backends)
    # the numpy reference is slow (exact erf in Python): time it in fewer rounds
    skip = {"numpy": 1 if not args.quick else rounds}
    for title, contenders in (("forward", fwd), ("training step", train)):
        res = interleave(contenders, rounds, args.device, skip)
        peer = res["transformers"]
        print(f"\n{title}:")
        for name, sec in res.items():
            print(f"  {name:14s} {sec * 1e3:9.1f} ms  {batch / sec:7.1f} seq/s  ratio to peer {peer / sec:5.2f}")
        report[title] = {name: {"seconds": sec, "ratio": peer / sec} for name, sec in res.items()}

    if not args.skip_kernels and not on_gpu:
        hidden, ffn, heads = 384, 1536, 12
        print("\nkernels (ratio = NumPy composition time / kernel time; > 1 is faster than NumPy):")
        report["kernels"] = {}
        for name, contenders in kernel_contenders(batch, seq, hidden, ffn, heads).items():
            res = interleave(contenders, max(rounds, 5))
            ref = res["numpy"]
            print(f"  {name:26s} numpy {ref * 1e3:8.2f} ms | numba {res['numba'] * 1e3:7.2f} ms "
                  f"(×{ref / res['numba']:5.1f}) | torch {res['torch'] * 1e3:7.2f} ms (numba/torch ×{res['torch'] / res['numba']:4.2f})")
            report["kernels"][name] = {k: v for k, v in res.items()}
        contenders, flops = matmul_contenders(batch * seq, hidden, ffn)
        res = interleave(contenders, max(rounds, 3))
        print("\nmatmul (N×384 @ 384×1536):")
        for name, sec in res.items():
            print(f"  {name:24s} {sec * 1e3:8.1f} ms  {flops / sec / 1e9:6.1f} GFLOP/s")
        report["matmul"] = {k: {"seconds": v, "gflops": flops / v / 1e9} for k, v in res.items()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
