"Tests of cdatlib.formats: safe loading, every layout reader, layout sniffing and the errors on bad input."
import collections, json, os, pickle, zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cdatlib.dataset import EMOTIONS, IEMOCAP_CLASSES, MODALITIES, MultimodalData
from cdatlib.formats import (DatasetFormatError, decode_tailor_targets,
                             describe_csd, load_dataset, load_mmsa_pickle, load_mult_pickle, load_sdk_csd,
                             load_tailor_pt, load_utterance_npz, read_csd, read_folds, safe_pickle_load,
                             safe_torch_load, sniff_layout, write_csd)

SAMPLES = Path(__file__).resolve().parents[1]/'data_samples'

def sample(name):
    p = SAMPLES/name
    if not p.exists(): pytest.skip(f'{p} not found: data_samples/ is written by nbs/03_samples.ipynb')
    return p

# ---------------------------------------------------------------- tiny writers for hand-made fixtures
def mult_dict(n=(4, 3, 3), L=5, dims=(6, 3, 2), labels='sentiment', seed=0):
    "A MulT-layout dict: left-padded features, (N,1,1) or (N,4,2) labels, byte ids (N,3)."
    rng = np.random.default_rng(seed)
    out = {}
    for split, k in zip(('train', 'valid', 'test'), n):
        d = {}
        for m, dm in zip(('text', 'audio', 'vision'), dims):
            x = rng.normal(size=(k, L, dm))
            x[:, :2] = 0  # two steps of left padding
            d[m] = x
        d['audio'][0, 3, 0] = -np.inf
        if labels == 'sentiment': d['labels'] = rng.uniform(-3, 3, size=(k, 1, 1))
        else:
            present = rng.integers(0, 2, size=(k, 4))
            d['labels'] = np.stack([1 - present, present], -1).astype(np.float64)
        d['id'] = np.array([[f'vid{i}'.encode(), b'1.5', b'3.0'] for i in range(k)], dtype=object)
        out[split] = d
    return out

def mmsa_dict(n=(4, 3, 3), L=6, unaligned=True, seed=0):
    "An MMSA-layout dict (with audio_lengths/vision_lengths when unaligned)."
    rng = np.random.default_rng(seed)
    out = {'config': {'feature_T': 'bert'}}
    for split, k in zip(('train', 'valid', 'test'), n):
        tb = np.zeros((k, 3, L)); tb[:, 0, :4] = rng.integers(100, 999, size=(k, 4)); tb[:, 1, :4] = 1
        out[split] = {'raw_text': np.array([f'text {i}' for i in range(k)]), 'id': np.array([f'v{i}$_${i + 1}' for i in range(k)]),
                      'text': rng.normal(size=(k, L, 8)).astype(np.float32), 'text_bert': tb.astype(np.float32),
                      'audio': rng.normal(size=(k, L + 2, 3)).astype(np.float32),
                      'vision': rng.normal(size=(k, L + 1, 2)).astype(np.float32),
                      'regression_labels': rng.uniform(-3, 3, size=k).astype(np.float32),
                      'annotations': np.array(['Positive'] * k), 'classification_labels': np.ones(k)}
        if unaligned:
            out[split]['audio_lengths'] = np.arange(k) + 1
            out[split]['vision_lengths'] = np.full(k, L + 1)
    return out

def tailor_dict(n=(4, 3, 3), L=5):
    out = {'dict': {'tgt': {'<s>': 2, '</s>': 3, 'happy': 4}}}
    rng = np.random.default_rng(0)
    for split, k in zip(('train', 'valid', 'test'), n):
        out[split] = {'src-text': rng.normal(size=(k, L, 6)).astype(np.float32),
                      'src-visual': rng.normal(size=(k, L, 2)).astype(np.float32),
                      'src-audio': rng.normal(size=(k, L, 3)).astype(np.float32),
                      'tgt': [[2, 4, 3], [2, 3], [2, 5, 9, 3], [2, 6, 3]][:k]}
    return out

def dump(obj, path, protocol=4):
    Path(path).write_bytes(pickle.dumps(obj, protocol=protocol))
    return Path(path)

# ---------------------------------------------------------------- safety
MARKER_PAYLOADS = {
    'os.system': lambda m: (os.system, (f'touch {m}',)),
    'builtins.open': lambda m: (open, (str(m), 'w')),
    'numpy.save': lambda m: (np.save, (str(m), np.zeros(1))),  # a numpy global that is not array reconstruction
}

@pytest.mark.parametrize('kind', list(MARKER_PAYLOADS))
@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_code_running_pickle_is_refused(tmp_path, kind, protocol):
    marker = tmp_path/'marker'
    class Evil:
        def __reduce__(self): return MARKER_PAYLOADS[kind](marker)
    payload = pickle.dumps({'train': {'labels': Evil()}}, protocol=protocol)
    # the payload is live: plain pickle runs it and the marker appears
    pickle.loads(payload)
    created = sorted(tmp_path.glob('marker*'))
    assert created, 'the payload should run under plain pickle'
    for p in created: p.unlink()
    path = tmp_path/'evil.pkl'; path.write_bytes(payload)
    with pytest.raises(DatasetFormatError) as e: safe_pickle_load(path)
    assert str(path) in str(e.value) and 'refused' in str(e.value)
    assert e.value.field.startswith('global ')
    assert not list(tmp_path.glob('marker*')), 'the refused payload must not have run'
    with pytest.raises(DatasetFormatError): load_dataset(path)  # the sniffing path uses the same loader
    assert not list(tmp_path.glob('marker*'))

def test_refused_global_is_named(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, ('true',))
    p = dump(Evil(), tmp_path/'x.pkl', protocol=4)
    with pytest.raises(DatasetFormatError, match=r'global (posix|os|nt)\.system'): safe_pickle_load(p)

def test_evil_torch_file_is_refused(tmp_path):
    marker = tmp_path/'marker'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    torch.save({'train': {'src-text': Evil()}}, tmp_path/'evil.pt')
    with pytest.raises(DatasetFormatError, match=r'global (posix|os|nt)\.system.*refused'): safe_torch_load(tmp_path/'evil.pt')
    with pytest.raises(DatasetFormatError): load_tailor_pt(tmp_path/'evil.pt')
    assert not marker.exists()

def test_numpy_arrays_both_spellings(tmp_path):
    obj = {'a': np.arange(6.).reshape(2, 3), 'b': np.array([b'x', b'y'], dtype=object), 's': np.float64(2.5),
           'u': np.array(['$_$']), 'l': [1, (2, 'z')], 'n': None, 'st': {1, 2}}
    cases = [(str(proto), pickle.dumps(obj, protocol=proto)) for proto in (2, 3, 4, 5)]
    # protocols 2 and 3 name globals with newline-terminated text: rewrite them to numpy 1.x's `numpy.core` spelling
    cases += [(f'{proto}-numpy1', pickle.dumps(obj, protocol=proto).replace(b'numpy._core', b'numpy.core')) for proto in (2, 3)]
    for name, data in cases:
        if 'numpy1' in name: assert b'numpy.core.multiarray' in data and b'numpy._core' not in data
        p = tmp_path/f'ok{name}.pkl'; p.write_bytes(data)
        got = safe_pickle_load(p)
        np.testing.assert_array_equal(got['a'], obj['a'])
        assert got['b'][1] == b'y' and got['s'] == 2.5 and got['u'][0] == '$_$'
        assert got['l'] == [1, (2, 'z')] and got['st'] == {1, 2} and got['n'] is None

def test_latin1_fallback(tmp_path):
    p = tmp_path/'py2.pkl'; p.write_bytes(b'\x80\x02U\x04caf\xe9q\x00.')  # a Python-2 str with a non-ASCII byte
    with pytest.raises(UnicodeDecodeError): pickle.loads(p.read_bytes())
    assert safe_pickle_load(p) == 'café'

def test_torch_numpy_old_spelling(tmp_path):
    torch.save({'train': {'x': np.ones((2, 3), np.float32)}}, tmp_path/'t.pt')
    with zipfile.ZipFile(tmp_path/'t.pt') as zin, zipfile.ZipFile(tmp_path/'t1.pt', 'w') as zout:
        for it in zin.infolist():
            b = zin.read(it.filename)
            if it.filename.endswith('data.pkl'): b = b.replace(b'numpy._core', b'numpy.core')
            zout.writestr(it, b)
    assert b'numpy.core' in zipfile.ZipFile(tmp_path/'t1.pt').read(next(n for n in zipfile.ZipFile(tmp_path/'t1.pt').namelist() if n.endswith('data.pkl')))
    np.testing.assert_array_equal(safe_torch_load(tmp_path/'t1.pt')['train']['x'], np.ones((2, 3)))

def test_torch_load_never_weights_only_false():
    src = Path(__file__).resolve().parents[1]/'cdatlib'/'formats.py'
    assert 'weights_only=False' not in src.read_text().replace('`weights_only=False`', '')

# ---------------------------------------------------------------- errors on bad input
def _err(fn, *args, field=None, **kw):
    with pytest.raises(DatasetFormatError) as e: fn(*args, **kw)
    msg = str(e.value)
    assert str(args[0]) in msg, msg  # names the file
    if field is not None: assert field in msg, msg
    return msg

def test_truncated_files(tmp_path):
    full = pickle.dumps(mult_dict(), protocol=4)
    p = tmp_path/'mosi_data.pkl'; p.write_bytes(full[:len(full) // 2])
    assert 'truncated or corrupt' in _err(load_mult_pickle, p)
    assert 'truncated or corrupt' in _err(load_dataset, p)
    torch.save(tailor_dict(), tmp_path/'full.pt')
    q = tmp_path/'tv.pt'; q.write_bytes((tmp_path/'full.pt').read_bytes()[:400])
    assert 'corrupt' in _err(load_tailor_pt, q)
    c = tmp_path/'cut.csd'; write_csd(tmp_path/'ok.csd', 'labels', {'v': (np.zeros((2, 1)), np.zeros((2, 2)))})
    c.write_bytes((tmp_path/'ok.csd').read_bytes()[:500])
    assert 'corrupt' in _err(read_csd, c)
    z = tmp_path/'u.npz'; np.savez(tmp_path/'full.npz', text=np.zeros((3, 2))); z.write_bytes((tmp_path/'full.npz').read_bytes()[:60])
    assert 'corrupt' in _err(load_utterance_npz, z)

def test_missing_split(tmp_path):
    d = mult_dict(); del d['valid']
    assert 'missing split' in _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='valid')
    m = mmsa_dict(); del m['test']
    _err(load_mmsa_pickle, dump(m, tmp_path/'aligned_50.pkl'), field='test')
    t = tailor_dict(); del t['train']
    torch.save(t, tmp_path/'tv.pt'); _err(load_tailor_pt, tmp_path/'tv.pt', field='train')
    (tmp_path/'folds.json').write_text(json.dumps({'train': ['a'], 'test': ['b']}))
    assert 'missing split' in _err(read_folds, tmp_path/'folds.json', field='valid')

def test_missing_key(tmp_path):
    d = mult_dict(); del d['train']['audio']
    assert 'missing key' in _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='train.audio')
    d = mult_dict(); del d['test']['labels']
    _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='test.labels')
    m = mmsa_dict(); del m['valid']['regression_labels']
    _err(load_mmsa_pickle, dump(m, tmp_path/'u.pkl'), field='valid.regression_labels')
    t = tailor_dict(); del t['train']['tgt']
    torch.save(t, tmp_path/'tv.pt'); _err(load_tailor_pt, tmp_path/'tv.pt', field='train.tgt')
    with h5py.File(tmp_path/'bad.csd', 'w') as f: f.create_group('Root').create_group('data').create_group('v1').create_dataset('features', data=np.zeros((2, 1)))
    _err(read_csd, tmp_path/'bad.csd', field='data/v1/intervals')
    np.savez(tmp_path/'u.npz', text=np.zeros((3, 2)))
    _err(load_utterance_npz, tmp_path/'u.npz', field='segment_id')

def test_count_mismatch(tmp_path):
    d = mult_dict(); d['train']['vision'] = d['train']['vision'][:-1]
    assert 'samples' in _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='train.vision')
    d = mult_dict(); d['valid']['labels'] = d['valid']['labels'][:-1]
    _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='valid.labels')
    m = mmsa_dict(); m['test']['audio_lengths'] = m['test']['audio_lengths'][:-1]
    _err(load_mmsa_pickle, dump(m, tmp_path/'u.pkl'), field='test.audio_lengths')
    t = tailor_dict(); t['train']['tgt'] = t['train']['tgt'][:-1]
    torch.save(t, tmp_path/'tv.pt'); _err(load_tailor_pt, tmp_path/'tv.pt', field='train.tgt')

def test_nonfinite_labels_refused(tmp_path):
    d = mult_dict(); d['test']['labels'][1, 0, 0] = np.nan
    assert 'non-finite label' in _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='test.labels')

def test_wrong_rank(tmp_path):
    d = mult_dict(); d['train']['text'] = d['train']['text'].mean(1)
    assert 'wrong rank' in _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='train.text')
    m = mmsa_dict(); m['train']['text_bert'] = m['train']['text_bert'][:, :2]
    _err(load_mmsa_pickle, dump(m, tmp_path/'u.pkl'), field='train.text_bert')
    m = mmsa_dict(); m['train']['regression_labels'] = np.zeros((4, 2))
    _err(load_mmsa_pickle, dump(m, tmp_path/'u.pkl'), field='train.regression_labels')

def test_label_layout_not_recognised(tmp_path):
    d = mult_dict()
    for s in d: d[s]['labels'] = np.zeros((len(d[s]['text']), 6))
    assert 'not recognised' in _err(load_mult_pickle, dump(d, tmp_path/'mosi_data.pkl'), field='train.labels')
    t = tailor_dict(); t['valid']['tgt'][1] = [2, 11, 3]
    torch.save(t, tmp_path/'tv.pt')
    assert 'not recognised' in _err(load_tailor_pt, tmp_path/'tv.pt', field='valid.tgt[1]')
    write_csd(tmp_path/'lab.csd', 'labels', {'v': (np.zeros((2, 3)), np.zeros((2, 2)))})
    (tmp_path/'folds.json').write_text(json.dumps({'train': ['v'], 'valid': [], 'test': []}))
    assert 'not recognised' in _err(load_sdk_csd, tmp_path/'lab.csd')

def test_unknown_layout(tmp_path):
    p = dump({'train': {'x': np.zeros(3)}}, tmp_path/'other.pkl')
    msg = _err(load_dataset, p, field='layout')
    assert "['x']" in msg and 'unknown layout' in msg
    _err(load_dataset, p, layout='csv', field='layout')
    (tmp_path/'notes.txt').write_text('hello')
    _err(load_dataset, tmp_path/'notes.txt', field='layout')
    (tmp_path/'empty').mkdir(); (tmp_path/'empty'/'a.txt').write_text('x')
    assert 'a.txt' in _err(load_dataset, tmp_path/'empty', field='layout')

# ---------------------------------------------------------------- readers on hand-made fixtures (known answers)
def test_mult_fixture(tmp_path):
    d = mult_dict()
    data = load_mult_pickle(dump(d, tmp_path/'mosi_data.pkl', protocol=2))
    assert isinstance(data, MultimodalData) and data.layout == 'mult' and data.task.kind == 'regression'
    tr = data.train
    assert tr.ids[0] == 'vid0_1.5_3.0'
    np.testing.assert_allclose(tr.labels[:, 0].numpy(), d['train']['labels'][:, 0, 0], rtol=1e-6)
    assert tr.masks['text'][:, :2].sum() == 0 and tr.masks['text'][:, 2:].all()
    assert tr.masks['audio'][0, 3]  # the -inf step is real, not padding
    assert tr.nonfinite['audio'] == 1 and tr.features['audio'][0, 3, 0] == 0
    assert all(x.dtype == torch.float32 and torch.isfinite(x).all() for x in tr.features.values())
    data = load_mult_pickle(dump(d, tmp_path/'mosi_data.pkl'), mask_mode='ones')
    assert data.train.masks['text'].all()

def test_mult_iemocap_fixture(tmp_path):
    d = mult_dict(labels='iemocap')
    p = dump(d, tmp_path/'iemocap_data.pkl')
    data = load_mult_pickle(p)
    assert data.task.kind == 'binary_per_class' and data.task.classes == IEMOCAP_CLASSES and data.task.name == 'iemocap-4'
    np.testing.assert_array_equal(data.train.labels.numpy(), d['train']['labels'].argmax(-1))
    counts = data.report['active_per_sample']['train']
    assert sum(counts.values()) == 4
    assert counts == dict(sorted(collections.Counter(d['train']['labels'].argmax(-1).sum(1).tolist()).items()))
    assert load_mult_pickle(p, iemocap_as='multilabel').task.kind == 'multilabel'

def test_mmsa_fixture(tmp_path):
    m = mmsa_dict()
    data = load_mmsa_pickle(dump(m, tmp_path/'unaligned_50.pkl'))
    tr = data.train
    assert tr.extras['text_bert'].dtype == torch.long and tr.extras['text_bert'].shape == (4, 3, 6)
    assert tr.ids[1] == 'v1$_$2' and tr.raw_text[0] == 'text 0'
    assert tr.masks['audio'].sum(1).tolist() == [1, 2, 3, 4]
    assert tr.masks['text'].sum(1).tolist() == [4] * 4  # from text_bert's input mask
    assert data.report['config'] == {'feature_T': 'bert'}
    a = mmsa_dict(unaligned=False)
    assert load_mmsa_pickle(dump(a, tmp_path/'aligned_50.pkl')).train.masks['vision'].all()

def test_tailor_fixture(tmp_path):
    torch.save(tailor_dict(), tmp_path/'tv.pt')
    data = load_tailor_pt(tmp_path/'tv.pt')
    assert data.task.kind == 'multilabel' and data.task.classes == EMOTIONS
    np.testing.assert_array_equal(data.train.labels.numpy(), [[1, 0, 0, 0, 0, 0], [0] * 6, [0, 1, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0]])
    assert all(mk.all() for mk in data.train.masks.values())
    dropped = load_tailor_pt(tmp_path/'tv.pt', drop_empty=True)
    assert len(dropped.train) == 3 and dropped.report['dropped_empty']['train'] == 1
    assert dropped.train.ids == ['train_0', 'train_2', 'train_3']  # the original row numbers survive the drop
    assert sniff_layout(tmp_path/'tv.pt')[0] == 'tailor'

def test_tailor_settings_namespace(tmp_path):
    "LaMP-lineage .pt files hold an argparse.Namespace of options: allowed (it runs no code), and the data loads."
    import argparse
    torch.save({**tailor_dict(), 'settings': argparse.Namespace(max_text_seq_len=60)}, tmp_path/'tv.pt')
    assert safe_torch_load(tmp_path/'tv.pt')['settings'].max_text_seq_len == 60
    assert len(load_dataset(tmp_path/'tv.pt').train) == 4

def test_garbage_and_non_dict_files(tmp_path):
    (tmp_path/'g.pt').write_bytes(b'hello world, not a torch file')
    assert 'corrupt' in _err(load_tailor_pt, tmp_path/'g.pt')
    p = dump((np.zeros((2, 63, 5)), np.zeros((2, 63)), 63), tmp_path/'text_2way.pickle', protocol=2)  # a Poria-style tuple
    assert 'a tuple, not a dict of splits' in _err(load_dataset, p, field='layout')
    assert 'expected a dict of splits' in _err(load_mult_pickle, p, field='top level')

def test_tailor_pickle_fallback(tmp_path):
    p = dump(tailor_dict(), tmp_path/'train_valid_test.pt')  # TAILOR also accepts a plain pickle
    assert load_tailor_pt(p).train.labels.shape == (4, 6)
    assert load_dataset(p).layout == 'tailor'

def test_decode_tailor_targets():
    y = decode_tailor_targets([[2, 4, 3], [2, 6, 9, 3], [2, 3], [2, 5, 3, 0, 0]])
    np.testing.assert_array_equal(y, [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 1], [0] * 6, [0, 1, 0, 0, 0, 0]])

def _sdk_folder(folder):
    folder.mkdir()
    lab = {'v1': (np.array([[1.5], [-2.]], np.float32), np.array([[0., 2.], [2., 5.]])),
           'v2': (np.array([[0.5]], np.float32), np.array([[0., 3.]])),
           'v3': (np.array([[-0.5]], np.float32), np.array([[1., 3.]]))}
    def frames(n, d):
        x = np.arange(n, dtype=np.float32)[:, None].repeat(d, 1) + 1
        return x, np.stack([np.arange(n), np.arange(1, n + 1)], 1).astype(float)
    write_csd(folder/'X_Opinion_Labels.csd', 'Opinion Segment Labels', lab, {'dimension names': ['sentiment']})
    for name, d in (('X_TimestampedWordVectors.csd', 3), ('X_COVAREP.csd', 2), ('X_Facet.csd', 1)):
        write_csd(folder/name, name[2:-4], {'v1': frames(5, d), 'v2': frames(3, d), 'v3': frames(3, d)})
    (folder/'folds.json').write_text(json.dumps({'train': ['v1'], 'valid': ['v2'], 'test': ['v3']}))
    return folder

def test_sdk_fixture(tmp_path):
    f = _sdk_folder(tmp_path/'sdk')
    data = load_sdk_csd(f, max_len=4)
    assert data.dims == {'text': 3, 'audio': 2, 'vision': 1}
    tr = data.train
    assert tr.ids == ['v1[0]', 'v1[1]'] and tr.labels[:, 0].tolist() == [1.5, -2.0]
    assert tr.features['audio'][:, :, 0].tolist() == [[1, 2, 0, 0], [3, 4, 5, 0]]
    assert tr.masks['vision'].sum(1).tolist() == [2, 3]
    assert data.test.features['text'][0, :, 0].tolist() == [2, 3, 0, 0]  # frames [1,2] and [2,3] inside [1,3]
    assert load_sdk_csd(f, max_len=2).train.masks['audio'].sum(1).tolist() == [2, 2]  # truncated
    assert data.report['metadata']['dimension names'] == ['sentiment']
    assert load_dataset(f).layout == 'sdk'
    # labels only, one csd, folds from the folder
    lab = load_sdk_csd(f/'X_Opinion_Labels.csd')
    assert [len(lab[s]) for s in lab.splits] == [2, 1, 1] and lab.dims == {'text': 0, 'audio': 0, 'vision': 0}
    assert "root 'Opinion Segment Labels', 3 videos, 4 rows" in describe_csd(f/'X_Opinion_Labels.csd')

def test_sdk_explicit_modalities_and_unknown(tmp_path):
    f = _sdk_folder(tmp_path/'sdk')
    (f/'X_Facet.csd').unlink()
    write_csd(f/'X_mystery.csd', 'mystery', {v: (np.ones((3, 1), np.float32), np.array([[0, 1], [1, 2], [2, 3.]])) for v in ('v1', 'v2', 'v3')})
    with pytest.raises(DatasetFormatError, match='modality'): load_sdk_csd(f)
    data = load_sdk_csd(f, modalities={'text': 'X_TimestampedWordVectors.csd', 'audio': 'X_COVAREP.csd',
                                       'vision': 'X_mystery.csd'})
    assert data.dims['vision'] == 1

def test_sdk_word_csd_refused(tmp_path):
    f = _sdk_folder(tmp_path/'sdk')
    (f/'X_TimestampedWordVectors.csd').unlink()
    words = {v: (np.array([[b'hello'], [b'sp'], [b'world']]), np.array([[0, 1], [1, 2], [2, 3.]])) for v in ('v1', 'v2', 'v3')}
    write_csd(f/'X_TimestampedWords.csd', 'words', words)
    with pytest.raises(DatasetFormatError, match='not numbers'): load_sdk_csd(f)

def test_sdk_emotion_labels(tmp_path):
    rows = np.array([[1., 0., 0.3, 0., 0., 0., 2.], [-1., 0., 0., 0., 0., 0., 0.]], np.float32)
    write_csd(tmp_path/'All_Labels.csd', 'All Labels', {'a': (rows, np.array([[0, 1], [1, 2.]])),
                                                        'b': (rows, np.array([[0, 1], [1, 2.]])),
                                                        'c': (rows, np.array([[0, 1], [1, 2.]]))})
    (tmp_path/'folds.json').write_text(json.dumps({'standard_train_fold': ['a'], 'standard_valid_fold': ['b'], 'standard_test_fold': ['c']}))
    emo = load_sdk_csd(tmp_path/'All_Labels.csd', label='emotions')
    assert emo.task.kind == 'multilabel' and emo.train.labels.tolist() == [[0, 1, 0, 0, 0, 1], [0] * 6]
    sent = load_sdk_csd(tmp_path/'All_Labels.csd', label='sentiment')
    assert sent.train.labels[:, 0].tolist() == [1., -1.]
    with pytest.raises(DatasetFormatError, match='not recognised'): load_sdk_csd(tmp_path/'All_Labels.csd')

def test_utterance_fixture(tmp_path):
    n = 12; rng = np.random.default_rng(0)
    text = rng.normal(size=(n, 5)).astype(np.float64); text[0, 0] = np.nan
    np.savez(tmp_path/'u.npz', segment_id=np.array([f'vid{i // 3}_{i % 3 + 1}' for i in range(n)]),
             text=text, audio=rng.normal(size=(n, 3)), vision=rng.normal(size=(n, 4)),
             sentiment=np.linspace(-3, 3, n), std_split=np.array(['train'] * 6 + ['valid'] * 3 + ['test'] * 3),
             poria_split=np.array(['train'] * 9 + ['test'] * 3))
    data = load_utterance_npz(tmp_path/'u.npz')
    assert [len(data[s]) for s in data.splits] == [6, 3, 3] and data.train.features['audio'].shape == (6, 1, 3)
    assert data.train.nonfinite['text'] == 1 and data.train.features['text'].dtype == torch.float32
    assert data.train.ids[:2] == ['vid0_1', 'vid0_2']
    p = load_utterance_npz(tmp_path/'u.npz', split='poria', poria_valid_frac=0.34)
    assert len(p.valid) == 3 and len(p.test) == 3
    assert not {i.rsplit('_', 1)[0] for i in p.valid.ids} & {i.rsplit('_', 1)[0] for i in p.train.ids}
    assert load_dataset(tmp_path/'u.npz').layout == 'utterance'
    # object arrays are refused (allow_pickle=False)
    np.savez(tmp_path/'obj.npz', segment_id=np.array([object()], dtype=object))
    with pytest.raises(DatasetFormatError): load_utterance_npz(tmp_path/'obj.npz')

# ---------------------------------------------------------------- readers on data_samples/
def _check_common(data, layout, kind):
    assert data.layout == layout and data.task.kind == kind
    for s in data.splits:
        ds = data[s]
        assert len(ds) > 0 and len(ds.ids) == len(ds) and all(isinstance(i, str) and not i.startswith("b'") for i in ds.ids)
        for m in MODALITIES:
            x = ds.features[m]
            assert x.dtype == torch.float32 and x.ndim == 3 and torch.isfinite(x).all()
            assert ds.masks[m].dtype == torch.bool and ds.masks[m].shape == x.shape[:2]
        assert ds.labels.shape == (len(ds), data.task.n_outputs) and ds.labels.dtype == torch.float32
    return data

def test_sample_mult_mosi():
    d = _check_common(load_dataset(sample('mult_mosi_aligned.pkl')), 'mult', 'regression')
    assert len(set(d.train.seq_lens.values())) == 1
    y = torch.cat([d[s].labels for s in d.splits]); assert -3 <= y.min() and y.max() <= 3
    assert not d.train.masks['text'].all()  # left padding was found
    first_real = d.train.masks['text'].float().argmax(1)
    assert (d.train.masks['text'].sum(1) == d.train.seq_lens['text'] - first_real).all()  # padding is on the left

def test_sample_mult_mosei_unaligned():
    d = _check_common(load_dataset(sample('mult_mosei_senti_unaligned.pkl')), 'mult', 'regression')
    assert len(set(d.train.seq_lens.values())) == 3
    assert sum(d[s].nonfinite['audio'] for s in d.splits) > 0

def test_sample_mult_iemocap():
    p = sample('mult_iemocap_aligned.pkl')
    d = _check_common(load_dataset(p), 'mult', 'binary_per_class')
    assert d.task.classes == IEMOCAP_CLASSES
    raw = safe_pickle_load(p)
    assert raw['train']['labels'].shape[1:] == (4, 2)
    np.testing.assert_array_equal(d.train.labels.numpy(), raw['train']['labels'].argmax(-1))
    act = d.report['active_per_sample']['train']
    assert sum(act.values()) == len(d.train) and max(act, key=act.get) == 1  # about one emotion per sample
    _check_common(load_mult_pickle(p, iemocap_as='multilabel'), 'mult', 'multilabel')

@pytest.mark.parametrize('name', ['mmsa_mosi_aligned_50.pkl', 'mmsa_mosi_unaligned_50.pkl'])
def test_sample_mmsa(name):
    p = sample(name)
    d = _check_common(load_dataset(p), 'mmsa', 'regression')
    raw = safe_pickle_load(p)
    tb = d.train.extras['text_bert']
    assert tb.dtype == torch.long and tb.shape[1] == 3
    np.testing.assert_array_equal(tb.numpy(), raw['train']['text_bert'].astype(np.int64))
    assert all('$_$' in i for i in d.train.ids) and len(d.train.raw_text) == len(d.train)
    if 'unaligned' in name:
        for m in ('audio', 'vision'):
            lens = np.minimum(raw['train'][f'{m}_lengths'], d.train.seq_lens[m])
            np.testing.assert_array_equal(d.train.masks[m].sum(1).numpy(), lens)
    else:
        assert 'audio_lengths' not in raw['train']

def test_sample_tailor():
    p = sample('tailor_mosei_aligned.pt')
    d = _check_common(load_dataset(p), 'tailor', 'multilabel')
    assert d.task.classes == EMOTIONS
    assert (d.train.labels.sum(1) == 0).any()  # zero-emotion samples kept by default
    dd = load_tailor_pt(p, drop_empty=True)
    assert (dd.train.labels.sum(1) > 0).all()
    assert len(dd.train) + dd.report['dropped_empty']['train'] == len(d.train)
    assert [len(dd.valid), len(dd.test)] == [len(d.valid), len(d.test)]  # valid/test stay whole

def test_sample_sdk():
    f = sample('sdk_mosi')
    d = _check_common(load_dataset(f), 'sdk', 'regression')
    assert all(i.endswith(']') and '[' in i for i in d.train.ids)
    folds = read_folds(f/'folds.json')
    assert {i.split('[')[0] for i in d.train.ids} <= set(folds['train'])
    assert d.report['unassigned_segments'] == 0
    labs = [p for p in f.glob('*.csd') if 'label' in p.name.lower()]
    assert len(labs) == 1
    lab_only = load_sdk_csd(labs[0])
    assert [len(lab_only[s]) for s in lab_only.splits] == [len(d[s]) for s in d.splits]
    np.testing.assert_array_equal(lab_only.train.labels.numpy(), d.train.labels.numpy())

def test_samples_misaligned_ids_match():
    "data_samples/misaligned.json names (file, split, index, id): the loaders must put the same id at that row."
    info = json.loads(sample('misaligned.json').read_text())
    checked = 0
    for fname, splits in info.items():
        if not isinstance(splits, dict) or not (SAMPLES/fname).exists(): continue
        data = load_dataset(SAMPLES/fname)
        for split, rows in splits.items():
            if split not in ('train', 'valid', 'test') or not isinstance(rows, list): continue
            for r in rows:
                if isinstance(r, dict) and 'index' in r and 'id' in r:
                    assert data[split].ids[r['index']] == r['id'], (fname, split, r)
                    checked += 1
    assert checked > 0

# ---------------------------------------------------------------- issue 8: drop_empty on train only; one list of layout names
def test_tailor_drop_empty_train_only(tmp_path):
    torch.save(tailor_dict(), tmp_path/'tv.pt')  # every split has an empty target [2, 3] at row 1
    whole, dropped = load_tailor_pt(tmp_path/'tv.pt'), load_tailor_pt(tmp_path/'tv.pt', drop_empty=True)
    assert [len(dropped[s]) for s in ('valid', 'test')] == [len(whole[s]) for s in ('valid', 'test')] == [3, 3]
    assert (dropped.valid.labels.sum(1) == 0).any() and (dropped.test.labels.sum(1) == 0).any()
    assert len(dropped.train) == 3 and dropped.report['dropped_empty'] == {'train': 1, 'valid': 0, 'test': 0}

def _utterance_npz(path, n=12):
    rng = np.random.default_rng(0)
    np.savez(path, segment_id=np.array([f'vid{i // 3}_{i % 3 + 1}' for i in range(n)]), text=rng.normal(size=(n, 5)),
             audio=rng.normal(size=(n, 3)), vision=rng.normal(size=(n, 4)), sentiment=np.linspace(-3, 3, n),
             std_split=np.array(['train'] * 6 + ['valid'] * 3 + ['test'] * 3))
    return path

def test_layout_names_and_npz_alias(tmp_path):
    from cdatlib.formats import LAYOUTS, LAYOUT_ALIASES, layout_name
    assert LAYOUTS == ('mult', 'mmsa', 'tailor', 'sdk', 'utterance') and LAYOUT_ALIASES == {'npz': 'utterance'}
    p = _utterance_npz(tmp_path/'u.npz')
    a, b = load_dataset(p, layout='npz'), load_dataset(p, layout='utterance')
    assert a.layout == b.layout == 'utterance' and len(a.train) == len(b.train) == 6
    assert [layout_name(x) for x in LAYOUTS] == list(LAYOUTS) and layout_name('npz') == 'utterance'
    msg = _err(load_dataset, p, layout='csv', field='layout')
    assert 'npz=utterance' in msg and 'mmsa' in msg

# ---------------------------------------------------------------- issue 7: the data report's warnings and problems
def test_data_report_warnings_and_problems(tmp_path):
    d = mult_dict()
    d['test']['id'] = d['train']['id'][:3]  # test ids that are train ids
    data = load_mult_pickle(dump(d, tmp_path/'mosi_data.pkl'))
    w = data.warnings()
    assert any(x.startswith('test.id: 3 of its ids are also train ids') for x in w), w
    assert any(x.startswith('train.audio: 1 non-finite') for x in w), w
    assert data.problems() == []
    d = mult_dict(); d['valid']['labels'] = d['valid']['labels'] * 1e30
    d['train']['vision'][:] = np.nan
    bad = load_mult_pickle(dump(d, tmp_path/'mosi_data.pkl'), mask_mode='ones')
    p = bad.problems()
    assert any(x.startswith('valid.labels: sentiment in') and 'outside' in x for x in p), p
    assert 'train.vision: every value was NaN or inf and became 0' in p
    text = bad.describe()
    assert all(f'problem: {x}' in text for x in p) and all(f'warning: {x}' in text for x in bad.warnings())


def test_write_csd_is_stable_and_round_trips(tmp_path):
    data = {'v2': (np.arange(6, dtype=np.float32).reshape(3, 2), np.array([[0, 1], [1, 2], [2, 3.]])),
            'v1': (np.ones((1, 2), np.float32), np.array([[0, 1.]]))}
    meta = {'dimension names': ['x', 'y']}
    for compress in (False, True):
        a = write_csd(tmp_path/f'a{compress}.csd', 'Root', data, meta, compress=compress)
        b = write_csd(tmp_path/f'b{compress}.csd', 'Root', dict(reversed(data.items())), meta, compress=compress)
        assert a.read_bytes() == b.read_bytes()  # videos are written in sorted order, whatever the dict's order
        c = read_csd(a)
        assert sorted(c['data']) == ['v1', 'v2']
        assert c['metadata'] == {'dimension names': ['x', 'y'], 'root name': 'Root'}
        np.testing.assert_array_equal(c['data']['v2']['features'], data['v2'][0])
        with h5py.File(a) as f: assert (f['Root/data/v2/features'].compression == 'gzip') == compress


def test_shared_data_dir(monkeypatch, tmp_path):
    "The real-data folder: $CDATLIB_SHARED_DATA when set, else data/ in the checkout"
    from cdatlib.formats import shared_data_dir
    monkeypatch.setenv('CDATLIB_SHARED_DATA', str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.delenv('CDATLIB_SHARED_DATA')
    assert shared_data_dir() == Path(__file__).resolve().parents[1]/'data'
    from cdatlib.experiments import real_mosi   # still importable from its first home
    assert real_mosi.shared_data_dir is shared_data_dir
