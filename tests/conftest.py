import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture
def tiny_root(tmp_path):
    "`tmp_path` holding a tiny random SD 1.5 in `models/` and 5 drawn training pictures in `data/`."
    from diffsynth_nb import write_tiny_sd15
    from diffsynth_nb.demo import draw_toy_dataset
    write_tiny_sd15(tmp_path / "models")
    draw_toy_dataset(tmp_path / "data", n=5, size=40)
    return tmp_path
