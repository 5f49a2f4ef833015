"""`cdat tune`: CDaT's alpha searched with Ray Tune (ASHA, validation metric only, the best trial tested once).
The CI-sized sweep (2 trials x 2 epochs on the embedded sample) needs the optional extra `pip install -e ".[tune]"`;
without Ray only that test is skipped, and the command's install hint is tested by making Ray's import fail."""
import json
from pathlib import Path
import pandas as pd
import pytest
import torch

from cdatlib.cli import main
from cdatlib.config import TrainConfig
from cdatlib.callbacks import load_checkpoint

try:
    import ray
    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

TINY = ['--method', 'cdat', '--confidence', 'ce', '--epochs', '2', '--batch-size', '64', '--quiet']

def run(capsys, *args):
    rc = main(list(args)); cap = capsys.readouterr()
    return rc, cap.out, cap.err

def test_without_ray_the_command_says_how_to_install_it(tmp_path, capsys, without_ray):
    rc, out, err = run(capsys, 'tune', *TINY, '--out-dir', str(tmp_path))
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and lines == ["cdat: error: cdat tune needs Ray Tune, an optional extra: pip install -e '.[tune]' "
                                 "(or pip install 'ray[tune]>=2.9')"], err
    assert not list(tmp_path.iterdir()), 'refused before anything was trained'

@pytest.mark.parametrize('args,needle', [
    (['--confidence', 'ce', '--epochs', '1'], "method: cdat tune searches CDaT's alpha; add --method cdat"),
    ([*TINY, '--seeds', '0', '1'], 'seeds: a sweep uses one seed, got [0, 1]'),
    ([*TINY, '--samples', '0'], 'samples: at least 1 trial, got 0'),
    ([*TINY, '--alpha-range', 'wide'], "argument --alpha-range: invalid choice: 'wide'"),
])
def test_bad_sweeps_are_one_line(args, needle, tmp_path, capsys):
    rc, out, err = run(capsys, 'tune', *args, '--out-dir', str(tmp_path))
    errors = [l for l in err.splitlines() if l.startswith('cdat: error:')]
    assert rc == 2 and len(errors) == 1 and needle in errors[0], err

@pytest.mark.skipif(not HAVE_RAY, reason='Ray Tune is an optional extra: pip install -e ".[tune]" to run the sweep')
def test_ci_sized_sweep(tmp_path, capsys):
    from cdatlib.tune import tune_cdat, tune_dir
    cfg = TrainConfig(method='cdat', confidence='ce', epochs=2, batch_size=64, out_dir=str(tmp_path), seeds=[3])
    try: res = tune_cdat(cfg, num_samples=2, num_cpus=2, test=True, log=lambda *a: None, warn=lambda *a: None)
    finally: assert not ray.is_initialized(), 'the Ray it started is shut down'
    top = tune_dir(cfg, 3).resolve()
    assert res['dir'] == top and res['metric'] == 'valid_micro_f1'
    trials = pd.read_csv(top/'trials.csv')
    assert len(trials) == 2 and trials.alpha.between(1e4, 1e7).all()       # the paper's range
    assert trials.alpha.nunique() == 2 and (trials.epochs >= 1).all() and (trials.epochs <= 2).all()
    assert trials.valid_micro_f1.is_monotonic_decreasing                   # best first
    done = json.loads((top/'done.json').read_text())
    assert done['alpha'] == trials.alpha[0] and done['run_dir'] == trials.run_dir[0]
    # the best trial's checkpoint: its validation score is the sweep's best, and it was the only one tested
    assert done['valid_micro_f1'] == pytest.approx(trials.valid_micro_f1[0])
    assert {'test_micro_f1', 'baseline_test_micro_f1', 'baseline_valid_micro_f1'} <= set(done)
    for d in trials.run_dir:
        ck = load_checkpoint(Path(d)/'best.pt')
        assert ck['config']['train_config']['alpha'] in set(trials.alpha)
        assert ck['config']['train_config']['init_from'] == str(top/'baseline'/'best.pt')   # stage 1 shared
    assert len(list((top/'baseline').glob('best.pt'))) == 1
    # a finished sweep is reported again, not run again
    rc, out, err = run(capsys, 'tune', *TINY, '--seeds', '3', '--out-dir', str(tmp_path), '--resume', '--samples', '2')
    assert rc == 0, err
    assert 'best: alpha' in out and 'baseline' in out and 'cdat' in out
    rc, out, err = run(capsys, 'tune', *TINY, '--seeds', '3', '--out-dir', str(tmp_path), '--samples', '2')
    assert rc == 2 and 'holds a run already' in err

@pytest.mark.skipif(not HAVE_RAY, reason='Ray Tune is an optional extra: pip install -e ".[tune]" to run the sweep')
def test_a_trial_that_fails_by_itself_is_reported_once_not_retried(tmp_path, monkeypatch):
    import cdatlib.tune as T
    from cdatlib.run import RunFailedError
    monkeypatch.setitem(T.ALPHA_RANGES, 'paper', (1e39, 1e40))    # alpha overflows float32: every trial's loss is inf
    cfg = TrainConfig(method='cdat', confidence='ce', epochs=2, batch_size=64, out_dir=str(tmp_path), seeds=[0])
    with pytest.raises(RunFailedError, match=r'all 2 trials failed.*non-finite loss.*not retried'):
        T.tune_cdat(cfg, num_samples=2, num_cpus=2, log=lambda *a: None, warn=lambda *a: None)
    # each trial started once: Ray kept no error to retry, and its folder holds one run's epochs at most
    for d in (T.tune_dir(cfg, 0)/'trials').iterdir():
        assert not (d/'done.json').exists()
