"""A training process killed with SIGKILL and resumed with --resume ends with exactly the LoRA weights of an
uninterrupted run of the same length (tiny random SD 1.5, CPU)."""
import os, re, signal, subprocess, sys, time
from pathlib import Path

import torch
from safetensors.torch import load_file

_exe = Path(sys.executable).parent / "diffsynth-nb"
CLI = str(_exe) if _exe.exists() else "diffsynth-nb"


def train_args(root, out):
    return [CLI, "train", "sd15", "--pretrained_path", str(root / "models/stable_diffusion/v1-5-pruned-emaonly.safetensors"),
            "--dataset_path", str(root / "data"), "--output_path", str(out), "--height", "32", "--width", "32",
            "--batch_size", "2", "--steps_per_epoch", "16", "--max_epochs", "2", "--precision", "32", "--random_flip",
            "--learning_rate", "1e-3", "--save_state_every_n_steps", "4", "--keep_last_states", "3", "--accelerator", "cpu"]


def test_sigkill_then_resume_matches_uninterrupted(tiny_root):
    tmp_path = tiny_root

    full = subprocess.run(train_args(tmp_path, tmp_path / "A"), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    # start the same run, and kill it hard as soon as it has saved the state of step 8 (epoch 0 of 2)
    proc = subprocess.Popen(train_args(tmp_path, tmp_path / "B"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    states = tmp_path / "B" / "states"
    deadline = time.time() + 300
    while not (states / "step=00000008.ckpt").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "B" / "sd15_lora_epoch001.safetensors").exists()
    # whatever moment the kill hit, every state file present is complete
    for f in states.glob("step=*.ckpt"):
        torch.load(f, weights_only=True)

    resumed = subprocess.run(train_args(tmp_path, tmp_path / "B") + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m = re.search(r"resuming from .*step=(\d+)\.ckpt", resumed.stdout)
    assert m and int(m[1]) >= 8, resumed.stdout[-2000:]

    for name in ("sd15_lora_epoch000.safetensors", "sd15_lora_epoch001.safetensors"):
        a, b = load_file(tmp_path / "A" / name), load_file(tmp_path / "B" / name)
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: resumed weights differ from the uninterrupted run"
    assert (tmp_path / "A" / "loss.csv").read_text() == (tmp_path / "B" / "loss.csv").read_text()


def test_sigterm_exits_143_and_keeps_the_lora(tiny_root):
    """A scheduler's SIGTERM is not a success: exit status 143, the LoRA so far is saved, and --resume is suggested."""
    tmp_path = tiny_root
    args = train_args(tmp_path, tmp_path / "T")
    args[args.index("--steps_per_epoch") + 1] = "400"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "T" / "states" / "step=00000004.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err[-2000:])
    assert "stopped by SIGTERM" in err and "--resume" in err
    assert list((tmp_path / "T").glob("sd15_lora_interrupted_step*.safetensors"))
