"""Tests of cdatlib.experiments.cdat_when ("When does CDaT help?"): the corruption kinds, the paired comparison,
and the `--smoke` study through its command: every CDaT row's alpha searched with Ray Tune, a killed study
continued without training again what it had, and one clear line for bad input. The searches need the optional
extra `pip install -e ".[tune]"`; without Ray those tests skip and the study runs with `--trials 0`."""
import json, math
from importlib.util import find_spec
from pathlib import Path
import pandas as pd
import pytest
import torch
from cdatlib.dataset import MODALITIES, Task, MultimodalDataset, MultimodalData
from cdatlib.experiments.cdat_when import (Corruption, corrupt_as, corrupt_every_split, add_noise, study_settings,
                                           paired_deltas, verdict_table, main, METHODS, CDAT_ROWS)

HAVE_RAY = find_spec('ray') is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='the alpha searches need Ray Tune: pip install -e ".[tune]"')


def toy_split(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = {'text': torch.randn(n, 3, 4, generator=g), 'audio': torch.randn(n, 3, 3, generator=g), 'vision': torch.randn(n, 3, 5, generator=g)}
    masks = {m: torch.rand(n, 3, generator=g) > .2 for m in MODALITIES}
    return MultimodalDataset(f, (torch.rand(n, 1, generator=g) > .5).float(), Task('binary_per_class', ('positive',)), masks=masks)


@pytest.mark.parametrize('c', [Corruption('swap', 'audio', .5), Corruption('noise', 'vision', .3, snr_db=-10.),
                               Corruption('noise', 'text', .1, snr_db=0.), Corruption('zero', 'text', .3)])
def test_each_kind_changes_exactly_its_rows_of_its_modality(c):
    ds = toy_split()
    bad, rows = corrupt_as(ds, c, seed=5)
    x, x0 = bad.features[c.modality], ds.features[c.modality]
    assert len(rows) == round(c.fraction * len(ds))
    assert set(torch.nonzero((x != x0).flatten(1).any(1)).flatten().tolist()) <= set(rows.tolist())
    keep = torch.ones(len(ds), dtype=torch.bool); keep[rows] = False
    assert torch.equal(x[keep], x0[keep])
    for m in set(MODALITIES) - {c.modality}: assert torch.equal(bad.features[m], ds.features[m])
    assert torch.equal(bad.labels, ds.labels)
    if c.kind != 'swap': assert torch.equal(bad.masks[c.modality], ds.masks[c.modality])   # a swap moves the mask with the features
    if c.kind == 'zero': assert not x[rows].any()
    if c.kind == 'noise': # padding steps keep their values; real steps changed
        pad = ~ds.masks[c.modality][rows]
        assert torch.equal(x[rows][pad], x0[rows][pad]) and not torch.equal(x[rows], x0[rows])
    assert torch.equal(corrupt_as(ds, c, seed=5)[0].features[c.modality], x)   # seeded


def test_noise_has_the_asked_snr_and_bad_corruptions_are_refused():
    x = torch.randn(300, 20, 6) * 2.5
    n = add_noise(x, torch.ones(300, 20, dtype=torch.bool), 0., torch.randn(300, 20, 6)) - x
    assert abs(10 * math.log10(float((x ** 2).mean() / (n ** 2).mean()))) < 0.1
    ds = toy_split()
    for c, msg in ((Corruption('blur'), 'kind must be one of'), (Corruption('noise'), 'needs snr_db'),
                   (Corruption('zero', 'speech'), "'speech' is not one of"), (Corruption('zero', fraction=1.5), 'fraction')):
        with pytest.raises(ValueError, match=msg): corrupt_as(ds, c)


def test_every_split_is_corrupted_with_its_own_rows():
    data = MultimodalData({s: toy_split(40, k) for k, s in enumerate(('train', 'valid', 'test'))})
    cor, known = corrupt_every_split(data, Corruption('zero', 'audio', .25), seed=2)
    for s in data.splits:
        assert int((known[s] == MODALITIES.index('audio')).sum()) == 10 and int((known[s] >= 0).sum()) == 10
        assert not cor[s].features['audio'][known[s] >= 0].any()
    assert not torch.equal(known['train'], known['valid'])


def test_design_varies_one_factor_at_a_time_around_the_centre():
    ss = study_settings()
    centre = ss[0]
    assert (centre.kind, centre.modality, centre.fraction) == ('swap', 'text', .3)
    for c in ss[1:]: # each differs from the centre in exactly one factor (the SNR goes with the kind)
        diff = [(c.kind != centre.kind), (c.modality != centre.modality), (c.fraction != centre.fraction)]
        assert sum(diff) == 1, c
    assert {c.kind for c in ss} == {'swap', 'noise', 'zero'} and {c.modality for c in ss} == set(MODALITIES)
    assert {c.fraction for c in ss} == {.1, .3, .5} and len({c.snr_db for c in ss if c.kind == 'noise'}) == 2


def test_gains_are_paired_by_seed_and_the_verdict_names_the_best_row():
    rows = []
    for seed in range(3):
        for m, v in (('control (alpha = 0)', .70), ('oracle (test-time drop)', .75), *((r, .70 + (.02 if r == CDAT_ROWS[2] else -.01)) for r in CDAT_ROWS)):
            rows.append({'split': 'std', 'setting': 'swap, text 30%', 'seed': seed, 'method': m,
                         'acc_all': v + seed / 10, 'acc_corrupted': v, 'acc_clean': v})
    df = pd.DataFrame(rows)
    d = paired_deltas(df)
    assert set(d['method']) == set(CDAT_ROWS) | {'oracle (test-time drop)'}
    assert d[d['method'] == CDAT_ROWS[2]]['delta_all'].round(6).tolist() == [0.02] * 3   # the seed's offset cancels
    v = verdict_table(df, 'std').iloc[0]
    assert v['best CDaT row'] == CDAT_ROWS[2] and v['seeds > 0'] == '3/3' and v['its Δ all'].startswith('0.020')


def run_main(args, capsys):
    rc = main([str(a) for a in args]); cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_without_real_data_the_study_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('CDATLIB_SHARED_DATA', raising=False)
    rc, out, err = run_main(['--split', 'std', '--data', tmp_path/'nowhere', '--out', tmp_path/'out'], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'real MOSI features not found' in err and '--smoke' in err
    assert not (tmp_path/'out'/'cdat_when.csv').exists()


def test_smoke_without_a_search_keeps_alpha_fixed(tmp_path, capsys):
    rc, out, err = run_main(['--smoke', '--trials', '0', '--out', tmp_path], capsys)
    assert rc == 0, err
    df = pd.read_csv(tmp_path/'cdat_when.csv')
    assert df['method'].tolist() == list(METHODS) and (df.loc[df['method'].isin(CDAT_ROWS), 'cdat_alpha'] == 1e4).all()
    assert not (tmp_path/'cdat_when_alpha.csv').exists() and (tmp_path/'cdat_when.png').stat().st_size > 0


@needs_ray
def test_smoke_searches_every_cdat_row_and_a_killed_study_continues(tmp_path, capsys):
    rc, out, err = run_main(['--smoke', '--out', tmp_path], capsys)
    assert rc == 0, err
    trials = pd.read_csv(tmp_path/'cdat_when_alpha.csv')
    assert sorted(trials['variant'].unique()) == sorted(CDAT_ROWS)                  # an alpha search for every CDaT row
    assert (trials.groupby('variant').size() == 2).all() and trials['alpha'].between(1e4, 1e7).all()
    best = trials[trials['best']].set_index('variant')['alpha']
    df = pd.read_csv(tmp_path/'cdat_when.csv').set_index('method')
    for r in CDAT_ROWS: assert df.loc[r, 'cdat_alpha'] == pytest.approx(best[r])          # the searched alpha trained the row
    assert '## samples' in (tmp_path/'cdat_when.md').read_text()
    # killed after its searches and runs, before the unit's row was saved: started again, it trains nothing new
    done = {p: p.stat().st_mtime for p in (tmp_path/'cdat_when_runs').rglob('done.json')}
    (tmp_path/'cdat_when.csv').unlink()
    rc, out, err = run_main(['--smoke', '--out', tmp_path], capsys)
    assert rc == 0, err
    assert {p: p.stat().st_mtime for p in (tmp_path/'cdat_when_runs').rglob('done.json')} == done
    assert pd.read_csv(tmp_path/'cdat_when_alpha.csv').equals(trials)
    assert pd.read_csv(tmp_path/'cdat_when.csv').set_index('method')['acc_all'].equals(df['acc_all'])
