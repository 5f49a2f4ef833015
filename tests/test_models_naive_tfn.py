"Real-data and script checks for NaiveFusion, TFN and the real-MOSI experiment (the real-data tests skip when the data is absent)."
import os, subprocess, sys
from pathlib import Path
import pytest
import torch

from cdatlib.formats import shared_data_dir
ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()   # $CDATLIB_SHARED_DATA (tests/conftest.py sets it in a checkout beside shared/data)
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


def test_naive_fusion_none_is_the_official_early_model():
    "encoder='none': h_m = masked time-mean of the raw features, z = their concatenation, one Linear layer"
    from cdatlib.dataset import MODALITIES
    from cdatlib.encoders import masked_mean
    from cdatlib.models.core import toy_batch
    from cdatlib.models.naive import NaiveFusion
    dims = {'text': 6, 'audio': 3, 'vision': 4}
    b = toy_batch(B=6, L={'text': 5, 'audio': 4, 'vision': 3}, dims=dims, seed=3)
    torch.manual_seed(0)
    m = NaiveFusion(dims, 2, encoder='none').train()   # train mode: nothing random in it either
    assert [n for n, _ in m.named_parameters()] == ['head.weight', 'head.bias']
    out = m(b, drop='audio')
    z = torch.cat([masked_mean(b[k], b[k + '_mask']) * (k != 'audio') for k in MODALITIES], -1)
    assert torch.allclose(out.z, z) and torch.allclose(out.logits, z @ m.head.weight.T + m.head.bias, atol=1e-6)
    assert not any(h.requires_grad for h in out.h.values())   # nothing before the head can learn
    padded = dict(b, text=b['text'].clone()); padded['text'][0, :2] = 100.   # the first sample's padding steps
    assert torch.equal(m(padded).logits, m(b).logits)
    with pytest.raises(ValueError, match="'mean', 'lstm' or 'none'"): NaiveFusion(dims, 2, encoder='gru')
