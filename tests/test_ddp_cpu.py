"""Two processes with DDP on the CPU (gloo): every process draws its own `steps_per_epoch` batches,
gradients are averaged, one LoRA file is written."""
import subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SCRIPT = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from diffsynth_nb import train_lora, write_tiny_sd15
    from diffsynth_nb.demo import draw_toy_dataset
    root = Path(sys.argv[1])
    if __name__ == "__main__":
        ckpt = root / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
        lora = train_lora("sd15", pretrained_path=ckpt, dataset_path=root / "data", output_path=root / "out",
                          height=32, width=32, batch_size=2, steps_per_epoch=5, precision="32",
                          accelerator="cpu", devices=2, learning_rate=1e-3)
        print("RESULT", lora)
""")


def test_ddp_two_processes(tmp_path):
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
    # 5 batches per process per epoch -> 5 optimizer steps (gradients averaged across the 2 processes)
    from diffsynth_nb.core import read_safetensors_metadata
    assert read_safetensors_metadata(files[0])["ss_steps"] == "5"
    losses = (tmp_path / "out" / "loss.csv").read_text().splitlines()
    assert len(losses) == 1 + 5
