"""Nothing lost, through the `diffsynth-nb train` command: an unusable `--output_path` is refused before any model
loads, a full disk (a real small tmpfs) ends with one line naming what was kept, and a second run into the folder
of a running one is refused with the first's PID, while the lock of a run killed with SIGKILL blocks nobody."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest


def train(root, out, *flags, wait=True):
    "Run `diffsynth-nb train sd15` on the tiny model in `root` (a `tiny_root`), writing to `out`."
    cmd = [sys.executable, "-c", "from diffsynth_nb.cli import main; main()", "train", "sd15",
           "--pretrained_path", str(root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"),
           "--dataset_path", str(root / "data"), "--output_path", str(out), "--height", "32", "--width", "32",
           "--precision", "32", "--accelerator", "cpu", "--devices", "1", "--lora_rank", "2", *flags]
    if not wait: return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)


def one_error_line(r):
    "The single `diffsynth-nb train: error: ...` line a failed run printed (and no traceback)."
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("diffsynth-nb train: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def mount_tmpfs(tmp_path):
    "Mount a tmpfs of a given size (and options) on a new folder; skip where this process may not mount (not root)."
    mounted = []
    def mount(name, size, readonly=False):
        where = tmp_path / name
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if readonly else ""), "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted: subprocess.run(["umount", str(where)])


def test_output_path_is_a_file_or_under_one(tiny_root):
    (tiny_root / "taken").write_text("not a folder")
    line = one_error_line(train(tiny_root, tiny_root / "taken", "--steps_per_epoch", "1"))
    assert "--output_path" in line and "taken is a file, not a folder" in line
    line = one_error_line(train(tiny_root, tiny_root / "taken" / "run", "--steps_per_epoch", "1"))
    assert "--output_path" in line and "taken is a file, so no folder can be made under it" in line


def test_output_path_read_only_mount(tiny_root, mount_tmpfs):
    ro = mount_tmpfs("ro", "1m", readonly=True)   # a real read-only file system: root cannot write there either
    line = one_error_line(train(tiny_root, ro / "run", "--steps_per_epoch", "1"))
    assert "--output_path" in line and "cannot be written to" in line, line
    line = one_error_line(train(tiny_root, ro, "--steps_per_epoch", "1"))
    assert "cannot be written to (Read-only file system)" in line, line


def test_disk_full_keeps_the_last_state(tiny_root, mount_tmpfs):
    out = mount_tmpfs("small", "300k")   # room for two states of the tiny model (~120 kB each), not three
    r = train(tiny_root, out, "--steps_per_epoch", "6", "--save_state_every_n_steps", "1", "--keep_last_states", "3")
    line = one_error_line(r)
    assert "the disk is full: writing" in line and "needs about" in line and "is free there" in line, line
    kept = sorted(p.name for p in (out / "states").iterdir())
    assert kept and all(not n.startswith(".") for n in kept), kept   # no temporary file left behind
    assert f"Kept: {out / 'states' / kept[-1]}" in line and "--resume" in line, line
    assert not [p for p in out.rglob("*.tmp")]
    # the error is the first failed write (a state or loss.csv), not the emergency save of the LoRA that failed after it
    written = line.split("the disk is full: writing ")[1].split(" needs about")[0]
    assert written.endswith((".ckpt", "loss.csv")) and "interrupted" not in written, written


def wait_for_lock(proc, out, timeout=120):
    "Wait until `proc` holds the lock on `out` (its PID is in the lock file)."
    lock, t0 = out / ".diffsynth_nb.lock", time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: pytest.fail("the first run ended early: " + proc.stderr.read())
        try:
            if json.loads(lock.read_text())["pid"] == proc.pid: return
        except (OSError, ValueError, KeyError): pass
        time.sleep(0.2)
    pytest.fail("the first run never took the lock")


def test_second_run_refused_and_killed_run_blocks_nobody(tiny_root):
    out = tiny_root / "out"
    first = train(tiny_root, out, "--steps_per_epoch", "100000", "--save_state_every_n_steps", "0", wait=False)
    try:
        wait_for_lock(first, out)
        started = json.loads((out / ".diffsynth_nb.lock").read_text())["started"]
        line = one_error_line(train(tiny_root, out, "--steps_per_epoch", "1"))
        assert f"--output_path {out} is in use by another training run (PID {first.pid}, started {started}" in line, line
    finally:
        first.send_signal(signal.SIGKILL); first.communicate()
    assert first.returncode == -signal.SIGKILL
    assert (out / ".diffsynth_nb.lock").exists()   # the killed run's lock file stays, with its contents ...
    third = train(tiny_root, out, "--steps_per_epoch", "2")
    assert third.returncode == 0, third.stdout + third.stderr   # ... and does not block the next run
    assert (out / "sd15_lora_epoch000.safetensors").is_file()


def test_tiny_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """`write_tiny` stopped by Ctrl-C after the writer wrote some files (Kolors: its UNet and text encoder, then the
    fp16-fix VAE's safetensors file is interrupted) leaves no partial tree and no temporary folder; a complete tree
    already there is kept as it was, byte for byte; a normal call writes the same files, both top-level folders included."""
    import diffsynth_nb.core as core, diffsynth_nb.kolors as kolors, diffsynth_nb.sdxl as sdxl
    from diffsynth_nb.kolors import Kolors
    def tree(root): return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    real, calls = core.save_safetensors, []
    def second_is_interrupted(tensors, path, *a, **k):
        calls.append(Path(path))
        if len(calls) == 2: raise KeyboardInterrupt
        return real(tensors, path, *a, **k)
    def interrupt_the_second_file():
        calls.clear()
        for m in (kolors, sdxl): monkeypatch.setattr(m, "save_safetensors", second_is_interrupted)

    interrupt_the_second_file()
    with pytest.raises(KeyboardInterrupt): Kolors.write_tiny(tmp_path / "new")
    assert [p.parent.name for p in calls] == ["unet", "sdxl-vae-fp16-fix"]   # it stopped with files written
    assert not (tmp_path / "new").exists()   # the folder it made, the partial tree and the temporary folder: all gone

    monkeypatch.undo()
    root = tmp_path / "models"
    unet = Kolors.write_tiny(root)
    assert unet == root / "kolors" / "Kolors" / "unet" / "diffusion_pytorch_model.safetensors" and unet.is_file()
    complete = tree(root)
    assert sorted({k.split("/")[0] for k in complete}) == ["kolors", "sdxl-vae-fp16-fix"] and len(complete) == 12
    interrupt_the_second_file()
    with pytest.raises(KeyboardInterrupt): Kolors.write_tiny(root, seed=1)   # other weights, interrupted half-way
    assert tree(root) == complete and sorted(p.name for p in root.iterdir()) == ["kolors", "sdxl-vae-fp16-fix"]
    monkeypatch.undo()
    assert Kolors.write_tiny(root) == unet and tree(root).keys() == complete.keys()   # the same files again, in place


def fill(folder):
    "Fill the file system holding `folder` to the last byte (dd stops at 'No space left on device')."
    subprocess.run(["dd", "if=/dev/zero", f"of={folder / 'filler'}", "bs=4k"], capture_output=True)
    assert shutil.disk_usage(folder).free == 0


def test_lock_file_on_a_full_disk(tiny_root, mount_tmpfs):
    "The first write of a run is its lock file: a full disk there is one line naming the folder, not a traceback."
    full = mount_tmpfs("full", "64k"); fill(full)
    for out in (full, full / "run"):
        line = one_error_line(train(tiny_root, out, "--steps_per_epoch", "1"))
        assert f"--output_path {out}: the disk is full" in line and ".diffsynth_nb.lock" in line and "0 B is free" in line, line
    # the refused run into a new folder left nothing behind; the existing folder keeps only the (empty) lock file
    assert sorted(p.name for p in full.iterdir()) == [".diffsynth_nb.lock", "filler"]


def cli(cmd, *args, cwd=None):
    "Run `diffsynth-nb CMD ...` in a subprocess."
    return subprocess.run([sys.executable, "-c", "from diffsynth_nb.cli import main; main()", cmd, *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def error_line(r, cmd):
    "The single `diffsynth-nb CMD: error: ...` line a failed command printed (exit status 2, no traceback)."
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith(f"diffsynth-nb {cmd}: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_generate_output_in_a_read_only_folder_fails_before_loading(tiny_root, mount_tmpfs):
    "The image's folder is tried first: no model is loaded, no LoRA merged, no image made and then lost."
    from diffsynth_nb import SD15
    from diffsynth_nb.lora import add_lora
    ckpt = tiny_root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
    fam = SD15.from_pretrained(ckpt); add_lora(fam.unet, 2, 2.0)
    lora = fam.save_lora(tiny_root / "lora.safetensors", 2, 2.0)
    ro = mount_tmpfs("ro", "1m", readonly=True)
    for out in (ro / "x.png", ro / "sub" / "x.png"):   # a folder that exists, one that cannot be made
        r = cli("generate", "sd15", "--pretrained_path", ckpt, "--lora_path", lora, "--prompt", "a dog", "--height", 64, "--width", 64,
                "--num_inference_steps", 2, "--output", out)
        line = error_line(r, "generate")
        assert f"--output {out} cannot be written: its folder {out.parent} cannot be written to (Read-only file system)" in line, line
        assert "merged" not in r.stdout and "image saved" not in r.stdout, r.stdout   # it stopped before loading anything


def test_tiny_and_demo_into_a_read_only_folder(mount_tmpfs):
    ro = mount_tmpfs("ro", "1m", readonly=True)
    line = error_line(cli("tiny", "sd15", ro / "models"), "tiny")
    assert f"dir {ro / 'models'} cannot be written to (Read-only file system)" in line, line
    line = error_line(cli("demo", "--output_path", ro / "demo"), "demo")
    assert f"--output_path {ro / 'demo'} cannot be written to (Read-only file system)" in line, line
