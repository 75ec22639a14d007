"""CompAct on MiniLM-L6 / rotten_tomatoes: memory kept for backward and accuracy, by rank.

(a) Memory of one training step (batch 32 × length 64, fp32, numba backend) for full
    activations and CompAct at each rank, interleaved over rounds, medians: the bytes the tape
    keeps for backward (total and in the Linear layers) and the peak of traced allocations
    during forward + backward (``tracemalloc``, which sees every NumPy array).
(b) Accuracy: fine-tune the pretrained MiniLM-L6 with the teacher's recipe (2 epochs, lr 1e-4,
    batch 32, length 64) with CompAct at the chosen ranks; full fine-tuning is the teacher's row.

    python benchmarks/compact_memory.py --teacher runs/teacher [--ranks 64,16,4] [--train-ranks 16,4]
        [--epochs 2] [--memory-only] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tracemalloc
from pathlib import Path

import numpy as np

import minidistill as md
from minidistill.cli import DataSection, FinetuneConfig, ModelSection, finetune, load_splits
from minidistill.compress.compressed_activations import CompActConfig, disable_compact, enable_compact, saved_activation_bytes
from minidistill.data import Tokenizer
from minidistill.models import BertForSequenceClassification
from minidistill.train import TrainConfig

from _tables import machine, today, write_block  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "compact_memory.json"


def step_memory(model, batch, rank: int | None) -> dict:
    """Tape bytes and traced peak of one forward + backward with CompAct at ``rank`` (None: off)."""
    if rank:
        enable_compact(model, CompActConfig(rank=rank))
    try:
        model.train()
        model.zero_grad()
        tracemalloc.start()
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        tape = saved_activation_bytes(out.loss, list(model.parameters()))
        out.loss.backward()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        linear = tape["by_op"].get("Linear", 0) + tape["by_op"].get("CompActLinear", 0)
        return {"tape": tape["total"], "tape_linear": linear, "peak": peak, "optimizer": _adam_state_bytes(model)}
    finally:
        model.zero_grad()
        if rank:
            disable_compact(model)


def _adam_state_bytes(model) -> int:
    """Bytes of AdamW's moments after one step on the gradients just computed (CompAct's
    compressed weights keep theirs in d_out × r); the weights are restored afterwards."""
    from minidistill.train import AdamW

    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.data.copy() for p in params]
    opt = AdamW(params, lr=1e-4)
    opt.step()
    total = sum(int(a.nbytes) for st in opt.state.values() for a in st.values())
    for p, d in zip(params, saved):
        p.data[...] = d
    return total


def memory_table(ranks, rounds: int = 3) -> list[dict]:
    """(a): every rank measured in each round, in turn; medians."""
    path = md.assets.path("minilm-l6")
    tok = Tokenizer.from_pretrained(path)
    train, _, _ = load_splits(DataSection(task="rotten_tomatoes"))
    with md.use_backend("numba"):
        model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    batch = next(iter(train.batches(tok, 32, 64, shuffle=True, seed=0, bucket=False)))
    configs = [None, *ranks]
    step_memory(model, batch, None)  # warm-up: kernels compiled, caches filled
    samples = {c: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            samples[c].append(step_memory(model, batch, c))
    rows = []
    for c in configs:
        med = {k: statistics.median(s[k] for s in samples[c]) for k in ("tape", "tape_linear", "peak", "optimizer")}
        rows.append({"rank": c, **med})
    base = rows[0]
    for r in rows:
        r["tape_ratio"], r["peak_ratio"] = r["tape"] / base["tape"], r["peak"] / base["peak"]
    return rows


def train_rows(ranks, teacher_dir: Path, epochs: int, out: str, done: dict) -> dict:
    """(b): fine-tune with CompAct at each rank (finished rows are kept in the JSON)."""
    t = json.loads((teacher_dir / "metrics.json").read_text())
    done["full"] = {"dev": t["dev"]["accuracy"], "test": t["test"]["accuracy"], "wall_s": t["train_seconds"]}
    for r in ranks:
        key = f"rank{r}"
        cfg = FinetuneConfig(model=ModelSection(path="minilm-l6", backend="numba"), data=DataSection(task="rotten_tomatoes"),
                             train=TrainConfig(lr=1e-4, epochs=epochs, max_length=64, batch_size=32, warmup_ratio=0.1,
                                               progress=False),
                             compressed_activations=CompActConfig(rank=r), output_dir=f"{out}/{key}")
        print(f"== CompAct rank {r}: fine-tuning MiniLM-L6, {epochs} epochs", flush=True)
        res = finetune(cfg)
        done[key] = {"dev": res["dev"]["accuracy"], "test": res["test"]["accuracy"], "wall_s": res["train_seconds"],
                     "dir": res["output_dir"]}
        print(f"   dev {done[key]['dev']:.4f} test {done[key]['test']:.4f} in {res['train_seconds']:.0f} s", flush=True)
        RESULTS.write_text(json.dumps(done, indent=1))
    return done


def lines(mem: list[dict], acc: dict, meta: dict) -> list[str]:
    """The RESULTS.md block."""
    out = [f"## CompAct: memory kept for backward and accuracy, by rank · {meta['date']} · {meta['machine']}", "",
           "One training step of MiniLM-L6 (batch 32 × 64 tokens, fp32, numba backend): *tape* = bytes the tape keeps "
           "for backward (each buffer once, parameters excluded), *in Linear* = the part kept by the Linear layers, "
           f"*peak* = peak of traced allocations during forward + backward (`tracemalloc`); {meta['rounds']} interleaved "
           "rounds, medians. Accuracy: fine-tuning the pretrained MiniLM-L6 with the teacher's recipe "
           f"({meta['epochs']} epochs, lr 1e-4, batch 32, length 64), CompAct's compressed variant (scale 2, gap 500), "
           "the attention output projection uncompressed.", "",
           "| activations | tape | in Linear | peak | Adam state | tape vs full | peak vs full | dev acc | test acc | wall |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in mem:
        key = "full" if r["rank"] is None else f"rank{r['rank']}"
        a = acc.get(key, {})
        name = "full (plain backward)" if r["rank"] is None else f"CompAct r = {r['rank']}"
        dev = f"{a['dev']:.4f}" if "dev" in a else "—"
        test = f"{a['test']:.4f}" if "test" in a else "—"
        wall = f"{a['wall_s']:.0f} s" if "wall_s" in a else "—"
        out.append(f"| {name} | {r['tape'] / 2**20:.1f} MiB | {r['tape_linear'] / 2**20:.1f} MiB | {r['peak'] / 2**20:.1f} MiB "
                   f"| {r['optimizer'] / 2**20:.1f} MiB "
                   f"| {100 * r['tape_ratio']:.0f}% | {100 * r['peak_ratio']:.0f}% | {dev} | {test} | {wall} |")
    return out + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="runs/teacher")
    ap.add_argument("--ranks", default="64,16,4", help="ranks for the memory table")
    ap.add_argument("--train-ranks", default="16,4", help="ranks to fine-tune with")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--out", default="runs/compact")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",") if r]
    RESULTS.parent.mkdir(exist_ok=True)
    done = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    done = {k: v for k, v in done.items() if not k.startswith("_")}
    if not args.memory_only:
        done = train_rows([int(r) for r in args.train_ranks.split(",") if r], Path(args.teacher), args.epochs,
                          args.out, done)
    mem = memory_table(ranks, args.rounds)
    for r in mem:
        print(f"rank {r['rank']}: tape {r['tape'] / 2**20:.1f} MiB ({100 * r['tape_ratio']:.0f}%), "
              f"peak {r['peak'] / 2**20:.1f} MiB ({100 * r['peak_ratio']:.0f}%)", flush=True)
    meta = {"date": today(), "machine": machine(), "epochs": args.epochs, "rounds": args.rounds}
    RESULTS.write_text(json.dumps({**done, "_memory": mem, "_meta": meta}, indent=1))
    if not args.no_write:
        write_block("compact_memory", lines(mem, done, meta))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
