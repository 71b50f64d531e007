"""`download_models` in a fresh process knows every family's presets, and puts files where the loaders read them."""
import subprocess, sys, textwrap


def test_download_models_fresh_process(tmp_path):
    code = textwrap.dedent(f"""
        from diffsynth_nb import download_models
        calls = []
        def fake(repo_id, filename, local_dir):   # no network here: record what would be fetched
            calls.append((repo_id, filename)); return local_dir + "/" + filename
        for p in download_models(["StableDiffusion_v15"], {str(tmp_path)!r}, downloader=fake): print(p)
        print(calls[0])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    sd = tmp_path / "stable_diffusion"
    assert lines[:5] == [str(sd / "v1-5-pruned-emaonly.safetensors")] + [
        str(sd / "tokenizer" / f) for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")]
    assert lines[5] == "('stable-diffusion-v1-5/stable-diffusion-v1-5', 'v1-5-pruned-emaonly.safetensors')"
