"""Data-parallel training on torch.distributed (gloo), launched by torchrun: two processes give
one process's parameters for the same global batch, evaluation sharded over the ranks equals
the single-process one, and a run whose rank is killed resumes from its last checkpoint to the
uninterrupted run's parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minidistill.train import distributed

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]

#: the worker: a tiny BERT trained for 20 steps of 8 examples on 30 toy texts, with dev
#: evaluation every 10 steps; rank r writes its parameters and history to OUT/rank{r}.npz
WORKER = textwrap.dedent('''
    import json, os, signal, sys
    import numpy as np
    import minidistill as md
    from minidistill.data import Tokenizer
    from minidistill.train import TrainConfig, Trainer, distributed
    from tests.conftest import tiny_bert, toy_data

    out, backend, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume"
    tok = Tokenizer.from_pretrained(md.assets.path("minilm-l6"))
    with md.use_backend(backend):
        model = tiny_bert(0)
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=20, max_length=16, progress=False, warmup_ratio=0.2,
                      eval_every=10, grad_accum_steps=int(os.environ.get("ACCUM", "1")),
                      checkpoint_dir=os.path.join(out, "ckpt"), checkpoint_every=5, log_file=os.path.join(out, "log.jsonl"))
    def kill(trainer):
        if distributed.rank() == 1 and trainer.state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    trainer = Trainer(model, tok, toy_data(30), toy_data(11, seed=5), cfg, callbacks={"on_step_end": [kill]})
    if resume:
        trainer.resume()
    trainer.train()
    state = {k: model.backend.to_numpy(v) for k, v in model.state_dict().items()}
    np.savez(os.path.join(out, f"rank{distributed.rank()}.npz"), **state)
    with open(os.path.join(out, f"history{distributed.rank()}.json"), "w") as f:
        json.dump({"history": trainer.state.history, "world": distributed.world_size()}, f)
''')


def _launch(tmp: Path, nproc: int, backend: str = "torch", kill_at: int = 0, resume: bool = False,
            accum: int = 1) -> subprocess.CompletedProcess:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCUM": str(accum), "OMP_NUM_THREADS": "1",
           "MINIDISTILL_DIST_TIMEOUT": "120"}
    if nproc == 1:  # the reference: one plain process, no torchrun
        cmd = [sys.executable, str(script)]
        env.pop("WORLD_SIZE", None)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    cmd += [str(tmp), backend, str(kill_at), "resume" if resume else "fresh"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _params(folder: Path, rank: int = 0) -> dict:
    with np.load(folder / f"rank{rank}.npz") as z:
        return {k: z[k] for k in z.files}


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_shards_cover_every_row_once():
    for n in range(0, 13):
        for world in (1, 2, 3, 5):
            rows = [i for r in range(world) for i in range(n)[distributed.shard(n, r, world)]]
            assert rows == list(range(n))


@pytest.mark.slow
def test_two_gloo_processes_equal_one_and_resume_after_a_rank_is_killed(tmp_path):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    for d in (one, two, killed):
        d.mkdir()
    _ok(_launch(one, 1))
    _ok(_launch(two, 2))
    ref, r0, r1 = _params(one), _params(two, 0), _params(two, 1)
    for name in ref:
        np.testing.assert_array_equal(r0[name], r1[name], err_msg=name)  # the ranks never drift apart
        np.testing.assert_allclose(r0[name], ref[name], atol=1e-6, rtol=0, err_msg=name)
    h1 = json.loads((one / "history0.json").read_text())
    h2 = json.loads((two / "history0.json").read_text())
    assert h2["world"] == 2 and h1["world"] == 1
    for a, b in zip(h1["history"], h2["history"]):  # sharded evaluation, merged exactly
        assert a["accuracy"] == b["accuracy"] and abs(a["loss"] - b["loss"]) < 1e-5
    log = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 21))  # rank 0 alone wrote the log

    crashed = _launch(killed, 2, kill_at=8)
    assert crashed.returncode != 0 and not (killed / "rank0.npz").exists()
    assert (killed / "ckpt" / "latest").read_text().strip() == "step-00000005"
    _ok(_launch(killed, 2, resume=True))
    got = _params(killed)
    for name in ref:
        np.testing.assert_allclose(got[name], r0[name], atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.slow
def test_two_processes_with_accumulation_on_numpy_equal_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _ok(_launch(one, 1, backend="numpy"))
    _ok(_launch(two, 2, backend="numpy", accum=2))  # 8 rows: 4 per rank, 2 + 2 per micro-batch
    ref, got = _params(one), _params(two)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-6, rtol=0, err_msg=name)


def _cli(args, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIDISTILL_DIST_TIMEOUT": "120"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "minidistill", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "minidistill", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wid", "theseus"])
def test_torchrun_cli_distill_equals_one_process(tmp_path, tiny_teacher_dir, kind):
    """``torchrun -m minidistill distill`` with a method that keeps state beside its weights
    (WID's pruning masks, Theseus's gate draws) and a teacher cache built once by rank 0."""
    from minidistill.fileio import load_weights

    common = ["--data.max_train_examples=48", "--data.max_eval_examples=20", "--train.max_steps=4",
              "--train.batch_size=8", "--train.max_length=24", "--train.progress=false", "--objectives.soft_kd=1",
              f"--teacher.path={tiny_teacher_dir}", "--teacher.backend=torch", f"--student.kind={kind}"]
    common += (["--student.hidden_size=16", "--student.num_attention_heads=2", "--student.intermediate_size=32",
                "--wid.rounds=1"] if kind == "wid" else ["--student.num_layers=2"])
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"n{nproc}"
        proc = _cli(["distill", *common, f"--output_dir={out}", f"--cache_dir={tmp_path / f'cache{nproc}'}"], nproc)
        _ok(proc)
        assert proc.stdout.count("saved to") == 1  # rank 0 alone reports and writes
        outs[nproc] = (load_weights(out), json.loads((out / "metrics.json").read_text()))
    (one, m1), (two, m2) = outs[1], outs[2]
    assert set(one) == set(two)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=2e-5, rtol=0, err_msg=name)
    assert m1["dev"]["accuracy"] == m2["dev"]["accuracy"]


def test_reducer_starts_buckets_during_the_backward(tmp_path):
    """The tape's grad-ready hook launches a bucket's all-reduce as soon as its gradients are
    final: with small buckets, all but the buckets holding the first layers (reached last)
    start before the backward returns; the sums (over one rank here) are the gradients."""
    import torch.distributed as dist

    from minidistill.core.tensor import on_grad_ready

    from .conftest import tiny_bert

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = tiny_bert(0)
        params = list(model.parameters())
        reducer = distributed.GradReducer(params, bucket_bytes=8 * 1024)
        assert len(reducer.buckets) > 3
        ids = np.array([[101, 2023, 2003, 102]])
        loss = model(input_ids=ids, attention_mask=np.ones_like(ids), labels=np.array([1])).loss
        with on_grad_ready(reducer.hook):
            loss.backward()
        early = len(reducer.launched)
        assert 0 < early <= len(reducer.buckets)
        grads = {id(p): None if p.grad is None else np.array(p.grad) for p in params}
        reducer.finish()
        for p in params:
            if grads[id(p)] is None:
                assert p.grad is None
            else:
                np.testing.assert_array_equal(p.grad, grads[id(p)])
    finally:
        dist.destroy_process_group()
