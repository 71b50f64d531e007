"""What a run prints is ours: no third-party notices (Kolors' diffusers and transformers lines), from the CLI and from
Python, and our own warnings one line each; each read from a fresh subprocess (transformers says each notice only once
per process, and Python each warning once per place).

Tiny random Kolors, drawn pictures, 32x32, 2 steps: a few seconds per run.
"""
import shutil, subprocess, sys, textwrap
from pathlib import Path

import pytest

_exe = Path(sys.executable).parent / "diffsynth-nb"
CLI = [str(_exe) if _exe.exists() else shutil.which("diffsynth-nb")]  # the installed console script
KOLORS_NOTICES = ["should be kept in float32", "`use_return_dict` is deprecated", "`past_key_values`/`cache_params` are deprecated"]


@pytest.fixture(scope="module")
def kolors_root(tmp_path_factory):
    "A tiny random Kolors in `models/` and 4 drawn pictures in `data/`."
    from diffsynth_nb.kolors import write_tiny_kolors
    from diffsynth_nb.demo import draw_toy_dataset
    root = tmp_path_factory.mktemp("kolors")
    write_tiny_kolors(root / "models")
    draw_toy_dataset(root / "data", n=4, size=40)
    return root


def test_kolors_cli_prints_no_third_party_notices(kolors_root):
    unet = kolors_root / "models" / "kolors" / "Kolors" / "unet" / "diffusion_pytorch_model.safetensors"
    small = ["--height", "32", "--width", "32"]
    train = subprocess.run(CLI + ["train", "kolors", "--pretrained_unet_path", str(unet), "--dataset_path", str(kolors_root / "data"),
                                  "--output_path", str(kolors_root / "cli"), *small, "--steps_per_epoch", "2", "--precision", "32",
                                  "--accelerator", "cpu"], capture_output=True, text=True, timeout=600)
    lora = kolors_root / "cli" / "kolors_lora_epoch000.safetensors"
    assert train.returncode == 0 and f"LoRA saved to {lora}" in train.stdout, train.stderr
    assert train.stderr == "", train.stderr
    gen = subprocess.run(CLI + ["generate", "kolors", "--pretrained_unet_path", str(unet), "--lora_path", str(lora), "--prompt", "一只狗",
                                *small, "--num_inference_steps", "2", "--output", str(kolors_root / "cli.png")],
                         capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0 and (kolors_root / "cli.png").is_file(), gen.stderr
    assert gen.stderr == "", gen.stderr


def test_kolors_python_api_prints_no_third_party_notices(kolors_root):
    "`train_lora`, `ModelManager` and `generate` as a script calls them: Python's warnings recorded, transformers' and diffusers' loggers read."
    script = textwrap.dedent(f"""
        import logging, warnings, torch
        from diffsynth_nb import train_lora, ModelManager, generate
        logging.basicConfig(level=logging.WARNING)   # any logger's WARNING reaches stderr, as in a user's script that logs
        unet = {str(kolors_root / "models" / "kolors" / "Kolors" / "unet" / "diffusion_pytorch_model.safetensors")!r}
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            lora = train_lora("kolors", pretrained_unet_path=unet, dataset_path={str(kolors_root / "data")!r},
                              output_path={str(kolors_root / "py")!r}, height=32, width=32, steps_per_epoch=2, precision="32",
                              accelerator="cpu")
            mm = ModelManager(torch_dtype=torch.float32, device="cpu", file_path_list=[unet])
            mm.load_lora(lora)
            generate(mm.model("kolors"), "一只狗", height=32, width=32, num_inference_steps=2)
        for x in w: print(f"WARNING {{x.category.__name__}}: {{x.message}}", file=__import__("sys").stderr)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert [n for n in KOLORS_NOTICES if n in r.stderr] == [], r.stderr


def test_our_warning_is_one_line_from_python(tmp_path):
    "A script that meets one of our warnings (an image not listed in metadata.csv) gets one line, not file:line and source."
    from PIL import Image
    (tmp_path / "train").mkdir()
    for name in ("a.png", "b.png"): Image.new("RGB", (8, 8)).save(tmp_path / "train" / name)
    (tmp_path / "train" / "metadata.csv").write_text("file_name,text\na.png,a\n")
    script = tmp_path / "script.py"   # a file, so that Python could print a source line
    script.write_text("import warnings\nfrom diffsynth_nb.data import TextImageDataset\n"
                      f"TextImageDataset({str(tmp_path)!r}, height=8, width=8)\n"
                      "warnings.warn('theirs')   # any other warning: as Python prints it\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"diffsynth_nb: warning: {tmp_path / 'train'}: 1 image(s) not listed in metadata.csv are ignored: b.png",
                                     f"{script}:4: UserWarning: theirs", "  warnings.warn('theirs')   # any other warning: as Python prints it"]
