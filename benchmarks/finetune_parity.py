"""Fine-tune MiniLM-L6 on rotten_tomatoes with the same recipe in minidistill and in
transformers, and compare dev accuracy (the issue asks for agreement within 1 point).

Same recipe on both sides: the same batches in the same order (minidistill's seeded,
length-bucketed batches), AdamW with weight decay 0.01 except biases and LayerNorm, linear
warmup (10%) then decay, gradient clipping at 1.0, dropout 0.1, the same initial classifier
weights, ``--steps`` steps of 32 at max length 64. Only dropout masks differ.

    python benchmarks/finetune_parity.py [--steps 320] [--backend numba] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import time

import minidistill as md
import numpy as np

from minidistill.data import Tokenizer, load_dataset, model_inputs
from minidistill.models import BertForSequenceClassification
from minidistill.train import TrainConfig, Trainer, evaluate


def run_ours(path, tok, train, dev, steps, backend, seed, lr):
    md.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(path, backend=backend, num_labels=2)
    init_head = {k: v.copy() for k, v in model.state_dict().items() if k.startswith("classifier.")}
    cfg = TrainConfig(lr=lr, max_steps=steps, max_length=64, batch_size=32, seed=seed, progress=False)
    start = time.perf_counter()
    Trainer(model, tok, train, dev, cfg).train()
    return evaluate(model, tok, dev, 64, 64)["accuracy"], time.perf_counter() - start, init_head


def run_transformers(path, tok, train, dev, steps, seed, lr, init_head):
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(str(path), num_labels=2)
    with torch.no_grad():
        for k, v in init_head.items():
            dict(model.named_parameters())[k].copy_(torch.from_numpy(np.asarray(v, dtype=np.float32)))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    plain = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}], lr=lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    step, epoch, start = 0, 0, time.perf_counter()
    while step < steps:
        for batch in train.batches(tok, 32, 64, shuffle=True, seed=seed, epoch=epoch):
            model.train()
            out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step >= steps:
                break
        epoch += 1
    model.eval()
    preds = []
    with torch.no_grad():
        for batch in dev.batches(tok, 64, 64, shuffle=False):
            inputs = {k: torch.from_numpy(v) for k, v in model_inputs(batch).items()}
            preds.append(model(**inputs).logits.argmax(-1).numpy())
    return float((np.concatenate(preds) == dev.labels).mean()), time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=320)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--backend", default="numba")
    p.add_argument("--seeds", default="0")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    path = md.assets.path("minilm-l6")
    tok = Tokenizer.from_pretrained(path)
    train, dev = load_dataset("rotten_tomatoes", "train"), load_dataset("rotten_tomatoes", "dev")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        ours, t_ours, head = run_ours(path, tok, train, dev, args.steps, args.backend, seed, args.lr)
        theirs, t_theirs = run_transformers(path, tok, train, dev, args.steps, seed, args.lr, head)
        rows.append({"seed": seed, "minidistill": ours, "transformers": theirs, "seconds_minidistill": t_ours,
                     "seconds_transformers": t_theirs})
        print(f"seed {seed}: dev accuracy minidistill ({args.backend}) {ours:.4f} in {t_ours:.0f} s | "
              f"transformers {theirs:.4f} in {t_theirs:.0f} s | difference {100 * (ours - theirs):+.2f} points")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
