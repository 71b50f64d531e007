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
        sd3 = download_models(["StableDiffusion3_without_T5", "StableDiffusion3"], {str(tmp_path)!r}, downloader=fake)
        print(len(sd3), sd3[0], sd3[9], sorted(p.name for p in sd3 if p.parent.name == "tokenizer_3"))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    sd = tmp_path / "stable_diffusion"
    assert lines[:5] == [str(sd / "v1-5-pruned-emaonly.safetensors")] + [
        str(sd / "tokenizer" / f) for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")]
    assert lines[5] == "('stable-diffusion-v1-5/stable-diffusion-v1-5', 'v1-5-pruned-emaonly.safetensors')"
    sd3 = tmp_path / "stable_diffusion_3"   # SD3: the file without T5 + 2 tokenizer folders, then the file with T5 + 3 folders
    assert lines[6] == (f"22 {sd3 / 'sd3_medium_incl_clips.safetensors'} {sd3 / 'sd3_medium_incl_clips_t5xxlfp16.safetensors'} "
                        "['special_tokens_map.json', 'spiece.model', 'tokenizer.json', 'tokenizer_config.json']")


def test_readme_imports_work_in_a_fresh_process():
    """Every `from diffsynth_nb import ...` line of the README works as the first line of a new interpreter
    (an import cycle between the family modules and the sampler once broke the README's ModelManager examples)."""
    from pathlib import Path
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    lines = sorted({l.strip() for l in readme.splitlines() if l.strip().startswith("from diffsynth_nb import ")})
    assert len(lines) >= 3, lines
    procs = {l: subprocess.Popen([sys.executable, "-c", l], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for l in lines}
    failed = {}
    for line, p in procs.items():
        out, err = p.communicate(timeout=300)
        if p.returncode: failed[line] = err.strip().splitlines()[-1:]
    assert not failed, failed


def test_download_models_offline_says_one_line(tmp_path):
    """With the real `hf_hub_download` and no hub (offline mode; an endpoint that refuses connections, its backoff
    waits skipped to keep the test short) the only output is our one error: no retry warnings, no traceback."""
    import os
    code = textwrap.dedent(f"""
        import sys, time
        if sys.argv[1] == "unreachable": time.sleep = lambda s: None   # the hub client's backoff between its 5 retries
        from diffsynth_nb import download_models
        try: download_models(["StableDiffusion_v15"], {str(tmp_path / "models")!r})
        except ValueError as e: print(f"{{type(e).__name__}}: {{e}}")
    """)
    cases = {"offline": {"HF_HUB_OFFLINE": "1"}, "unreachable": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}}
    procs = {case: subprocess.Popen([sys.executable, "-c", code, case], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "HF_HOME": str(tmp_path / "hf_home"), **env}) for case, env in cases.items()}
    for case, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and err == "", (case, err)
        lines = out.splitlines()
        assert len(lines) == 1 and lines[0].startswith("DownloadError: StableDiffusion_v15: could not fetch v1-5-pruned-emaonly"
                                                       ".safetensors from stable-diffusion-v1-5/stable-diffusion-v1-5 ("), (case, out)
        assert "put the file at" in lines[0] and not (tmp_path / "models" / "stable_diffusion" / "v1-5-pruned-emaonly.safetensors").exists()
