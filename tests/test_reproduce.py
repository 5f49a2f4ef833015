"""Every declared experiment runs under --smoke; grids resume; a two-run grid goes through a local Ray; Table 7's losses match
their loops; CDaT's alpha is searched per row (the sweep needs the optional extra `pip install -e ".[tune]"`, and is skipped without it)"""
import json, os, re, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
import torch
from cdatlib.cli import main as cdat
from cdatlib.config import ConfigError
from cdatlib.hycon import same_class
from cdatlib.tune import RAY_HINT
from cdatlib.reproduce import (EXPERIMENTS, PUBLISHED, ALT_LOSSES, reproduce, resolve, pending, alt_loss, alt_loss_loop,
                               main, summary_table, slug, ALPHA_NOTE, alpha_note)

try:
    import ray
    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
quiet = lambda *a, **k: None

PLOTTED = ('cdat-table3', 'cdat-fig1', 'hycon-table4', 'hycon-table8') # the figure of each kind of table; the others skip it for time

@pytest.mark.parametrize('name', list(EXPERIMENTS))
def test_every_row_of_every_experiment_resolves(name, tmp_path):
    exp = EXPERIMENTS[name]
    cfgs = resolve(exp, smoke=True, out=tmp_path, all_rows=True)
    assert set(cfgs) == {r.label for r in exp.rows if not r.derive}
    assert len({c.run_dir(0) for c in cfgs.values()}) == len(cfgs) # no two rows share a folder
    full = resolve(exp, data=str(ROOT/'data_samples'/__import__('cdatlib.reproduce', fromlist=['x']).DATASETS[exp.dataset]['sample']), out=tmp_path)
    assert all(c.seeds == [0, 1, 2, 3, 4] for c in full.values()) # 5 seeds by default

@pytest.mark.parametrize('name', list(EXPERIMENTS))
def test_every_experiment_runs_under_smoke(name, tmp_path):
    "alpha fixed here, for time and without Ray: the alpha search of a whole grid is the cdat-table2 test below"
    exp = EXPERIMENTS[name]
    plot = name in PLOTTED
    res = reproduce(name, smoke=True, out=tmp_path, plot=plot, log=quiet, alpha_trials=0)
    table = res['table']
    trained = [r.label for r in exp.rows if exp.smoke_rows is None or r.label in exp.smoke_rows]
    assert list(table.index) == trained # every row (the derived ones too), or the smoke subset
    assert ('png' in res['files']) == plot
    for m in exp.metrics: # a number (mean ± n/a for one seed), not a missing value
        assert table[m].map(lambda s: s != 'n/a' and bool(re.match(r'^-?[\d,.]+', s))).all(), (m, table[m].tolist())
    has_pub = any(c.endswith('(published)') for c in table.columns)
    assert has_pub == (exp.published is not None)
    md = res['files']['md'].read_text()
    assert 'Smoke run' in md and exp.table in md
    assert ("alpha fixed at 10000, not searched (not the paper's protocol)" in md) == (ALPHA_NOTE in exp.note), exp.note
    assert ALPHA_NOTE not in md and 'alpha' not in res['files'] # the note says what was done, not the protocol's default
    cfgs = json.loads(res['files']['configs'].read_text())
    assert set(cfgs['configs']) == {r.label for r in exp.rows if not r.derive and r.label in trained}
    assert cfgs['environment']['packages']['torch']

def test_published_only_beside_rows_that_have_them(tmp_path):
    t = summary_table(EXPERIMENTS['hycon-table1'], __import__('pandas').DataFrame(
        {'row': ['TFN', 'HyCon'], 'seed': [0, 0], 'acc7': [.3, .4], 'acc2_non0': [.7, .8], 'f1_non0': [.7, .8], 'mae': [1., .9], 'corr': [.5, .6]}))
    assert t.loc['HyCon', 'Acc2 (published)'] == '85.2' and t.loc['TFN', 'Acc2 (published)'] == '—'

def test_rerun_skips_finished_and_resumes_an_interrupted_grid(tmp_path):
    kw = dict(smoke=True, out=tmp_path, seeds=[0, 1], log=quiet)
    reproduce('hycon-table5', **kw)
    cfgs = resolve(EXPERIMENTS['hycon-table5'], smoke=True, out=tmp_path, seeds=[0, 1])
    assert pending(cfgs) == []
    keep = cfgs['Concatenation'].run_dir(0)/'done.json'
    t0 = keep.stat().st_mtime_ns
    lost = cfgs['Tensor Fusion'].run_dir(1)/'done.json'
    lost.unlink() # as if the grid died before this seed finished
    assert pending(cfgs) == [('Tensor Fusion', 1)]
    res = reproduce('hycon-table5', **kw)
    assert pending(cfgs) == [] and keep.stat().st_mtime_ns == t0
    assert len(res['per_seed']) == 6

def test_changed_grid_is_refused_not_mixed(tmp_path):
    reproduce('hycon-table6', smoke=True, out=tmp_path, rows=['0.5'], log=quiet)
    with pytest.raises(ConfigError, match='differs'):
        reproduce('hycon-table6', smoke=True, out=tmp_path, rows=['0.5'], sets={'lr': 0.5}, log=quiet)

def test_wrong_kind_of_data_named(tmp_path):
    with pytest.raises(ConfigError, match=r'--data: .*tailor_mosei_aligned.pt holds a multilabel task'):
        reproduce('hycon-table6', data=str(ROOT/'data_samples'/'tailor_mosei_aligned.pt'), out=tmp_path, seeds=[0],
                  sets={'epochs': 1}, log=quiet)
    with pytest.raises(ConfigError, match='--data'): reproduce('hycon-table6', out=tmp_path, log=quiet)
    with pytest.raises(ConfigError, match='--rows'): reproduce('hycon-table6', smoke=True, rows=['0.6'], out=tmp_path, log=quiet)

def test_command_line(tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'cdatlib.reproduce', 'hycon-table6', '--smoke', '--rows', '0.8', '--out', str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert '46.6' in r.stdout # the published Acc7 beside ours
    assert (tmp_path/'hycon-table6'/'results.md').exists()
    assert 'python -m cdatlib.reproduce hycon-table6' in (tmp_path/'hycon-table6'/'results.md').read_text()
    assert main(['hycon-table6']) == 2 # no --data, no --smoke: one line, exit 2
    import contextlib, io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): assert main(['--list']) == 0
    assert [l.split()[0] for l in buf.getvalue().splitlines()] == list(EXPERIMENTS)

def test_two_run_grid_through_local_ray(tmp_path):
    ray = pytest.importorskip('ray', reason='Ray is not installed (pip install "ray[tune]>=2.9"); the distributed runner needs it')
    rows = ['Concatenation', 'Addition (default)']
    cfgs = resolve(EXPERIMENTS['hycon-table5'], smoke=True, out=tmp_path, rows=rows)
    assert len(pending(cfgs)) == 2
    lines = []
    try:
        res = reproduce('hycon-table5', smoke=True, out=tmp_path, rows=rows, ray_address='local', log=lines.append)
    finally:
        if ray.is_initialized(): ray.shutdown()
    assert not ray.is_initialized() # the runner shuts down the Ray it started
    assert any(l.startswith('ray: 2 unit(s)') for l in lines), lines
    assert sum(l.startswith('ray: done') for l in lines) == 2
    assert pending(cfgs) == [] and list(res['table'].index) == rows

@pytest.mark.parametrize('kind', ALT_LOSSES)
def test_alt_losses_match_loops(kind):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(7, 1, generator=g).double()
    same, valid = same_class(y, 'regression', zero='exclude')
    valid[3] = False
    for inter in (False, True):
        h = {m: torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True) for m in ('text', 'audio', 'vision')}
        a, b = alt_loss(h, same, valid, kind, inter, margin=0.3), alt_loss_loop(h, same, valid, kind, inter, margin=0.3)
        assert torch.allclose(a, b, atol=1e-10)
        for x, z in zip(torch.autograd.grad(a, list(h.values())), torch.autograd.grad(b, list(h.values()))):
            assert torch.allclose(x, z, atol=1e-10)

PUBLISHED_FILE = Path(os.environ.get('CDATLIB_PUBLISHED_RESULTS', '/work/shared/reference/published-results.md'))

@pytest.mark.skipif(not PUBLISHED_FILE.exists(), reason='the reference list of published figures is not on this machine')
def test_embedded_figures_are_the_published_ones():
    text = PUBLISHED_FILE.read_text()
    for key, p in PUBLISHED.items():
        n = key.split('table')[1]
        sec = re.search(rf'### HyCon Table {n}:.*?(?=\n### |\n## |\Z)', text, re.S).group(0)
        table = {}
        for line in sec.splitlines():
            cells = [c.strip().strip('*') for c in line.strip().strip('|').split('|')]
            if len(cells) > 1: table[cells[0]] = cells[1:]
        for label, vals in p['rows'].items():
            assert label in table, (key, label)
            got = [float(c.replace(',', '')) for c in table[label]]
            assert got == [float(v) for v in vals], (key, label, got, vals)

def test_a_failing_unit_is_one_line_through_ray(tmp_path, capsys):
    "A unit's own error comes back as itself (not Ray's traceback), once: it is not retried like a lost node"
    ray = pytest.importorskip('ray', reason='Ray is not installed (pip install "ray[tune]>=2.9"); the distributed runner needs it')
    from cdatlib.callbacks import RunLock
    cfgs = resolve(EXPERIMENTS['hycon-table5'], smoke=True, out=tmp_path, rows=['Concatenation'])
    try:
        with RunLock(cfgs['Concatenation'].run_dir(0)): # another process trains into this seed's folder
            rc = main(['hycon-table5', '--smoke', '--rows', 'Concatenation', '--out', str(tmp_path), '--ray-address', 'local'])
    finally:
        if ray.is_initialized(): ray.shutdown()
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    errors = [l for l in err if 'error' in l.lower() or 'Traceback' in l] # Ray may say a word of its own at start-up
    assert rc == 2 and errors == err[-1:], err
    assert err[-1].startswith('reproduce: error: ') and 'another process is training into this folder' in err[-1], err

CDAT_ROWS = ['Naive Fusion + CDaT', 'TFN + CDaT', 'MISA + CDaT', 'TAILOR + CDaT']

def done_times(root:Path)->dict:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob('done.json'))}

@pytest.mark.skipif(not HAVE_RAY, reason='Ray Tune is an optional extra: pip install -e ".[tune]" to run the alpha search')
def test_cdat_table2_smoke_searches_alpha_for_every_cdat_row(tmp_path, capsys):
    "`cdat reproduce cdat-table2 --smoke`: a sweep per CDaT row, its best alpha trains the row, a rerun trains nothing"
    args = ['reproduce', 'cdat-table2', '--smoke', '--out', str(tmp_path)]
    assert cdat(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    top = tmp_path/'cdat-table2'
    alphas = pd.read_csv(top/'results_alpha.csv')
    assert list(alphas.columns) == ['row', 'seed', 'trial', 'alpha', 'valid_micro_f1', 'epochs', 'best']
    assert list(dict.fromkeys(alphas['row'])) == CDAT_ROWS and 'TFN' not in set(alphas['row']) # the CDaT rows, each searched
    cfgs = json.loads((top/'results_configs.json').read_text())['configs']
    chosen = {}
    for row in CDAT_ROWS:
        t = alphas[alphas['row'] == row]
        assert len(t) >= 2 and t['alpha'].between(1e4, 1e7).all() and t['best'].sum() == 1, t
        assert t.loc[t['best'], 'valid_micro_f1'].item() == t['valid_micro_f1'].max() # selected on the validation split
        best = t.loc[t['best'], 'alpha'].item()
        chosen[row] = cfgs[row]['alpha']
        assert chosen[row] == pytest.approx(best, rel=1e-12) # the row trained with its sweep's best
        run_cfg = json.loads((top/slug(row)/'seed-0'/'config.json').read_text())
        assert run_cfg['alpha'] == chosen[row] # what the run's own config.json records
        assert f"alpha search, {row}: best alpha" in out
    md = (top/'results.md').read_text()
    assert '## Alpha, searched per row' in md and f"Note: {alpha_note(2)}." in md
    before = done_times(tmp_path)
    assert all(top/d/'seed-0'/'done.json' in before for r in CDAT_ROWS for d in (slug(r), f'{slug(r)}-tune')) # row and sweep
    assert cdat(args) == 0, capsys.readouterr().err
    assert done_times(tmp_path) == before # nothing trained again
    again = json.loads((top/'results_configs.json').read_text())['configs']
    assert {row: again[row]['alpha'] for row in CDAT_ROWS} == chosen
    assert pd.read_csv(top/'results_alpha.csv').equals(alphas)

def test_alpha_trials_0_keeps_alpha_fixed_and_says_so(tmp_path, capsys):
    row = 'TAILOR + CDaT (CE)'
    assert cdat(['reproduce', 'cdat-table4', '--smoke', '--rows', row, '--alpha-trials', '0', '--out', str(tmp_path)]) == 0
    top = tmp_path/'cdat-table4'
    assert "alpha fixed at 10000, not searched (not the paper's protocol)" in (top/'results.md').read_text()
    assert not (top/'results_alpha.csv').exists() and not list(top.glob('*-tune'))
    assert json.loads((top/'results_configs.json').read_text())['configs'][row]['alpha'] == 1e4
    assert 'alpha search' not in capsys.readouterr().out

def test_without_ray_a_cdat_grid_is_refused_before_training(tmp_path, capsys, without_ray):
    rc = cdat(['reproduce', 'cdat-table2', '--smoke', '--out', str(tmp_path)])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert rc == 2 and err == [f"cdat: error: alpha search (2 trials per CDaT row): {RAY_HINT}; "
                               "or --alpha-trials 0 to keep alpha fixed (not the paper's protocol)"], err
    assert not list(tmp_path.iterdir()), 'refused before anything was trained'
