"Real-data and script checks for NaiveFusion, TFN and the real-MOSI experiment (the real-data tests skip when the data is absent)."
import os, subprocess, sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('CDATLIB_SHARED_DATA', ROOT.parent / 'shared' / 'data'))
NPZ = DATA / 'mosi' / 'mosi_poria_utterance_real.npz'
need_data = pytest.mark.skipif(not NPZ.exists(), reason=f"real data not found at {NPZ}: clone beside shared/ or set CDATLIB_SHARED_DATA")


@need_data
def test_real_mosi_linear_baseline_beats_constant():
    from cdatlib.experiments.real_mosi import load_real_mosi, linear_baseline
    for split in ('std', 'poria'):
        data = load_real_mosi(split, DATA)
        constant = (data.test.labels - data.train.labels.median()).abs().mean().item()
        res = linear_baseline(data)
        assert res['mae'] < constant and res['acc2_has0'] > 0.6, (split, res, constant)


@need_data
@pytest.mark.parametrize('name', ['naive', 'tfn'])
def test_models_run_on_real_utterances(name):
    from cdatlib.experiments.real_mosi import load_real_mosi
    from cdatlib.config import model_class
    data = load_real_mosi('std', DATA)
    b = data.train.batch(torch.arange(8))
    out = model_class(name)(data.dims, 1)(b)
    assert out.logits.shape == (8, 1) and torch.isfinite(out.logits).all()


def test_experiment_module_runs_as_a_command():
    run = lambda *a: subprocess.run([sys.executable, '-m', 'cdatlib.experiments.real_mosi', *a], capture_output=True,
                                    text=True, cwd=ROOT)
    r = run('--help')
    assert r.returncode == 0 and '--seeds' in r.stdout and 'tailor' in r.stdout, r.stderr
    r = run('--data', str(ROOT / 'no-such-folder'))   # no data: a clear message, nothing written
    assert r.returncode != 0 and 'not found at' in r.stderr, (r.returncode, r.stderr)


def test_bench_help():
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_models.py'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and '--reps' in r.stdout
