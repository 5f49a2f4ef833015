"""CDaT and HyCon from the command line: `cdat train --method cdat --confidence {const,ce,confidnet}` on every
baseline (stage 1 trained, or taken from `--init-from`; stage 2 for ConfidNet; stage 3 CDaT fine-tuning, each in its
own folder), a killed CDaT run resumed to identical weights, the registry names `hycon` and `cdat`, and
`cdat analyze masking RUN_DIR`. Tiny runs (one epoch per stage, batches of 100) on the embedded MOSEI sample."""
import json, os, signal, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

from cdatlib.cli import main
from cdatlib.config import MODELS, ADDONS, TrainConfig
from cdatlib.callbacks import load_checkpoint
from cli_helpers import one_thread, cdat_main, cdat_proc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT/'data_samples'/'tailor_mosei_aligned.pt'
FAST = ['--epochs', '1', '--batch-size', '100', '--quiet']
CONFIDNET = ['--confidnet-arg', 'epochs=5']   # the official 500 epochs are for real runs
SMALL = {'naive': [], 'tfn': [], 'misa': [],  # TAILOR's reference size takes a minute on 2 cores: shrink it
         'tailor': ['--model-arg', 'hidden_size=32', '--model-arg', 'ff_dim=32', '--model-arg', 'text_layers=1',
                    '--model-arg', 'num_heads=2']}

def one_error(rc, err, needle, code=2):
    errors = [l for l in err.splitlines() if l.startswith('cdat: error:')]
    assert 'Traceback' not in err and len(errors) == 1 and needle in errors[0], err
    assert rc == code

@pytest.fixture(scope='module')
def baselines(tmp_path_factory):
    "A finished plain run per model, trained on first use: the `--init-from` of the const and ce variants"
    out, made = tmp_path_factory.mktemp('baselines'), {}
    def get(model):
        if model not in made:
            n = torch.get_num_threads(); torch.set_num_threads(1)
            try: assert main(['train', '--model', model, *SMALL[model], *FAST, '--out-dir', str(out)]) == 0
            finally: torch.set_num_threads(n)
            made[model] = out/f'{model}-tailor_mosei_aligned'/'seed-0'
        return made[model]
    return get

def close_metrics(a, b):
    return all(abs(a[k] - b[k]) < 1e-6 for k in a if k.startswith('valid_') and isinstance(a[k], float))

# ---------------------------------------------------------------- every confidence on every baseline

@pytest.mark.parametrize('confidence', ['const', 'ce', 'confidnet'])
@pytest.mark.parametrize('model', ['naive', 'tfn', 'misa', 'tailor'])
def test_cdat_method_on_every_baseline(model, confidence, baselines, tmp_path, capsys):
    # the ConfidNet variant trains all three stages; the others start from a finished baseline (--init-from)
    init = [] if confidence == 'confidnet' else ['--init-from', str(baselines(model))]
    rc, out, err = cdat_main(capsys, 'train', '--model', model, *SMALL[model], '--method', 'cdat', '--confidence', confidence,
                       *FAST, *CONFIDNET, *init, '--alpha', '1e4', '--test', '--out-dir', str(tmp_path))
    assert rc == 0, err[-3000:]
    top = tmp_path/f'{model}+cdat_{confidence}-tailor_mosei_aligned'/'seed-0'
    stages = sorted(p.name for p in top.iterdir() if p.is_dir())
    assert stages == {'const': ['cdat'], 'ce': ['cdat'], 'confidnet': ['baseline', 'cdat', 'confidnet']}[confidence]
    baseline_ckpt = top/'baseline'/'best.pt' if confidence == 'confidnet' else baselines(model)/'best.pt'
    stage3 = json.loads((top/'cdat'/'config.json').read_text())
    assert stage3['init_from'] == str(baseline_ckpt) and stage3['method'] == ''
    assert stage3['confidence'] == confidence and stage3['alpha'] == 1e4
    assert stage3['addons'] == {'cdat': {'confidnet': str(top/'confidnet'/'confidnet.pt')} if confidence == 'confidnet' else {}}
    log = pd.read_csv(top/'cdat'/'log.csv')
    assert 'train_loss_cdat' in log and np.isfinite(log.train_loss_cdat).all()      # the transfer term was added
    done = json.loads((top/'done.json').read_text())
    for split in ('valid', 'test'):                                                   # side by side, as printed
        assert f'{split}_micro_f1' in done and f'baseline_{split}_micro_f1' in done
        assert 'baseline' in out and f'{split}_micro_f1' in out
    # the baseline column is the baseline's own numbers, the CDaT column the fine-tuned model's
    b = json.loads((baseline_ckpt.parent/'done.json').read_text())
    assert done['baseline_valid_micro_f1'] == pytest.approx(b['valid_micro_f1'])
    assert done['valid_micro_f1'] == pytest.approx(json.loads((top/'cdat'/'done.json').read_text())['valid_micro_f1'])
    # the fine-tuning started from the baseline: a zero-epoch difference would mean it did not train
    a, c = load_checkpoint(baseline_ckpt)['model'], load_checkpoint(top/'cdat'/'last.pt')['model']
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    if confidence == 'confidnet':
        cn = load_checkpoint(top/'confidnet'/'confidnet.pt')
        # the trained net's own settings, defaults included, so that load_confidnet rebuilds it exactly
        assert cn['arch'] == {'n_layers': 4, 'hidden': [256] * 3, 'dropout': 0.5, 'output': 'sigmoid'}
        assert len(cn['history']['valid_mse']) == 5
        # the CDaT stage's checkpoint holds the frozen ConfidNet it used, unchanged
        saved = load_checkpoint(top/'cdat'/'last.pt')['cbs']['CDaT']['confidnet']
        for k, v in cn['model'].items(): assert torch.equal(saved[k], v), k

def test_evaluate_a_cdat_run_uses_the_cdat_stage(baselines, tmp_path, capsys):
    args = ['train', '--method', 'cdat', *FAST, '--init-from', str(baselines('naive')), '--out-dir', str(tmp_path)]
    assert cdat_main(capsys, *args)[0] == 0
    top = tmp_path/'naive+cdat_ce-tailor_mosei_aligned'/'seed-0'
    rc, out, err = cdat_main(capsys, 'evaluate', str(top), '--split', 'valid')
    assert rc == 0, err
    f1 = float(next(l.split()[-1] for l in out.splitlines() if 'valid_micro_f1' in l))
    assert f1 == pytest.approx(json.loads((top/'cdat'/'done.json').read_text())['valid_micro_f1'], abs=1e-4)
    rc, out, err = cdat_main(capsys, *args, '--resume')                 # finished: nothing trained again
    assert rc == 0 and 'already finished' in out
    rc, out, err = cdat_main(capsys, *args)
    one_error(rc, err, 'holds a run already')
    rc, out, err = cdat_main(capsys, *args, '--resume', '--alpha', '5')
    one_error(rc, err, 'alpha (saved 10000.0, given 5.0)')

# ---------------------------------------------------------------- killed and resumed

KILL = ['train', '--method', 'cdat', '--confidence', 'confidnet', '--epochs', '2', '--batch-size', '64', '--quiet',
        *CONFIDNET]
RUN = 'naive+cdat_confidnet-tailor_mosei_aligned'

def record(out):
    top = Path(out)/RUN/'seed-0'
    rec = {f'{s}/{f}': load_checkpoint(top/s/f)['model'] for s in ('baseline', 'cdat') for f in ('best.pt', 'last.pt')}
    rec['confidnet'] = load_checkpoint(top/'confidnet'/'confidnet.pt')['model']
    rec['log'] = pd.read_csv(top/'cdat'/'log.csv').drop(columns='time')
    rec['done'] = {k: v for k, v in json.loads((top/'done.json').read_text()).items() if k not in ('seconds', 'check')}
    return rec

@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp('ref')
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: assert main([*KILL, '--out-dir', str(out)]) == 0
    finally: torch.set_num_threads(n)
    return record(out)

# 200 training samples in batches of 64: 4 batches per epoch; the baseline's 2 epochs are batches 1-8
@pytest.mark.parametrize('phase', ['batch#11', 'wrote:confidnet.pt#1', 'write:last.pt#4'])
def test_killed_cdat_run_resumes_to_identical_weights(phase, uninterrupted, tmp_path, capsys):
    "In CDaT's first epoch; between the ConfidNet file and its done.json; while CDaT's last last.pt is written"
    r = cdat_proc(*KILL, '--out-dir', str(tmp_path), kill_at=phase)
    assert r.returncode == -signal.SIGKILL, (phase, r.stderr[-2000:])
    rc, out, err = cdat_main(capsys, *KILL, '--out-dir', str(tmp_path), '--resume')
    assert rc == 0, err
    assert not list(tmp_path.rglob('*.tmp'))
    got = record(tmp_path)
    for k in ('baseline/best.pt', 'baseline/last.pt', 'cdat/best.pt', 'cdat/last.pt', 'confidnet'):
        for name, v in uninterrupted[k].items(): assert torch.equal(v, got[k][name]), (phase, k, name)
    pd.testing.assert_frame_equal(uninterrupted['log'], got['log'])
    assert uninterrupted['done'] == got['done']

# ---------------------------------------------------------------- HyCon and CDaT by name

def test_registry_names():
    assert MODELS['hycon'] == 'cdatlib.hycon:HyConModel'
    assert ADDONS['hycon'] == 'cdatlib.hycon:HyCon' and ADDONS['cdat'] == 'cdatlib.cdat.transfer:CDaT'

@pytest.mark.parametrize('args,logged', [
    (['--model', 'hycon', '--model-arg', 'd=10', '--model-arg', 'layers=1'], 'train_loss_hycon_scl'),
    (['--model', 'tailor', *SMALL['tailor'], '--with', 'hycon'], 'train_loss_hycon_scl'),
    (['--with', 'cdat', '--confidence', 'const', '--with', 'hycon'], 'train_loss_cdat'),
])
def test_hycon_and_cdat_addons_train(args, logged, tmp_path, capsys):
    rc, out, err = cdat_main(capsys, 'train', *args, *FAST, '--out-dir', str(tmp_path))
    assert rc == 0, err[-2000:]
    (log,) = tmp_path.rglob('log.csv')
    log = pd.read_csv(log)
    assert logged in log and np.isfinite(log[logged]).all(), list(log)

def test_cdat_plus_hycon_method(baselines, tmp_path, capsys):
    rc, out, err = cdat_main(capsys, 'train', '--method', 'cdat+hycon', '--confidence', 'ce', *FAST, '--out-dir', str(tmp_path),
                       '--with-arg', 'cdat.adjust=threshold', '--with-arg', 'hycon.v2=true')
    assert rc == 0, err[-2000:]
    top = tmp_path/'naive+cdat_ce+hycon-tailor_mosei_aligned'/'seed-0'
    assert json.loads((top/'baseline'/'config.json').read_text())['addons'] == {'hycon': {'v2': True}}
    assert json.loads((top/'cdat'/'config.json').read_text())['addons'] == {'hycon': {'v2': True}, 'cdat': {'adjust': 'threshold'}}
    cols = set(pd.read_csv(top/'cdat'/'log.csv'))
    assert {'train_loss_cdat', 'train_loss_hycon_scl'} <= cols
    assert 'train_loss_cdat' not in set(pd.read_csv(top/'baseline'/'log.csv'))

@pytest.mark.parametrize('args,needle', [
    (['--method', 'cdta'], "argument --method: invalid choice: 'cdta'"),
    (['--method', 'cdat', '--confidence', 'tcp'], "argument --confidence: invalid choice: 'tcp'"),
    (['--with', 'cdat', '--confidence', 'confidnet'], "confidence: 'confidnet' needs a trained ConfidNet"),
    (['--method', 'cdat', '--with-arg', 'cdat.alpha=3'], "addons.cdat.alpha: set it as the run's alpha (--alpha)"),
    (['--method', 'cdat', '--with-arg', 'cdat.adjsut=ratio'], "addons.cdat: unknown argument(s) ['adjsut']"),
    (['--method', 'cdat', '--confidnet-arg', 'layers=3'], "confidnet_args: unknown argument(s) ['layers']"),
    (['--method', 'cdat', '--alpha', 'nan'], 'alpha: a finite number >= 0'),
    (['--method', 'cdat', '--init-from', '/nowhere/seed-0'], 'init_from: /nowhere/seed-0/best.pt does not exist'),
])
def test_bad_cdat_arguments_are_one_line(args, needle, tmp_path, capsys):
    rc, out, err = cdat_main(capsys, 'train', *args, *FAST, '--out-dir', str(tmp_path))
    one_error(rc, err, needle)
    assert not list(tmp_path.iterdir())

def test_init_from_a_baseline_of_another_model_is_one_line(baselines, tmp_path, capsys):
    rc, out, err = cdat_main(capsys, 'train', '--model', 'tfn', '--method', 'cdat', *FAST, '--init-from', str(baselines('naive')),
                       '--out-dir', str(tmp_path))
    one_error(rc, err, 'its weights do not fit a tfn model')

# ---------------------------------------------------------------- cdat analyze masking

def test_analyze_masking_counts_what_the_model_gets_wrong(baselines, tmp_path, capsys):
    from cdatlib.run import analyze_masking
    from cdatlib.formats import load_dataset
    from cdatlib.config import build_model
    run_dir = baselines('naive')
    rc, out, err = cdat_main(capsys, 'analyze', 'masking', str(run_dir), '--plot', str(tmp_path/'m.png'))
    assert rc == 0, err
    assert (tmp_path/'m.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    rows = {l.split()[0]: l.split()[1] for l in out.splitlines()[1:] if l.split() and l.split()[0] in ('text', 'audio', 'vision', 'any')}
    assert set(rows) == {'text', 'audio', 'vision', 'any'}
    # the misclassified count, recomputed from the model's own predictions (labels > 0.5, empty label sets left out)
    data = load_dataset(SAMPLE)
    model = build_model(TrainConfig(), data)
    model.load_state_dict(load_checkpoint(run_dir/'best.pt')['model']); model.eval()
    with torch.no_grad(): p = torch.sigmoid(model(data.valid.batch(torch.arange(len(data.valid)))).logits) > 0.5
    y = data.valid.labels > 0.5
    wrong = int(((p != y).any(1) & y.any(1)).sum())
    improved = {k: int(v.split('/')[0]) for k, v in rows.items()}
    assert all(int(v.split('/')[1]) == wrong for v in rows.values()), (rows, wrong)
    assert max(improved[m] for m in ('text', 'audio', 'vision')) <= improved['any'] <= sum(improved[m] for m in ('text', 'audio', 'vision'))
    # --keep-empty counts more samples; the Jaccard index is another criterion; the API's defaults are the command's
    keep = analyze_masking(run_dir, keep_empty=True)['naive']
    assert int(keep.table.loc['any', 'misclassified']) == int(((p != y).any(1)).sum())
    jac = analyze_masking(run_dir, criterion='jaccard')['naive']
    assert jac.criterion == 'jaccard' and jac.table.loc['any', 'misclassified'] == wrong
    assert analyze_masking(run_dir)['naive'].criterion == 'exact'

@pytest.mark.parametrize('args,needle', [
    (['/nowhere/run'], 'no such run folder'),
    (['RUN', '--criterion', 'f1'], "argument --criterion: invalid choice: 'f1'"),
    (['RUN', '--plot', 'masking.jpg'], 'plot: masking.jpg: give a .png, .pdf or .svg file'),
    (['RUN', '--data', '/nowhere/mosei.pkl'], 'data: /nowhere/mosei.pkl does not exist'),
])
def test_analyze_masking_errors_are_one_line(args, needle, baselines, capsys):
    args = [str(baselines('naive')) if a == 'RUN' else a for a in args]
    rc, out, err = cdat_main(capsys, 'analyze', 'masking', *args)
    one_error(rc, err, needle)

def test_confidnet_output_option_survives_save_and_load(tmp_path, capsys):
    "--confidnet-arg output=\"linear\" (the official network): the saved file rebuilds that net, not the sigmoid default"
    from cdatlib.cdat.confidence import load_confidnet
    from cdatlib.cdat.confidence import ConfidNet
    rc, out, err = cdat_main(capsys, 'train', '--method', 'cdat', '--confidence', 'confidnet', *FAST, *CONFIDNET,
                       '--confidnet-arg', 'output="linear"', '--confidnet-arg', 'hidden=[16, 8]', '--confidnet-arg', 'n_layers=3',
                       '--out-dir', str(tmp_path))
    assert rc == 0, err[-3000:]
    path = next(tmp_path.glob('*/seed-0'))/'confidnet'/'confidnet.pt'
    ck = load_checkpoint(path)
    assert ck['arch'] == {'n_layers': 3, 'hidden': [16, 8], 'dropout': 0.5, 'output': 'linear'}
    net = load_confidnet(path)
    # the trained net, rebuilt by hand from its weights with the settings it was trained with
    ref = ConfidNet(ck['in_dim'], n_layers=3, hidden=[16, 8], output='linear'); ref.load_state_dict(ck['model']); ref.eval()
    z = torch.randn(7, ck['in_dim']) * 10
    assert net.output == 'linear' and torch.equal(net(z), ref(z))
    # the CDaT stage trained with that same network (its checkpoint holds the weights it used)
    saved = load_checkpoint(path.parents[1]/'cdat'/'last.pt')['cbs']['CDaT']['confidnet']
    for k, v in ck['model'].items(): assert torch.equal(saved[k], v), k
