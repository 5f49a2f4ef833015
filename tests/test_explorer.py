"""The utterance explorer (nbs/23_explorer.ipynb), driven headless: build it, change the selection and the filters
by setting widget values, and check what it shows."""
import copy
import numpy as np
import pytest
import torch

pytest.importorskip('ipywidgets')
from cdatlib.dataset import Task, MODALITIES
from cdatlib.explorer import (explorer_table, explorer_predictions, planted_misaligned, Explorer, render_row,
                              pick_examples, plot_utterances, format_labels)

CLASSES = ('happy', 'sad', 'anger')
TASK = Task('multilabel', CLASSES, 'toy')


def toy_table(n=12, seed=0, transcripts=True):
    "A table from random arrays; every third sample planted, known flags computed here independently"
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) > .6).astype(float)
    base, cdat = rng.random((n, 3)), rng.random((n, 3))
    w, d = rng.normal(size=(n, 3)), rng.random((3, n, 3))
    ids = [f'u{i:02d}' for i in range(n)]
    mis = {ids[i]: MODALITIES[i % 3] for i in range(0, n, 3)}
    tr = [f'sentence <{i}> & more' for i in range(n)] if transcripts else None
    return explorer_table(ids, y, base, cdat, TASK, confidence=w, dropped=d, transcripts=tr, misaligned=mis), (y, base, cdat, w)


def jaccard(p, t):
    p, t = set(np.nonzero(p > .5)[0]), set(np.nonzero(t > .5)[0])
    return 1. if not p | t else len(p & t) / len(p | t)


def test_table_flags_match_an_independent_computation():
    t, (y, base, cdat, w) = toy_table(40, seed=3)
    jb = np.array([jaccard(b, yy) for b, yy in zip(base, y)])
    jc = np.array([jaccard(c, yy) for c, yy in zip(cdat, y)])
    assert list(t['misclassified']) == list(jb < 1)
    assert list(t['improved']) == list(jc > jb)
    assert list(t['cdat_misclassified']) == list(jc < 1)
    np.testing.assert_allclose(t[[f'conf_{m}' for m in MODALITIES]].to_numpy(), w)
    assert t['planted_misaligned'].sum() == 14 and t.loc[3, 'planted'] == 'text'
    assert t['improved'].any() and not t['improved'].all()   # the filters below have something to filter


def test_bad_shapes_name_the_field():
    t, (y, base, cdat, w) = toy_table(5)
    with pytest.raises(ValueError, match="field 'cdat'"): explorer_table(list('abcde'), y, base, cdat[:4], TASK)
    with pytest.raises(ValueError, match="field 'transcripts'"): explorer_table(list('abcde'), y, base, cdat, TASK, transcripts=['x'])


def test_step_and_select_move_every_control_together():
    t, _ = toy_table()
    ex = Explorer(t)
    assert ex.current_id == 'u00' and ex.slider.value == 0 and 'u00' in ex.html.value
    ex.next_button.click(); ex.next_button.click()
    assert ex.current_id == 'u02' and ex.dropdown.value == 'u02' and ex.slider.value == 2
    assert '<b>u02</b>' in ex.html.value and 'u00' not in ex.html.value
    ex.slider.value = 7                       # moving the slider moves the id list
    assert ex.dropdown.value == 'u07' and ex.current['id'] == 'u07'
    ex.dropdown.value = 'u04'                 # and the id list moves the slider
    assert ex.slider.value == 4 and '<b>u04</b>' in ex.html.value
    ex.prev_button.click(); assert ex.current_id == 'u03'
    ex.slider.value = 0; ex.prev_button.click(); assert ex.current_id == 'u11'   # wraps around
    assert '12 of 12' in ex.count.value and '#12' in ex.count.value


def test_filters_count_and_combine():
    t, _ = toy_table(40, seed=3)
    ex = Explorer(t, plot=False)
    ex.filters['misclassified'].value = True
    assert len(ex.shown) == t['misclassified'].sum() and ex.shown['misclassified'].all()
    assert ex.count.value.startswith(f"{t['misclassified'].sum()} of 40")
    assert ex.slider.max == len(ex.shown) - 1 and list(ex.dropdown.options) == list(ex.shown['id'])
    ex.filters['planted_misaligned'].value = True
    want = t[t['misclassified'] & t['planted_misaligned']]['id'].tolist()
    assert list(ex.shown['id']) == want and ex.current_id == want[0]
    ex.filters['misclassified'].value = False
    assert list(ex.shown['id']) == t[t['planted_misaligned']]['id'].tolist()
    for f in ex.filters.values(): f.value = False
    assert len(ex.shown) == 40


def test_filter_keeps_the_current_utterance_when_it_passes():
    t, _ = toy_table(40, seed=3)
    ex = Explorer(t, plot=False)
    target = t[t['planted_misaligned']]['id'].iloc[2]
    ex.select(target)
    ex.filters['planted_misaligned'].value = True
    assert ex.current_id == target and ex.slider.value == 2
    other = t[~t['planted_misaligned']]['id'].iloc[0]
    with pytest.raises(KeyError, match=other): ex.select(other)


def test_empty_selection_says_so_and_disables_navigation():
    t, _ = toy_table(12)
    t['improved'] = False                     # nothing improved: the 'improved' filter leaves no row
    ex = Explorer(t)
    ex.next_button.click()
    ex.filters['improved'].value = True
    assert ex.current_id is None and ex.current is None and len(ex.shown) == 0
    assert 'No utterance' in ex.html.value and ex.count.value.startswith('0 of 12')
    assert ex.next_button.disabled and ex.slider.disabled and ex.image.value == b''
    ex.next_button.click()                    # does nothing, raises nothing
    ex.filters['improved'].value = False
    assert ex.current_id == 'u00' and not ex.next_button.disabled


def test_rendered_utterance_shows_transcript_labels_and_confidence():
    t, (y, base, cdat, w) = toy_table(12)
    ex = Explorer(t)
    ex.select('u03')
    h = ex.html.value
    assert '&ldquo;sentence &lt;3&gt; &amp; more&rdquo;' in h     # escaped
    assert 'planted misaligned: text' in h
    for c in CLASSES: assert (f'{c}*' in h) == bool(y[3, CLASSES.index(c)] > .5)
    assert f"audio {w[3, 1]:.3f}" in h
    assert format_labels(base[3:4], 'multilabel', CLASSES)[0] in h
    assert ex.image.value[:4] == b'\x89PNG'
    first = ex.image.value; ex.next_button.click()
    assert ex.image.value != first            # the plot follows the selection


def test_regression_table_and_no_confidence():
    task = Task('regression', ('sentiment',), 'mosi')
    y = np.array([1.2, -0.4, 0.0, 2.0]); base = np.array([0.5, 0.3, -0.1, 1.0]); cdat = np.array([0.4, -0.2, 0.2, -1.])
    t = explorer_table(['a', 'b', 'c', 'd'], y, base, cdat, task)
    assert list(t['misclassified']) == [False, True, True, False]
    assert list(t['improved']) == [False, True, True, False]
    assert list(t['cdat_misclassified']) == [False, False, False, True]
    ex = Explorer(t)                          # no conf_* columns: no plot, still renders
    assert not ex.plot and '+1.20 (positive)' in ex.html.value
    ex.filters['improved'].value = True
    assert list(ex.shown['id']) == ['b', 'c']


def test_fig5_figure():
    pytest.importorskip('matplotlib')
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    t, _ = toy_table(40, seed=3)
    ids = pick_examples(t, 3)
    gains = (t['cdat_score'] - t['base_score']).set_axis(t['id'])
    assert gains[ids[0]] == gains.max() > 0
    fig = plot_utterances(t, ids)
    assert len(fig.axes) == 6 and ids[0] in fig.axes[0].get_title(loc='left')
    plt.close(fig)


@pytest.fixture(scope='module')
def trained():
    "A tiny baseline and its CDaT copy on the multi-label sample (a few seconds on one CPU thread)"
    from cdatlib.config import find_data_samples
    from cdatlib.formats import load_dataset
    from cdatlib.models.naive import NaiveFusion
    from cdatlib.callbacks import build_learner, set_seed, DeviceLoader
    from cdatlib.cdat.confidence import fit_confidnet
    from cdatlib.cdat.transfer import CDaT
    path = find_data_samples()/'tailor_mosei_aligned.pt'
    data = load_dataset(path)
    set_seed(0)
    base = NaiveFusion(data.dims, data.task.n_outputs)
    kw = dict(lr=3e-3, batch_size=32, warmup=None, checkpoint=False, csv=None, progress=False, device='cpu')
    bl = build_learner(base, data, **kw); bl.fit(3)
    cn, _ = fit_confidnet(base, {s: DeviceLoader(data[s], 32) for s in ('train', 'valid')}, data.task, epochs=5, lr=1e-3)
    tuned = copy.deepcopy(base)
    cl = build_learner(tuned, data, cbs=[CDaT(alpha=1e4, confidnet=cn)], **kw); cl.fit(1)
    return path, data, bl, cl, cn


def test_explorer_from_models_on_the_sample(trained):
    path, data, bl, cl, cn = trained
    planted = planted_misaligned(path, 'test')
    ex = Explorer.from_models(bl.model, cl.model, data.test, confidnet=cn, misaligned=planted, batch_size=7)
    p, y, ids = bl.get_preds('test')
    pc, _, _ = cl.get_preds('test')
    assert list(ex.table['id']) == ids == data.test.ids
    np.testing.assert_allclose(ex.table[[f'base_{c}' for c in data.task.classes]].to_numpy(), p.numpy(), atol=1e-5)
    np.testing.assert_allclose(ex.table[[f'cdat_{c}' for c in data.task.classes]].to_numpy(), pc.numpy(), atol=1e-5)
    pv, _, _ = bl.get_preds('test', drop=('vision',))
    np.testing.assert_allclose(ex.table[[f'drop_vision_{c}' for c in data.task.classes]].to_numpy(), pv.numpy(), atol=1e-5)
    ex.filters['planted_misaligned'].value = True
    assert sorted(ex.shown['id']) == sorted(planted) and len(planted) > 0
    assert f"planted misaligned: {planted[ex.current_id]}" in ex.html.value


def test_confidence_from_cdat_differs_and_bad_value_is_refused(trained):
    path, data, bl, cl, cn = trained
    a = explorer_predictions(bl.model, cl.model, data.test, cn)
    b = explorer_predictions(bl.model, cl.model, data.test, cn, confidence_from='cdat')
    assert a['confidence'].shape == (len(data.test), 3) and not np.allclose(a['confidence'], b['confidence'])
    with pytest.raises(ValueError, match='confidence_from'):
        explorer_predictions(bl.model, cl.model, data.test, cn, confidence_from='both')


def test_planted_manifest_errors(tmp_path):
    from cdatlib.config import find_data_samples
    with pytest.raises(FileNotFoundError, match='nope.json'): planted_misaligned('x.pt', 'test', manifest=tmp_path/'nope.json')
    with pytest.raises(ValueError, match="no entry for 'x.pt'"):
        planted_misaligned('x.pt', 'test', manifest=find_data_samples()/'misaligned.json')
    assert planted_misaligned(tmp_path/'real.pkl', 'test') == {}

@pytest.mark.parametrize('text,needle', [('{"a": ', 'not a manifest'), ('[1, 2]', 'not a manifest'),
                                         ('{"x.pt": {"test": [{"id": 1}]}}', "needs an 'id' and a 'modality'"),
                                         ('{"x.pt": {"valid": []}}', "has no split 'test'")])
def test_a_bad_manifest_is_one_error_naming_it(tmp_path, text, needle):
    from cdatlib.explorer import planted_misaligned
    (tmp_path/'misaligned.json').write_text(text)
    with pytest.raises(ValueError, match=needle) as e: planted_misaligned(tmp_path/'x.pt', 'test', tmp_path/'misaligned.json')
    assert 'misaligned.json' in str(e.value)
