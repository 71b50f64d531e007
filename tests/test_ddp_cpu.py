"""Two processes with DDP on the CPU (gloo): every process draws its own `steps_per_epoch` batches,
gradients are averaged, one LoRA file is written."""
import subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SCRIPT = textwrap.dedent("""
    import sys, json, torch, lightning as L
    from pathlib import Path
    from diffsynth_nb import train_lora
    root = Path(sys.argv[1])
    class Record(L.Callback):   # what each process saw and ended with
        def __init__(self): self.images = []
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx): self.images.append(float(batch["image"].sum()))
        def on_train_end(self, trainer, pl_module):
            lora = sum(float(p.double().sum()) for p in pl_module.parameters() if p.requires_grad)
            (root / f"rank{trainer.global_rank}.json").write_text(json.dumps({"images": self.images, "lora": lora}))
    if __name__ == "__main__":
        ckpt = root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
        lora = train_lora("sd15", pretrained_path=ckpt, dataset_path=root / "data", output_path=root / "out",
                          height=32, width=32, batch_size=2, steps_per_epoch=5, precision="32",
                          accelerator="cpu", devices=2, learning_rate=1e-3, callbacks=[Record()])
        print("RESULT", lora)
""")


def test_ddp_two_processes(tmp_path):
    import json
    from diffsynth_nb import write_tiny_sd15
    from diffsynth_nb.demo import draw_toy_dataset
    write_tiny_sd15(tmp_path / "models")
    draw_toy_dataset(tmp_path / "data", n=4, size=40)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RESULT" in r.stdout
    files = sorted((tmp_path / "out").glob("*.safetensors"))
    assert [f.name for f in files] == ["sd15_lora_epoch000.safetensors"]
    # --steps_per_epoch 5 is shared by the 2 processes as in the seed: ceil(5/2) = 3 batches each -> 3 optimizer steps
    from diffsynth_nb.core import read_safetensors_metadata
    assert read_safetensors_metadata(files[0])["ss_steps"] == "3"
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert len(ranks[0]["images"]) == len(ranks[1]["images"]) == 3
    assert ranks[0]["images"] != ranks[1]["images"], "both processes drew the same batches"
    assert abs(ranks[0]["lora"] - ranks[1]["lora"]) < 1e-9, "the LoRA weights of the two processes diverged"
    losses = (tmp_path / "out" / "loss.csv").read_text().splitlines()
    assert len(losses) == 1 + 3


NAN_SCRIPT = textwrap.dedent("""
    import sys, lightning as L
    from pathlib import Path
    from diffsynth_nb import train_lora
    class PoisonRank1(L.Callback):   # a NaN on one process only
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_rank == 1 and trainer.global_step == 2: batch["image"].fill_(float("nan"))
    root = Path(sys.argv[1])
    if __name__ == "__main__":
        train_lora("sd15", pretrained_path=root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors",
                   dataset_path=root / "data", output_path=root / "nan", height=32, width=32, batch_size=2, steps_per_epoch=5,
                   precision="32", accelerator="cpu", devices=2, callbacks=[PoisonRank1()])
""")


def test_ddp_nan_on_one_process_stops_all(tmp_path):
    """Both processes stop with the diagnosis (none hangs waiting for the other), and the LoRA so far is kept."""
    from diffsynth_nb import write_tiny_sd15
    from diffsynth_nb.demo import draw_toy_dataset
    write_tiny_sd15(tmp_path / "models")
    draw_toy_dataset(tmp_path / "data", n=4, size=40)
    script = tmp_path / "ddp_nan.py"
    script.write_text(NAN_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode != 0
    # rank 0's own loss was finite, yet it stops with the same diagnosis at the same step (not a broken connection)
    for rank in (0, 1):
        assert f"[rank{rank}]: diffsynth_nb.trainer.NonFiniteLossError: the loss is not finite at optimizer step 2" in r.stderr, r.stderr[-3000:]
    kept = load_file(tmp_path / "nan" / "sd15_lora_interrupted_step000002.safetensors")
    assert all(torch.isfinite(v).all() for v in kept.values())


RESUME_SCRIPT = textwrap.dedent("""
    import sys, lightning as L
    from pathlib import Path
    from diffsynth_nb import train_lora
    class CrashAt3(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3: raise RuntimeError("simulated crash")
    class Count(L.Callback):
        n = 0
        def on_train_batch_end(self, *args): self.n += 1
        def on_train_end(self, trainer, pl_module): print(f"BATCHES rank{trainer.global_rank} {self.n}", flush=True)
    root, out, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if __name__ == "__main__":
        train_lora("sd15", pretrained_path=root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors",
                   dataset_path=root / "data", output_path=root / out, height=32, width=32, batch_size=2, steps_per_epoch=10,
                   precision="32", accelerator="cpu", devices=2, learning_rate=1e-3, random_flip=True, save_state_every_n_steps=2,
                   resume=(mode == "resume"), callbacks=[CrashAt3()] if mode == "crash" else [Count()])
""")


def test_ddp_resume_matches_uninterrupted(tmp_path):
    """Two processes crash at step 3; resumed with two processes from the step-2 state, they end with the weights of an
    uninterrupted two-process run."""
    from diffsynth_nb import write_tiny_sd15
    from diffsynth_nb.demo import draw_toy_dataset
    write_tiny_sd15(tmp_path / "models")
    draw_toy_dataset(tmp_path / "data", n=4, size=40)
    script = tmp_path / "ddp_resume.py"
    script.write_text(RESUME_SCRIPT)
    run = lambda out, mode: subprocess.run([sys.executable, str(script), str(tmp_path), out, mode], capture_output=True,
                                           text=True, timeout=300, cwd=tmp_path)
    full = run("full", "plain")
    assert full.returncode == 0, full.stderr[-3000:]
    crashed = run("part", "crash")
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    assert [p.name for p in sorted((tmp_path / "part" / "states").glob("step=*.ckpt"))] == ["step=00000002.ckpt"]
    resumed = run("part", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert "BATCHES rank0 3" in resumed.stdout, resumed.stdout[-2000:]   # 5 batches per process, 2 done before the crash
    a = load_file(tmp_path / "full" / "sd15_lora_epoch000.safetensors")
    b = load_file(tmp_path / "part" / "sd15_lora_epoch000.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), "resumed two-process run differs"
