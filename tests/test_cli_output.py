"""What `diffsynth-nb` prints, read from the real console script in a subprocess (stdout and stderr apart).

Lightning's own lines, its advertisements and third-party warnings are hidden unless `--verbose`; what
remains is ours. `diffsynth-nb tiny` prints only the checkpoint path on stdout. Tiny model, drawn data,
32x32, 2 epochs of 2 steps: a few seconds per run.
"""
import shutil, subprocess, sys
from pathlib import Path

from diffsynth_nb.core import read_safetensors_metadata

_exe = Path(sys.executable).parent / "diffsynth-nb"
CLI = [str(_exe) if _exe.exists() else shutil.which("diffsynth-nb")]  # the installed console script
NOISE = ["GPU available", "TPU available", "HPU available", "💡 Tip", "litlogger", "`Trainer.fit` stopped",
         "module(s) in eval mode", "deprecated", "Deprecation", "FutureWarning"]


def cli(*args, cwd=None):
    r = subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"diffsynth-nb {args[0]} failed:\n{r.stdout}\n{r.stderr}"
    return r


def test_tiny_prints_only_the_path(tmp_path):
    "As a script uses it: `ckpt=$(diffsynth-nb tiny sd15 DIR)` gets the path; the RANDOM notice goes to stderr."
    sh = subprocess.run(["bash", "-c", 'ckpt=$("$0" tiny sd15 "$1" 2>"$2") && test -f "$ckpt" && printf %s "$ckpt"',
                         CLI[0], tmp_path / "models", tmp_path / "stderr.txt"], capture_output=True, text=True, timeout=300)
    ckpt = tmp_path / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
    assert sh.returncode == 0 and sh.stdout == str(ckpt), sh
    assert "RANDOM" in (tmp_path / "stderr.txt").read_text()


def train(root, out, *extra):
    return cli("train", "sd15", "--pretrained_path", root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors",
               "--dataset_path", root / "data", "--output_path", root / out, "--height", 32, "--width", 32,
               "--steps_per_epoch", 2, "--max_epochs", 2, "--precision", "32", "--accelerator", "cpu", *extra)


def test_train_is_quiet_unless_verbose(tiny_root):
    quiet = train(tiny_root, "quiet")
    said = quiet.stdout + quiet.stderr
    assert [n for n in NOISE if n in said] == [], said
    lines = [l for l in quiet.stdout.splitlines() if l.strip()]
    # ours: the progress bar, labelled as the files are, and where the LoRA went
    ckpt = tiny_root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
    assert lines[0] == f"loading the sd15 model from {ckpt}", lines
    assert lines[1].startswith("epoch001 (2 of 2) ") and "2/2" in lines[1] and "train_loss" in lines[1], lines
    assert lines[-1] == f"LoRA saved to {tiny_root / 'quiet' / 'sd15_lora_epoch001.safetensors'}"
    assert quiet.stderr == "", quiet.stderr
    names = sorted(p.name for p in (tiny_root / "quiet").glob("*.safetensors"))
    assert names == ["sd15_lora_epoch000.safetensors", "sd15_lora_epoch001.safetensors"]
    assert [read_safetensors_metadata(tiny_root / "quiet" / n)["ss_epoch"] for n in names] == ["1", "2"]

    loud = train(tiny_root, "loud", "--verbose")
    said = loud.stdout + loud.stderr
    for line in ("GPU available: False, used: False", "TPU available", "💡 Tip", "`Trainer.fit` stopped: `max_epochs=2` reached.",
                 "module(s) in eval mode"):
        assert line in said, f"--verbose should show {line!r}:\n{said}"


def _interrupted(args, wait_s, cwd):
    "Run `diffsynth-nb ARGS`, send Ctrl-C (SIGINT) after `wait_s` seconds; (exit status, stdout, stderr)."
    import signal, time
    p = subprocess.Popen(CLI + [str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(wait_s)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def test_ctrl_c_is_one_line(tiny_root):
    "Ctrl-C in `generate` and `tiny` (not only in training): one line saying what is left, exit status 130, no traceback."
    ckpt = tiny_root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
    status, out, err = _interrupted(["generate", "sd15", "--pretrained_path", ckpt, "--prompt", "a dog", "--height", 256, "--width", 256,
                                     "--num_inference_steps", 999, "--output", tiny_root / "x.png"], 8, tiny_root)
    assert (status, err) == (130, "diffsynth-nb generate: stopped by Ctrl-C; no image was written\n"), (status, err)
    assert not (tiny_root / "x.png").exists() and not list(tiny_root.glob(".x.png.*"))
    status, out, err = _interrupted(["tiny", "sdxl", tiny_root / "m2"], 2, tiny_root)
    assert (status, out, err) == (130, "", f"diffsynth-nb tiny: stopped by Ctrl-C; nothing half-written was left in {tiny_root / 'm2'}\n"), (status, err)
