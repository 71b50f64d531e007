import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import re, subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHES = re.compile(r"(^.. |/)(__pycache__|\.pytest_cache|[^/]*\.egg-info)(/|$)")
_UNTRACKED, _LEFT = pytest.StashKey[set](), pytest.StashKey[list]()


def untracked_files():
    "Files in the repository git does not track (untracked or ignored), caches and the venv aside; None outside a git checkout."
    try: r = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".", ":!.venv", ":!venv"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired): return None
    if r.returncode: return None
    return {l[3:] for l in r.stdout.splitlines() if l[:3] in ("?? ", "!! ") and not CACHES.search(l)}


def pytest_sessionstart(session):
    session.config.stash[_UNTRACKED] = untracked_files()


def pytest_sessionfinish(session, exitstatus):
    "The tests write only to temporary folders: a file they left in the repository fails the run (named in the summary)."
    before, after = session.config.stash.get(_UNTRACKED, None), untracked_files()
    if before is None or after is None: return
    if new := sorted(after - before):
        session.config.stash[_LEFT] = new
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if new := config.stash.get(_LEFT, None):
        terminalreporter.write_line("the tests left files in the repository (they may write only to temporary folders):\n  "
                                    + "\n  ".join(new[:20]), red=True)


@pytest.fixture
def tiny_root(tmp_path):
    "`tmp_path` holding a tiny random SD 1.5 in `models/` and 5 drawn training pictures in `data/`."
    from diffsynth_nb import write_tiny_sd15
    from diffsynth_nb.demo import draw_toy_dataset
    write_tiny_sd15(tmp_path / "models")
    draw_toy_dataset(tmp_path / "data", n=5, size=40)
    return tmp_path
