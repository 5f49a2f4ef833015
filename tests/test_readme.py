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


def _sample_commands():
    "The README's block of commands that run as written on the bundled sample (the first bash block after that promise)"
    txt = (ROOT/'README.md').read_text()
    start = txt.index('runs as written from the repository')
    block = txt[txt.index('```bash', start) + len('```bash'):]
    block = block[:block.index('```')]
    return [l.split('  #')[0].strip() for l in block.strip().splitlines() if l.strip()]

def _help_examples():
    "The `cdat train --help` examples (a command, then its comment after three spaces)"
    from cdatlib.cli import TRAIN_EXAMPLES
    return [l.strip().split('   ')[0].strip() for l in TRAIN_EXAMPLES.splitlines()[1:] if l.strip()]

NEEDS = {'cdat tune': 'ray', '--log tensorboard': 'tensorboard'}   # optional extras, installed by CI

def test_readme_sample_commands_run_as_written(tmp_path):
    """Each command of the README's sample block, then the `--help` examples not among them, in order, from a folder
    laid out like the repository's root: exit 0, no traceback, and no warning that the selected model is a constant
    predictor. Durations are printed, not asserted."""
    import importlib.util, shlex, time
    (tmp_path/'data_samples').symlink_to(ROOT/'data_samples')
    cdat = Path(sys.executable).parent/'cdat'
    env = {**__import__('os').environ, 'OMP_NUM_THREADS': '1'}
    cmds = _sample_commands()
    assert len(cmds) >= 8 and all(c.startswith('cdat ') for c in cmds), cmds
    cmds += [c for c in _help_examples() if c not in cmds]
    for cmd in cmds:
        missing = [mod for key, mod in NEEDS.items() if key in cmd and importlib.util.find_spec(mod) is None]
        if missing: print(f"skipped (extra not installed: {missing[0]}): {cmd}"); continue
        t0 = time.time()
        r = subprocess.run([str(cdat), *shlex.split(cmd)[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        print(f"{time.time() - t0:6.1f} s  rc {r.returncode}  {cmd}")
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert 'Traceback' not in r.stderr and "constant predictor" not in r.stderr, f"{cmd}\n{r.stderr[-2000:]}"
