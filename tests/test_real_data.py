"cdatlib.formats against the real MOSI files in the real-data folder ($CDATLIB_SHARED_DATA, else shared/data beside the repository; skipped when absent)."

import numpy as np
import pytest
import torch

from cdatlib.formats import describe_csd, load_dataset, load_sdk_csd, load_utterance_npz, read_csd, read_folds, shared_data_dir

MOSI = shared_data_dir()/'mosi'

def real(name):
    p = MOSI/name
    if not p.exists(): pytest.skip(f"real data not found at {p}: clone beside shared/ or set CDATLIB_SHARED_DATA")
    return p

def test_std_folds():
    f = read_folds(real('mosi_std_folds.json'))
    assert [len(f[s]) for s in ('train', 'valid', 'test')] == [52, 10, 31]
    assert not set(f['train']) & set(f['test'])

def test_mosi_label_csd():
    csd = real('CMU_MOSI_Opinion_Labels.csd')
    c = read_csd(csd)
    assert c['root'] == 'Opinion Segment Labels' and len(c['data']) == 93
    assert c['metadata']['dataset name'] == 'CMU-MOSI' and c['metadata']['dimension names'] == ['sentiment score']
    assert '93 videos, 2199 rows' in describe_csd(csd)
    data = load_sdk_csd(csd, folds=real('mosi_std_folds.json'))
    assert data.layout == 'sdk' and data.task.kind == 'regression'
    assert [len(data[s]) for s in data.splits] == [1284, 229, 686]
    assert sum(len(data[s]) for s in data.splits) == 2199
    y = torch.cat([data[s].labels for s in data.splits])
    assert y.min() >= -3 and y.max() <= 3 and y.std() > 1
    assert data.report['unassigned_segments'] == 0
    assert data.train.ids[0].endswith('[0]')
    # the folds json beside the csd is found on its own, and load_dataset sniffs HDF5
    assert [len(d) for d in load_dataset(csd)] == [1284, 229, 686]

def test_real_utterance_npz_std():
    p = real('mosi_poria_utterance_real.npz')
    data = load_utterance_npz(p, split='std')
    assert [len(data[s]) for s in data.splits] == [1284, 229, 686]
    assert data.dims == {'text': 100, 'audio': 73, 'vision': 100}
    for s in data.splits:
        for m, x in data[s].features.items():
            assert x.dtype == torch.float32 and x.shape[1] == 1 and torch.isfinite(x).all(), (s, m)
    assert load_dataset(p).layout == 'utterance'

def test_real_utterance_npz_poria():
    data = load_utterance_npz(real('mosi_poria_utterance_real.npz'), split='poria')
    assert len(data.train) + len(data.valid) == 1447 and len(data.test) == 752
    vid = lambda ds: {i.rsplit('_', 1)[0] for i in ds.ids}
    assert not vid(data.valid) & vid(data.train) and not vid(data.test) & vid(data.train)

def test_npz_labels_agree_with_csd():
    "Row i of video v in the csd (`v[i]`) is segment `v_{i+1}` of the npz: the sentiment scores must match."
    csd = load_sdk_csd(real('CMU_MOSI_Opinion_Labels.csd'), folds=real('mosi_std_folds.json'))
    npz = load_utterance_npz(real('mosi_poria_utterance_real.npz'))
    for s in csd.splits:
        a = {i.replace('[', '_').rstrip(']'): y for i, y in zip(csd[s].ids, csd[s].labels[:, 0].tolist())}
        a = {k.rsplit('_', 1)[0] + '_' + str(int(k.rsplit('_', 1)[1]) + 1): y for k, y in a.items()}
        b = dict(zip(npz[s].ids, npz[s].labels[:, 0].tolist()))
        assert a.keys() == b.keys(), s
        np.testing.assert_allclose([a[k] for k in b], list(b.values()), atol=1e-5)
