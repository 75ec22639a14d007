"""The torch backend on a GPU: parity, then the speed of a BERT-base distillation step.

One script, ready to run on a CUDA machine (and on the CPU at a tiny size, which CI does so
that it cannot rot):

1. **Op parity**: every array operation of the torch backend on the device against the NumPy
   reference backend (float32), and the low-precision products (bf16 ``autocast``) against
   float32 within bf16's tolerance.
2. **BERT parity** against transformers' ``BertForSequenceClassification`` with the same
   weights: logits and every parameter's gradient, in fp32 and in bf16 (ours under
   ``minidistill.core.autocast``, transformers under ``torch.autocast``; each compared with the
   fp32 reference, ours must be no worse than 2× transformers' own bf16 error).
3. **A distillation step** (teacher 12 × 768, student 6 × 768, batch 32 × 128, soft KD with
   T = 2 + hidden-state MSE on a uniform map, AdamW): our torch backend against transformers +
   torch doing the same step, interleaved round by round, medians; peak memory of each, and
   MFU (model FLOPs per second over the GPU's dense peak) on a known GPU.

    python benchmarks/gpu_check.py                      # on a CUDA machine: writes RESULTS.md's gpu_check block
    python benchmarks/gpu_check.py --device cpu --tiny  # the smoke run CI does (writes nothing)

Exits with status 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import minidistill as md  # first: sets the thread-pool environment
import numpy as np

from minidistill.backends import get_backend
from minidistill.compress import HiddenMSE, LayerMap, SoftKD, total_loss
from minidistill.core import autocast
from minidistill.models import BertConfig, BertForSequenceClassification
from minidistill.train import AdamW, param_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import today, write_block  # noqa: E402

#: dense peak FLOP/s by GPU name fragment: (bf16, fp32) — from the vendors' data sheets
PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12), "L4": (121e12, 30e12)}

# ---------------------------------------------------------------------------- op parity


def op_cases(rng):
    """``name -> (fn(ops, arrays) -> result arrays, input arrays)`` over every hot path and the
    generic array operations the core uses."""
    f = np.float32
    a = rng.standard_normal((3, 5, 7)).astype(f)
    b = rng.standard_normal((3, 7, 4)).astype(f)
    x2 = rng.standard_normal((12, 16)).astype(f)
    w = rng.standard_normal((8, 16)).astype(f)
    bias = rng.standard_normal(8).astype(f)
    res = rng.standard_normal((12, 8)).astype(f)
    s = rng.standard_normal((2, 3, 5, 5)).astype(f)
    mask = np.ones((2, 1, 1, 5), dtype=bool)
    mask[0, ..., 3:] = False
    g4 = rng.standard_normal((2, 3, 5, 5)).astype(f)
    h = rng.standard_normal((10, 16)).astype(f)
    lw, lb = rng.standard_normal(16).astype(f), rng.standard_normal(16).astype(f)
    gh = rng.standard_normal((10, 16)).astype(f)
    ids = rng.integers(0, 9, size=(10,))
    q, k, v = (rng.standard_normal((2, 3, 5, 4)).astype(f) for _ in range(3))
    i8a = rng.integers(-127, 128, size=(6, 40)).astype(np.int8)
    i8b = rng.integers(-127, 128, size=(5, 40)).astype(np.int8)
    p, m1, m2, gr = (rng.standard_normal((4, 6)).astype(f) for _ in range(4))
    m2 = np.abs(m2)

    def ln_bwd(o, h, lw, lb, gh):
        _, mean, rstd = o.layer_norm_forward(h, lw, lb, 1e-12)
        return o.layer_norm_backward(gh, h, lw, mean, rstd)

    def adamw(o, p, m1, m2, gr):
        p, m1, m2 = o.copy(p), o.copy(m1), o.copy(m2)
        o.adamw_update(p, gr, m1, m2, 1e-2, 0.9, 0.999, 1e-8, 0.01, 3)
        return p, m1, m2

    def attention(o, q, k, v, mask):
        if not o.fused_attention:  # the reference: the materialised composition
            probs = o.softmax_forward(o.matmul(q, o.transpose(k, (0, 1, 3, 2))), mask, 0.5)
            return o.matmul(probs, v)
        return o.attention_forward(q, k, v, mask, 0.5, 0.0, grad=False)[0]

    return {
        "matmul (batched)": (lambda o, a, b: o.matmul(a, b), (a, b)),
        "linear_forward (bias + residual)": (lambda o, x, w, b, r: o.linear_forward(x, w, b, r), (x2, w, bias, res)),
        "bias_add": (lambda o, y, b, r: o.bias_add(o.copy(y), b, r), (res, bias, res)),
        "gelu_forward": (lambda o, x: o.gelu_forward(x), (x2,)),
        "gelu_backward": (lambda o, x, g: o.gelu_backward(x, g), (x2, x2 * 0.5)),
        "softmax_forward (mask, scale)": (lambda o, s, m: o.softmax_forward(s, m, 0.3), (s, mask)),
        "softmax_backward": (lambda o, s, m, g: o.softmax_backward(o.softmax_forward(s, m, 0.3), g, 0.3), (s, mask, g4)),
        "log_softmax_forward": (lambda o, s, m: o.log_softmax_forward(s, m), (s, np.broadcast_to(mask, s.shape).copy())),
        "log_softmax_backward": (lambda o, s, g: o.log_softmax_backward(o.log_softmax_forward(s), g), (s, g4)),
        "layer_norm_forward": (lambda o, h, w, b: o.layer_norm_forward(h, w, b, 1e-12), (h, lw, lb)),
        "layer_norm_backward": (ln_bwd, (h, lw, lb, gh)),
        "embedding_backward": (lambda o, i, g: o.embedding_backward(i, g, 9), (ids, gh)),
        "adamw_update": (adamw, (p, m1, m2, gr)),
        "quantize_int8": (lambda o, x: o.quantize_int8(x, 0.02), (x2,)),
        "int8_matmul": (lambda o, a, b: o.int8_matmul(a, b), (i8a, i8b)),
        "attention (fused vs materialised)": (attention, (q, k, v, mask)),
        "exp / log / tanh / sqrt": (lambda o, x: (o.exp(x), o.log(o.exp(x)), o.tanh(x), o.sqrt(x * x)), (x2,)),
        "sum / max / argmax": (lambda o, s: (o.sum(s, axis=-1), o.max(s, axis=(1, 3)), o.argmax(s, -1)), (s,)),
        "reshape / transpose / concat / broadcast": (
            lambda o, a: (o.reshape(a, (15, 7)), o.transpose(a, (2, 0, 1)), o.concat([a, a], 1),
                          o.broadcast_to(a[:1], (4, 5, 7))), (a,)),
        "where / maximum": (lambda o, x: (o.where(x > 0, x, 0.0), o.maximum(x, 0.1)), (x2,)),
    }


def check_ops(device: str) -> list[tuple[str, float, bool]]:
    """``(name, max abs error, ok)`` for each op on ``torch:device`` against NumPy."""
    ref, dev = get_backend("numpy"), get_backend(f"torch:{device}")
    rows = []
    for name, (fn, arrays) in op_cases(np.random.default_rng(0)).items():
        want = fn(ref, *arrays)
        got = fn(dev, *[dev.asarray(x) for x in arrays])
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        err = max(_max_err(dev.to_numpy(g), w) for g, w in zip(got, want))
        rows.append((name, err, err <= 2e-4))
    # the low-precision products: bf16 on float32 inputs, float32 out, within bf16's precision
    from minidistill.core import Tensor, functions as F

    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((64, 96)).astype(np.float32), rng.standard_normal((48, 96)).astype(np.float32)
    tx, tw = Tensor(x, backend=dev), Tensor(w, backend=dev)
    exact = x @ w.T
    with autocast("bfloat16"):
        y = F.linear(tx, tw).numpy()
    rel = float(np.linalg.norm(y - exact) / np.linalg.norm(exact))
    rows.append(("linear under autocast(bf16)", rel, 1e-4 < rel < 2e-2 and y.dtype == np.float32))
    return rows


def _max_err(got, want) -> float:
    """Largest absolute difference; equal infinities (masked log-probabilities) count as equal."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    return float(np.max(np.where(same, 0.0, np.abs(got - want)))) if got.size else 0.0


# -------------------------------------------------------------------------- BERT parity
def _inputs(batch, seq, vocab, rng):
    ids = rng.integers(1000, vocab - 1, size=(batch, seq))
    mask = np.ones_like(ids)
    mask[0, seq // 2:] = 0  # one padded row
    ids[mask == 0] = 0
    labels = rng.integers(0, 2, size=batch)
    return ids, mask, labels


def check_bert(device: str, config: BertConfig, batch: int, seq: int) -> list[tuple[str, float, bool]]:
    """Our BERT against transformers with the same weights: logits and gradients, fp32 and bf16
    (training mode without dropout, so that both compute the same function)."""
    import torch
    import transformers

    config = BertConfig.from_dict({**config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"},
                                     attn_implementation="sdpa")
    peer = transformers.BertForSequenceClassification(hf_cfg).to(device).train()
    ops = get_backend(f"torch:{device}")
    with md.use_backend(ops):
        ours = BertForSequenceClassification(config)
    ours.load_state_dict({k: v.detach().cpu().numpy() for k, v in peer.state_dict().items()
                          if not k.endswith("position_ids")})
    ours.train()
    ids, mask, labels = _inputs(batch, seq, config.vocab_size, np.random.default_rng(0))
    t_ids, t_mask, t_labels = (torch.tensor(a, device=device) for a in (ids, mask, labels))

    def peer_run(lp):
        peer.zero_grad()
        ctx = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if lp else _null()
        with ctx:
            out = peer(input_ids=t_ids, attention_mask=t_mask, labels=t_labels)
        out.loss.backward()
        return out.logits.detach().float().cpu().numpy(), {n: p.grad.float().cpu().numpy() for n, p in peer.named_parameters()}

    def our_run(lp):
        ours.zero_grad()
        with autocast("bfloat16" if lp else None):
            out = ours(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        return out.logits.numpy(), {n: ops.to_numpy(p.grad) for n, p in ours.named_parameters()}

    ref_logits, ref_grads = peer_run(False)
    rows = []
    for lp in (False, True):
        logits, grads = our_run(lp)
        tag = "bf16" if lp else "fp32"
        l_err = _rel(logits, ref_logits)
        g_err = _grad_rel(grads, ref_grads)
        if not lp:
            rows += [(f"BERT logits {tag}", l_err, l_err < 1e-4), (f"BERT gradients {tag}", g_err, g_err < 1e-3)]
        else:
            p_logits, p_grads = peer_run(True)
            p_l, p_g = _rel(p_logits, ref_logits), _grad_rel(p_grads, ref_grads)
            rows += [(f"BERT logits {tag} (transformers: {p_l:.1e})", l_err, l_err < max(2 * p_l, 1e-3)),
                     (f"BERT gradients {tag} (transformers: {p_g:.1e})", g_err, g_err < max(2 * p_g, 1e-2))]
    return rows


def _null():
    import contextlib

    return contextlib.nullcontext()


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / (np.linalg.norm(b) + 1e-30))


def _grad_rel(grads, ref) -> float:
    """The gradients' relative error over all parameters together (as one vector)."""
    num = sum(float(np.sum((np.asarray(grads[n], np.float64) - ref[n]) ** 2)) for n in ref)
    den = sum(float(np.sum(np.asarray(ref[n], np.float64) ** 2)) for n in ref)
    return (num / den) ** 0.5


# --------------------------------------------------------------------- distillation step
def step_flops(t_cfg: BertConfig, s_cfg: BertConfig, batch: int, seq: int) -> float:
    """Model FLOPs of one step: the teacher's forward, the student's forward and backward
    (3× its forward); per layer 2 · tokens · (4 D² + 2 D F) for the matrices and 4 · B · T² · D
    for the attention products."""
    def forward(c):
        tokens = batch * seq
        per_layer = 2 * tokens * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size)
        per_layer += 4 * batch * seq * seq * c.hidden_size
        return c.num_hidden_layers * per_layer
    return forward(t_cfg) + 3 * forward(s_cfg)


def distill_contenders(device: str, t_cfg: BertConfig, s_cfg: BertConfig, batch: int, seq: int, precision: str):
    """``{"minidistill": step, "transformers": step}``: the same distillation step each way."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    lp = precision == "bf16"
    rng = np.random.default_rng(0)
    ids, mask, _ = _inputs(batch, seq, t_cfg.vocab_size, rng)
    ratio = t_cfg.num_hidden_layers // s_cfg.num_hidden_layers
    pairs = [(i, i * ratio) for i in range(s_cfg.num_hidden_layers + 1)]

    # transformers + torch
    torch.manual_seed(0)
    mk = lambda c: transformers.BertForSequenceClassification(  # noqa: E731
        transformers.BertConfig(**{k: v for k, v in c.to_dict().items() if k != "model_type"},
                                attn_implementation="sdpa")).to(device)
    p_teacher, p_student = mk(t_cfg).eval(), mk(s_cfg).train()
    p_opt = torch.optim.AdamW(p_student.parameters(), lr=1e-5)
    t_ids, t_mask = torch.tensor(ids, device=device), torch.tensor(mask, device=device)
    amp = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)) if lp else _null
    m = t_mask.unsqueeze(-1).float()

    def peer_step():
        with torch.no_grad(), amp():
            t_out = p_teacher(input_ids=t_ids, attention_mask=t_mask, output_hidden_states=True)
        with amp():
            s_out = p_student(input_ids=t_ids, attention_mask=t_mask, output_hidden_states=True)
        tl, sl = t_out.logits.float() / 2.0, s_out.logits.float() / 2.0
        kd = torch.nn.functional.kl_div(torch.log_softmax(sl, -1), torch.log_softmax(tl, -1), log_target=True,
                                        reduction="batchmean") * 4.0
        mse = sum((((s_out.hidden_states[i].float() - t_out.hidden_states[j].float()) ** 2) * m).sum()
                  / (m.sum() * s_cfg.hidden_size) for i, j in pairs)
        (kd + mse).backward()
        p_opt.step()
        p_opt.zero_grad(set_to_none=True)

    # ours, on the torch backend
    ops = get_backend(f"torch:{device}")
    with md.use_backend(ops):
        md.manual_seed(0)
        teacher, student = BertForSequenceClassification(t_cfg).eval(), BertForSequenceClassification(s_cfg).train()
    objectives = [SoftKD(temperature=2.0),
                  HiddenMSE(LayerMap(tuple(pairs), s_cfg.num_hidden_layers, t_cfg.num_hidden_layers), s_cfg.hidden_size,
                            t_cfg.hidden_size)]
    for obj in objectives:
        obj.to(ops)
    opt = AdamW(param_groups(student, 0.01), lr=1e-5)
    b_ids, b_mask = ops.asarray(ids), ops.asarray(mask)
    batch_dict = {"attention_mask": b_mask}
    low = "bfloat16" if lp else None

    def our_step():
        with md.no_grad(), autocast(low):
            t_out = teacher(b_ids, attention_mask=b_mask, output_hidden_states=True)
        with autocast(low):
            s_out = student(b_ids, attention_mask=b_mask, output_hidden_states=True)
            loss = total_loss(objectives, s_out, t_out, batch_dict)
        loss.backward()
        opt.step()
        opt.zero_grad()
        student.zero_grad()

    return {"minidistill": our_step, "transformers": peer_step}


def time_steps(contenders: dict, device: str, rounds: int) -> dict:
    """Median seconds per step (interleaved rounds, after two warm-up steps each) and peak memory."""
    import torch

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for fn in contenders.values():
        fn(), fn()
    times = {n: [] for n in contenders}
    peak = {}
    for _ in range(rounds):
        for name, fn in contenders.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
            if cuda:
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated())
    return {n: {"seconds": statistics.median(ts), "peak_gb": peak.get(n, float("nan")) / 2**30}
            for n, ts in times.items()}


# --------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models and batch (the CI smoke run)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--write", action="store_true", help="write RESULTS.md's gpu_check block (default on a GPU)")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu for the smoke run", file=sys.stderr)
        return 2
    if args.tiny:
        t_cfg = BertConfig(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=64, num_labels=2)
        batch, seq, rounds = 4, 16, min(args.rounds, 3)
    else:
        t_cfg, batch, seq, rounds = BertConfig(num_labels=2), 32, 128, args.rounds
    s_cfg = BertConfig.from_dict({**t_cfg.to_dict(), "num_hidden_layers": t_cfg.num_hidden_layers // 2})
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or platform.machine())
    print(f"# {name}, torch {torch.__version__}, {today()}")

    rows = check_ops(args.device) + check_bert(args.device, t_cfg if args.tiny else BertConfig(
        num_labels=2, num_hidden_layers=2), 4 if args.tiny else 8, seq)
    failed = [r for r in rows if not r[2]]
    for label, err, ok in rows:
        print(f"  {'ok  ' if ok else 'FAIL'} {label:58s} {err:.2e}")

    flops = step_flops(t_cfg, s_cfg, batch, seq)
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    timing = {}
    for precision in ("bf16", "fp32"):
        res = time_steps(distill_contenders(args.device, t_cfg, s_cfg, batch, seq, precision), args.device, rounds)
        timing[precision] = res
        ratio = res["transformers"]["seconds"] / res["minidistill"]["seconds"]
        print(f"\ndistillation step, {precision}, teacher {t_cfg.num_hidden_layers}×{t_cfg.hidden_size}, student "
              f"{s_cfg.num_hidden_layers}×{s_cfg.hidden_size}, batch {batch}×{seq} (median of {rounds}):")
        for who, r in res.items():
            mfu = flops / r["seconds"] / (peak[0] if precision == "bf16" else peak[1]) if peak else None
            r["mfu"] = mfu
            print(f"  {who:12s} {r['seconds'] * 1e3:8.1f} ms  peak {r['peak_gb']:6.2f} GB  "
                  f"MFU {'n/a' if mfu is None else f'{mfu:.1%}'}")
        print(f"  ours / transformers speed: {ratio:.2f}×")
        res["ratio"] = ratio

    if args.write or (args.device.startswith("cuda") and not args.tiny):
        lines = [f"GPU check ({name}, torch {torch.__version__}, {today()}): "
                 f"`python benchmarks/gpu_check.py`. Parity: {len(rows) - len(failed)}/{len(rows)} checks pass.", "",
                 "| step | precision | ours ms | transformers ms | ours / transformers | ours peak GB | "
                 "transformers peak GB | ours MFU | transformers MFU |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for precision, res in timing.items():
            o, t = res["minidistill"], res["transformers"]
            fmt = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
            lines.append(f"| distill {t_cfg.num_hidden_layers}×{t_cfg.hidden_size} → {s_cfg.num_hidden_layers}×"
                         f"{s_cfg.hidden_size}, {batch}×{seq} | {precision} | {o['seconds'] * 1e3:.1f} | "
                         f"{t['seconds'] * 1e3:.1f} | {res['ratio']:.2f}× | {o['peak_gb']:.2f} | {t['peak_gb']:.2f} | "
                         f"{fmt(o['mfu'])} | {fmt(t['mfu'])} |")
        write_block("gpu_check", lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
