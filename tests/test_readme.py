"README.md is generated from nbs/index.ipynb; CI fails when they drift apart."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_matches_index_notebook():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr or r.stdout

def test_readme_states_the_two_setup_commands():
    txt = (ROOT/'README.md').read_text()
    assert 'make run' in txt and 'make test' in txt
    assert 'pip install "torch==2.13.0" -e ".[dev]"' in txt
