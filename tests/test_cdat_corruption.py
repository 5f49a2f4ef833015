"""Tests of cdatlib.experiments.cdat_corruption: the known corruption, the oracle, and a smoke run of the experiment."""
import math
import pytest
import torch
from cdatlib.dataset import MODALITIES, Task, MultimodalDataset, MultimodalData
from cdatlib.models.naive import NaiveFusion
from cdatlib.experiments import real_mosi
from cdatlib.experiments.cdat_corruption import (
    to_polarity, corrupt_splits, planted_corruption, oracle_drop, KnownDrop, with_oracle_field, predict_probs,
    subset_metrics, across_samples_auroc, run_one, run_cdat_corruption, read_results, write_report, load_experiment_data, main, METHODS)

TINY = dict(epochs=2, cdat_epochs=1, confidnet_epochs=3)


def toy_data(sizes=(40, 20, 30), seed=0):
    task = Task('regression', ('sentiment',))
    out = {}
    for k, (s, n) in enumerate(zip(('train', 'valid', 'test'), sizes)):
        g = torch.Generator().manual_seed(seed + k)
        f = {'text': torch.randn(n, 3, 4, generator=g), 'audio': torch.randn(n, 3, 3, generator=g),
             'vision': torch.randn(n, 3, 5, generator=g)}
        masks = {m: torch.rand(n, 3, generator=g) > .2 for m in MODALITIES}
        out[s] = MultimodalDataset(f, torch.empty(n, 1).uniform_(-3, 3, generator=g), task, masks=masks, split=s)
    return MultimodalData(out)


@pytest.mark.parametrize('modality,fraction', [('text', .3), ('audio', .5), ('vision', .1)])
def test_corrupt_splits_exact_fraction_and_rows(modality, fraction):
    clean = to_polarity(toy_data())
    cor, known = corrupt_splits(clean, modality, fraction, seed=3)
    j = MODALITIES.index(modality)
    for s in clean.splits:
        n, k = len(clean[s]), known[s] >= 0
        assert int(k.sum()) == round(fraction * n)                   # exactly the fraction, in every split
        assert set(known[s][k].tolist()) == {j}                      # the corrupted modality is recorded
        x, x0 = cor[s].features[modality], clean[s].features[modality]
        assert torch.equal((x != x0).flatten(1).any(1), k)           # exactly the recorded rows changed
        # every corrupted row holds another corrupted row's features (a derangement among the chosen rows), mask with it
        for i in torch.nonzero(k).flatten().tolist():
            src = [r for r in torch.nonzero(k).flatten().tolist() if r != i and torch.equal(x[i], x0[r])]
            assert len(src) == 1 and torch.equal(cor[s].masks[modality][i], clean[s].masks[modality][src[0]])
        for m in MODALITIES:
            if m != modality:
                assert torch.equal(cor[s].features[m], clean[s].features[m])
                assert torch.equal(cor[s].masks[m], clean[s].masks[m])
        assert torch.equal(cor[s].labels, clean[s].labels)
    # the same seed gives the same corruption; another seed another one
    assert all(torch.equal(known[s], corrupt_splits(clean, modality, fraction, seed=3)[1][s]) for s in clean.splits)
    assert any(not torch.equal(known[s], corrupt_splits(clean, modality, fraction, seed=4)[1][s]) for s in clean.splits)


def test_polarity_zero_is_positive():
    d = toy_data()
    d.train.labels[:3, 0] = torch.tensor([-0.2, 0., 0.4])
    assert to_polarity(d).train.labels[:3, 0].tolist() == [0., 1., 1.]
    with pytest.raises(ValueError, match="field 'labels'"): to_polarity(to_polarity(d))


def test_oracle_drops_exactly_the_corrupted_modality_of_the_corrupted_rows():
    c = torch.tensor([-1, 2, 0, -1, 1, 1])
    D = oracle_drop(c)
    assert D.tolist() == [[False] * 3, [False, False, True], [True, False, False], [False] * 3,
                          [False, True, False], [False, True, False]]
    cor, known = corrupt_splits(to_polarity(toy_data()), 'audio', .4, seed=1)
    torch.manual_seed(0)
    net = NaiveFusion(cor.dims, 1).eval()
    od = with_oracle_field(cor, known)
    b = od.test.batch(torch.arange(len(od.test)))
    k = known['test'] >= 0
    with torch.no_grad():
        got = KnownDrop(net)(b).logits
        assert torch.allclose(got[~k], net(b).logits[~k])                  # clean rows: nothing dropped
        assert torch.allclose(got[k], net(b, drop='audio').logits[k])      # corrupted rows: audio dropped
        for m in MODALITIES:  # changing a modality moves exactly the rows that still use it
            moved = (KnownDrop(net)(dict(b, **{m: b[m] + 3.})).logits != got).any(1)
            assert torch.equal(moved, ~k if m == 'audio' else torch.ones_like(k))
    assert torch.allclose(predict_probs(net, od.test, oracle_drop(known['test'])), torch.sigmoid(got[:, 0]))
    assert 'oracle_drop' not in cor.test.extras


def test_subset_metrics_by_hand():
    y, p, c = torch.tensor([1., 0., 1., 0., 1.]), torch.tensor([.9, .8, .2, .1, .7]), torch.tensor([-1, 0, 0, -1, -1])
    m = subset_metrics(y, p, c)
    assert math.isclose(m['acc_all'], .6) and math.isclose(m['acc_clean'], 1.) and math.isclose(m['acc_corrupted'], 0.)


def test_across_samples_auroc_by_hand():
    w = [[.1, .9, .0], [.1, .2, .0], [.5, .1, .0], [.1, .1, .9]]
    assert across_samples_auroc(w, [1, -1, -1, 2]) == 1.       # each corrupted modality's weight is highest where it is corrupted
    assert across_samples_auroc([[.1, .9, 0], [.1, .05, 0], [.5, .5, 0]], [-1, 1, -1]) == 0.   # lowest where corrupted
    assert math.isnan(across_samples_auroc(w, [-1, -1, -1, -1]))


def test_planted_corruption_of_the_samples():
    data, known = load_experiment_data('samples')
    assert {s: int((c >= 0).sum()) for s, c in known.items()} == {'train': 13, 'valid': 3, 'test': 5}
    assert data.task.kind == 'binary_per_class'


def test_smoke_run_on_samples(tmp_path):
    csv = tmp_path/'r.csv'
    df = run_cdat_corruption(['samples'], [0, 1], TINY, csv=csv, verbose=False)
    assert df.attrs['ran'] == 14 and list(df.method[:7]) == list(METHODS)
    assert df[df.method == 'cdat-const'].auroc.eq(.5).all()
    b, o = df[df.method == 'baseline'], df[df.method == 'oracle (test-time drop)']
    assert (b.acc_clean.values == o.acc_clean.values).all()     # same model on the clean rows
    assert run_cdat_corruption(['samples'], [0, 1], TINY, csv=csv, verbose=False).attrs['ran'] == 0
    md = write_report(read_results(csv), tmp_path/'r.md', 'cmd').read_text()
    assert '| baseline | 2 |' in md and 'true TCP' in md
    main(['--split', 'samples', '--seeds', '0', '--epochs', '2', '--cdat-epochs', '1', '--confidnet-epochs', '3',
          '--out', str(tmp_path)])
    assert (tmp_path/'cdat_corruption.csv').exists() and '--split samples' in (tmp_path/'cdat_corruption.md').read_text()


REAL = real_mosi.real_mosi_path().exists()

@pytest.mark.skipif(not REAL, reason=f"real CMU-MOSI features not found at {real_mosi.real_mosi_path()} "
                                     "(set CDATLIB_SHARED_DATA to the folder holding mosi/)")
@pytest.mark.parametrize('split', ['std', 'poria'])
def test_real_mosi_corruption(split):
    data, known = load_experiment_data(split, seed=0)
    for s in data.splits:
        assert int((known[s] >= 0).sum()) == round(.3 * len(data[s]))
        assert set(data[s].labels.unique().tolist()) <= {0., 1.}
    rows = run_one(data, known, seed=0, settings=dict(epochs=1, cdat_epochs=1, confidnet_epochs=2))
    assert [r['method'] for r in rows] == list(METHODS)
    assert all(0 <= r['acc_all'] <= 1 for r in rows)
