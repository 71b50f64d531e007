"""End to end on real photos: the CLI and `train_lora` on ../shared/data/dog with the tiny random SD 1.5 (and SDXL, SD3).

Skipped when the sample photos are absent. Each run: 64x64, batch size 2, 20 steps, CPU.
"""
import json, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffsynth_nb.core import sample_data, read_safetensors_metadata

DOG = sample_data("dog")
pytestmark = pytest.mark.skipif(DOG is None, reason="../shared/data/dog (sample photos) not found")
_exe = Path(sys.executable).parent / "diffsynth-nb"
CLI = [str(_exe) if _exe.exists() else shutil.which("diffsynth-nb")]  # the installed console script


def run(args, cwd):
    r = subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"diffsynth-nb {args[0]} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = run(["tiny", "sd15", d], d)
    ckpt = d / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors"
    assert out == f"{ckpt}\n"   # only the path on stdout; the RANDOM notice goes to stderr
    return ckpt


def check_lora(path, rank, alpha, steps):
    sd, meta = load_file(path), read_safetensors_metadata(path)
    assert sd and all(k.startswith("lora_unet_") for k in sd)
    # kohya layout with diffusers module names, alpha as trained
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert sd[f"{k}.lora_down.weight"].shape[0] == rank
    assert sd[f"{k}.alpha"].item() == alpha
    assert any(v.abs().max() > 0 for n, v in sd.items() if n.endswith("lora_up.weight")), "LoRA did not train"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["diffsynth_nb.family"]) == (str(rank), str(alpha), "sd15")
    assert meta["ss_steps"] == str(steps)
    training = json.loads(meta["diffsynth_nb.training"])
    assert (training["batch_size"], training["height"], training["width"]) == (2, 64, 64)


def test_cli_train_and_generate(tiny, tmp_path):
    out = run(["train", "sd15", "--pretrained_path", tiny, "--dataset_path", DOG, "--output_path", tmp_path / "run",
               "--height", 64, "--width", 64, "--batch_size", 2, "--steps_per_epoch", 20, "--precision", "32",
               "--lora_rank", 4, "--lora_alpha", 8.0, "--learning_rate", 1e-3, "--random_flip", "--center_crop",
               "--accelerator", "cpu"], tmp_path)
    lora = tmp_path / "run" / "sd15_lora_epoch000.safetensors"
    assert f"LoRA saved to {lora}" in out
    check_lora(lora, 4, 8.0, 20)
    import csv
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "run" / "loss.csv"))]
    assert len(losses) == 20 and all(np.isfinite(losses))

    common = ["--pretrained_path", tiny, "--prompt", "a dog", "--height", 64, "--width", 64, "--num_inference_steps", 8, "--seed", 1]
    run(["generate", "sd15", *common, "--output", tmp_path / "base.png"], tmp_path)
    run(["generate", "sd15", *common, "--lora_path", lora, "--lora_alpha", 1.0, "--output", tmp_path / "lora.png"], tmp_path)
    base, with_lora = (np.asarray(Image.open(tmp_path / f)) for f in ("base.png", "lora.png"))
    assert base.shape == with_lora.shape == (64, 64, 3)
    assert (base != with_lora).any(), "merging the trained LoRA did not change the image"


def test_train_lora_python(tiny, tmp_path):
    from diffsynth_nb import train_lora
    lora = train_lora("sd15", pretrained_path=tiny, dataset_path=DOG, output_path=tmp_path, height=64, width=64,
                      batch_size=2, steps_per_epoch=20, precision="32", lora_rank=2, lora_alpha=2.0, accelerator="cpu")
    assert lora == tmp_path / "sd15_lora_epoch000.safetensors"
    check_lora(lora, 2, 2.0, 20)


def test_cli_bad_flag_names_it(tiny, tmp_path):
    r = subprocess.run(CLI + ["train", "sd15", "--pretrained_path", str(tiny), "--dataset_path", str(DOG), "--width", "100"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--width 100" in r.stderr and "multiple of 8" in r.stderr


# Other families through the same commands: the folder/file `diffsynth-nb tiny FAMILY` writes, a small training size
# (a multiple of the family's pixel multiple), the base-model tag the LoRA header carries, the prefix of every key of the
# LoRA file, one layer it must hold with that layer's down-matrix name, rank and alpha (trained with rank 4, alpha 8),
# the sample photos and a prompt.
FAMILY_RUNS = {
    "sdxl": ("stable_diffusion_xl/sd_xl_base_1.0.safetensors", 32, "sdxl_base_v1-0", "lora_unet_",
             ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", "lora_down.weight", 4, 8.0), "dog", "a dog"),
    # the release folder; the LoRA in ComfyUI's (Tencent's) layout: q, k, v fused into Wqkv, rank 3r, alpha 3α
    "hunyuan_dit": ("HunyuanDiT/t2i", 32, "hunyuan_dit_v1.1", "base_model.model.blocks.",
                    ("base_model.model.blocks.0.attn1.Wqkv", "lora_A.weight", 12, 24.0), "dog_zh", "一只小狗"),
}


@pytest.mark.parametrize("family", sorted(FAMILY_RUNS))
def test_cli_train_and_generate_family(family, tmp_path):
    rel, size, base_model, prefix, (layer, down, rank, alpha), data, prompt = FAMILY_RUNS[family]
    photos = sample_data(data)
    if photos is None: pytest.skip(f"../shared/data/{data} (sample photos) not found")
    r = subprocess.run(CLI + ["tiny", family, str(tmp_path / "models")], capture_output=True, text=True, timeout=300)
    ckpt = tmp_path / "models" / rel
    assert r.returncode == 0 and ckpt.exists() and "RANDOM" in r.stdout + r.stderr, r.stderr
    assert r.stdout == f"{ckpt}\n"   # only the path on stdout
    out = run(["train", family, "--pretrained_path", ckpt, "--dataset_path", photos, "--output_path", tmp_path / "run",
               "--height", size, "--width", size, "--batch_size", 2, "--steps_per_epoch", 6, "--precision", "32",
               "--lora_rank", 4, "--lora_alpha", 8.0, "--learning_rate", 1e-3, "--center_crop", "--accelerator", "cpu"], tmp_path)
    lora = tmp_path / "run" / f"{family}_lora_epoch000.safetensors"
    assert f"LoRA saved to {lora}" in out
    sd, meta = load_file(lora), read_safetensors_metadata(lora)
    assert sd and all(k.startswith(prefix) for k in sd), sorted(sd)[:3]
    assert sd[f"{layer}.{down}"].shape[0] == rank and sd[f"{layer}.alpha"].item() == alpha
    assert any(v.abs().max() > 0 for n, v in sd.items() if n.endswith(("lora_up.weight", "lora_B.weight"))), "LoRA did not train"
    assert (meta["diffsynth_nb.family"], meta["ss_base_model_version"], meta["ss_steps"]) == (family, base_model, "6")

    common = ["--pretrained_path", ckpt, "--prompt", prompt, "--height", size, "--width", size, "--num_inference_steps", 4, "--seed", 1]
    r = subprocess.run(CLI + ["generate", family, *map(str, common), "--output", str(tmp_path / "base.png")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stderr == "", r.stderr   # nothing but our own lines: no third-party notices (torchvision, ...)
    run(["generate", family, *common, "--lora_path", lora, "--lora_alpha", 1.0, "--output", tmp_path / "lora.png"], tmp_path)
    base, with_lora = (np.asarray(Image.open(tmp_path / f)) for f in ("base.png", "lora.png"))
    assert base.shape == with_lora.shape == (size, size, 3)
    assert (base != with_lora).any(), "merging the trained LoRA did not change the image"


def test_cli_sd3_train_and_generate(tmp_path):
    """SD3 (tiny, with T5) through the same commands: its LoRA file is in diffusers names (`transformer.….lora_A.weight`),
    with alpha/rank folded into lora_B; the 2024 trainer's timestep sampling and weighting are selectable by flag."""
    r = subprocess.run(CLI + ["tiny", "sd3", "--t5", str(tmp_path / "models")], capture_output=True, text=True, timeout=300)
    ckpt = tmp_path / "models" / "stable_diffusion_3" / "sd3_medium_incl_clips_t5xxlfp16.safetensors"
    assert r.returncode == 0 and r.stdout == f"{ckpt}\n" and "RANDOM" in r.stderr, r.stderr
    out = run(["train", "sd3", "--pretrained_path", ckpt, "--dataset_path", DOG, "--output_path", tmp_path / "run",
               "--height", 32, "--width", 32, "--batch_size", 2, "--steps_per_epoch", 6, "--precision", "32",
               "--lora_rank", 4, "--lora_alpha", 8.0, "--learning_rate", 1e-3, "--center_crop", "--accelerator", "cpu",
               "--timestep_sampling", "uniform", "--loss_weighting", "bell"], tmp_path)
    lora = tmp_path / "run" / "sd3_lora_epoch000.safetensors"
    assert f"LoRA saved to {lora}" in out
    sd, meta = load_file(lora), read_safetensors_metadata(lora)
    k = "transformer.transformer_blocks.0.attn.add_q_proj"
    assert sd[f"{k}.lora_A.weight"].shape[0] == 4 and all(n.startswith("transformer.") for n in sd)
    assert any(v.abs().max() > 0 for n, v in sd.items() if n.endswith("lora_B.weight")), "LoRA did not train"
    assert json.loads(meta["lora_adapter_metadata"])["transformer.lora_alpha"] == 4 and meta["diffsynth_nb.trained_alpha"] == "8.0"
    training = json.loads(meta["diffsynth_nb.training"])
    assert (meta["diffsynth_nb.family"], meta["ss_steps"], training["timestep_sampling"], training["loss_weighting"]) == ("sd3", "6", "uniform", "bell")

    common = ["--pretrained_path", ckpt, "--prompt", "a dog", "--height", 32, "--width", 32, "--num_inference_steps", 4, "--seed", 1]
    run(["generate", "sd3", *common, "--output", tmp_path / "base.png"], tmp_path)
    run(["generate", "sd3", *common, "--lora_path", lora, "--output", tmp_path / "lora.png"], tmp_path)
    base, with_lora = (np.asarray(Image.open(tmp_path / f)) for f in ("base.png", "lora.png"))
    assert base.shape == with_lora.shape == (32, 32, 3)
    assert (base != with_lora).any(), "merging the trained LoRA did not change the image"
    r = subprocess.run(CLI + ["train", "sd3", "--pretrained_path", str(ckpt), "--dataset_path", str(DOG), "--height", "40",
                              "--output_path", str(tmp_path / "r40")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--height 40 is not allowed for sd3: use a positive multiple of 16" in r.stderr, r.stderr
    r = subprocess.run(CLI + ["train", "sd15", "--pretrained_path", str(ckpt), "--dataset_path", str(DOG),
                              "--timestep_sampling", "logit_normal"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--timestep_sampling logit_normal: this DDPM family" in r.stderr, r.stderr
