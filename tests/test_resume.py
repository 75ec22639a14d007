"""A run killed by SIGKILL after a checkpoint resumes to bit-identical parameters (numpy)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minidistill.fileio import CheckpointError

SCRIPT = textwrap.dedent('''
    import sys, time
    import numpy as np
    import minidistill as md
    from minidistill.data import TextDataset, Tokenizer
    from minidistill.data.datasets import TaskSpec
    from minidistill.models import BertConfig, BertForSequenceClassification
    from minidistill.train import TrainConfig, Trainer

    def build(ckpt_dir, log_file):
        rng = np.random.default_rng(0)
        words = ["good", "bad", "film", "plot", "actor", "scene", "dull", "great"]
        texts = [" ".join(rng.choice(words, size=rng.integers(3, 9))) + f" {i}" for i in range(40)]
        data = TextDataset(texts, None, rng.integers(0, 2, 40).astype(np.int64),
                           TaskSpec("toy", "text", None, "label", ("0", "1"), ("accuracy",)))
        tok = Tokenizer.from_pretrained(md.assets.path("minilm-l6"))
        md.manual_seed(0)
        with md.use_backend("numpy"):
            cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.1)
            model = BertForSequenceClassification(cfg)
        tc = TrainConfig(lr=1e-3, batch_size=8, max_steps=20, max_length=16, progress=False, seed=1,
                         checkpoint_dir=ckpt_dir, checkpoint_every=5, log_file=log_file)
        return Trainer(model, tok, data, None, tc)

    if __name__ == "__main__":
        trainer = build(sys.argv[1], sys.argv[2])
        def stall(t):
            if t.state.step == 12:
                print("stalling", flush=True)
                time.sleep(600)  # the parent kills us here, after the step-10 checkpoint
        trainer.add_callback("on_step_end", stall)
        trainer.train()
''')


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_parameters(tmp_path, minilm_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    sys.path.insert(0, str(tmp_path))
    try:
        import run  # the same builder for the reference and the resumed run
    finally:
        sys.path.remove(str(tmp_path))

    reference = run.build(str(tmp_path / "ref_ckpt"), None)
    reference.train()
    expected = {k: v.copy() for k, v in reference.model.state_dict().items()}

    ckpt, log = tmp_path / "ckpt", tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stalling"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (ckpt / "latest").read_text().strip() == "step-00000010"
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]  # no half-written checkpoint

    resumed = run.build(str(ckpt), str(log)).resume()
    assert resumed.state.step == 10
    resumed.train()
    for k, v in resumed.model.state_dict().items():
        np.testing.assert_array_equal(v, expected[k], err_msg=k)
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in log.read_text().splitlines()]
    assert steps == list(range(1, 21))  # the log was cut back to the checkpoint, then continued


def test_resume_refuses_another_architecture(tmp_path, minilm_path):
    sys.path.insert(0, str(tmp_path))
    (tmp_path / "run2.py").write_text(SCRIPT)
    try:
        import run2
    finally:
        sys.path.remove(str(tmp_path))
    t = run2.build(str(tmp_path / "c"), None)
    t.config.max_steps = 5
    t.total_steps = 5
    t.train()
    t.save_checkpoint()
    from minidistill.models import BertConfig, BertForSequenceClassification
    from minidistill.train import TrainConfig, Trainer

    other = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=24, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     max_position_embeddings=32))
    with pytest.raises(CheckpointError, match="another architecture: hidden_size is 16 there and 24 here"):
        Trainer(other, t.tokenizer, t.train_data, None, TrainConfig(progress=False)).resume(tmp_path / "c")
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        t.resume(tmp_path / "empty_dir_that_has_nothing")


def test_a_nan_loss_stops_before_the_update_and_names_the_last_checkpoint(tmp_path, minilm_path):
    """NaN at step 7: the run stops with the step and the step-5 checkpoint in the message, and
    the parameters are those after step 6 (the bad step never touched them)."""
    ns: dict = {}
    exec(compile(SCRIPT.split('if __name__ == "__main__":')[0], "<script>", "exec"), ns)
    trainer = ns["build"](str(tmp_path / "ckpt"), None)
    base = trainer.compute_loss
    seen = {}

    def loss(model, batch):
        out = base(model, batch)
        if trainer.state.step == 6:
            seen["before"] = {n: p.numpy().copy() for n, p in model.named_parameters()}
            return out * float("nan")
        return out

    trainer.compute_loss = loss
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    msg = str(e.value)
    assert "step 7" in msg and "nan" in msg
    assert f"last good checkpoint is {tmp_path / 'ckpt' / 'step-00000005'};" in msg
    for n, p in trainer.model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), seen["before"][n])
