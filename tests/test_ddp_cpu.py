"""Two processes with DDP on the CPU (gloo): `--steps_per_epoch` shared as in the seed, each process with its own
batches, gradients averaged; a NaN on one process stops both; a crashed two-process run resumes exactly."""
import json, subprocess, sys, textwrap

import torch
from safetensors.torch import load_file

from diffsynth_nb.core import read_safetensors_metadata

# One script for every run: train_lora on 2 CPU processes, with the named callbacks and extra settings from argv.
SCRIPT = textwrap.dedent("""
    import sys, json, lightning as L
    from pathlib import Path
    from diffsynth_nb import train_lora
    class Record(L.Callback):   # what each process saw and ended with
        def __init__(self): self.images = []
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx): self.images.append(float(batch["image"].sum()))
        def on_train_end(self, trainer, pl_module):
            lora = sum(float(p.double().sum()) for p in pl_module.parameters() if p.requires_grad)
            out = Path(pl_module.cfg.output_path) / f"rank{trainer.global_rank}.json"
            out.write_text(json.dumps({"images": self.images, "lora": lora}))
    class PoisonRank1(L.Callback):   # a NaN on one process only
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_rank == 1 and trainer.global_step == 2: batch["image"].fill_(float("nan"))
    class CrashAt3(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3: raise RuntimeError("simulated crash")
    if __name__ == "__main__":
        root, out, extra = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
        names = extra.pop("callbacks", [])
        callbacks = [{"record": Record, "poison_rank1": PoisonRank1, "crash_at_3": CrashAt3}[n]() for n in names]
        lora = train_lora("sd15", pretrained_path=root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors",
                          dataset_path=root / "data", output_path=root / out, height=32, width=32, batch_size=2, precision="32",
                          accelerator="cpu", devices=2, learning_rate=1e-3, callbacks=callbacks, **extra)
        print("RESULT", lora)
""")


def run_ddp(root, out, **extra):
    "Run SCRIPT on two processes; returns the finished process (stdout, stderr, returncode)."
    script = root / "ddp_train.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(root), out, json.dumps(extra)], capture_output=True, text=True,
                          timeout=600, cwd=root)


def ranks(root, out):
    return [json.loads((root / out / f"rank{i}.json").read_text()) for i in (0, 1)]


def test_ddp_two_processes(tiny_root):
    r = run_ddp(tiny_root, "out", steps_per_epoch=5, callbacks=["record"])
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted((tiny_root / "out").glob("*.safetensors"))
    assert [f.name for f in files] == ["sd15_lora_epoch000.safetensors"]
    # --steps_per_epoch 5 is shared by the 2 processes as in the seed: ceil(5/2) = 3 batches each -> 3 optimizer steps
    assert read_safetensors_metadata(files[0])["ss_steps"] == "3"
    r0, r1 = ranks(tiny_root, "out")
    assert len(r0["images"]) == len(r1["images"]) == 3
    assert r0["images"] != r1["images"], "both processes drew the same batches"
    assert abs(r0["lora"] - r1["lora"]) < 1e-9, "the LoRA weights of the two processes diverged"
    assert len((tiny_root / "out" / "loss.csv").read_text().splitlines()) == 1 + 3


def test_ddp_nan_on_one_process_stops_all(tiny_root):
    """Both processes stop with the diagnosis (none hangs waiting for the other), and the LoRA so far is kept."""
    r = run_ddp(tiny_root, "nan", steps_per_epoch=10, callbacks=["poison_rank1"])
    assert r.returncode != 0
    # rank 0's own loss was finite, yet it stops with the same diagnosis at the same step (not a broken connection)
    for rank in (0, 1):
        assert f"[rank{rank}]: diffsynth_nb.config.NonFiniteLossError: the loss is not finite at optimizer step 2" in r.stderr, r.stderr[-3000:]
    kept = load_file(tiny_root / "nan" / "sd15_lora_interrupted_step000002.safetensors")
    assert all(torch.isfinite(v).all() for v in kept.values())


def test_ddp_resume_matches_uninterrupted(tiny_root):
    """Two processes crash at step 3; resumed with two processes from the step-2 state, they end with the weights of an
    uninterrupted two-process run."""
    common = dict(steps_per_epoch=10, random_flip=True, save_state_every_n_steps=2)
    full = run_ddp(tiny_root, "full", **common)
    assert full.returncode == 0, full.stderr[-3000:]
    crashed = run_ddp(tiny_root, "part", callbacks=["crash_at_3"], **common)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    assert [p.name for p in sorted((tiny_root / "part" / "states").glob("step=*.ckpt"))] == ["step=00000002.ckpt"]
    resumed = run_ddp(tiny_root, "part", resume=True, callbacks=["record"], **common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert len(ranks(tiny_root, "part")[0]["images"]) == 3   # 5 batches per process, 2 done before the crash
    a = load_file(tiny_root / "full" / "sd15_lora_epoch000.safetensors")
    b = load_file(tiny_root / "part" / "sd15_lora_epoch000.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), "resumed two-process run differs"
