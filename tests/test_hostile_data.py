"""Hostile and malformed dataset files: each test builds one attack in tmp_path and checks that it is refused with a
`DatasetFormatError` naming the file and the field, and that nothing happened to the process (no crash: the load
runs in a subprocess; no class changed; no outside file read; no huge allocation)."""
import argparse, json, os, pickle, struct, subprocess, sys, textwrap, zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cdatlib.formats import (DatasetFormatError, load_dataset, load_mult_pickle, load_sdk_csd, load_tailor_pt,
                             read_csd, safe_pickle_load, safe_torch_load, write_csd)

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's own _reconstruct, under whichever module name this numpy uses


# ---------------------------------------------------------------- helpers
def run_isolated(code, timeout=60, mem_gib=4):
    """Run `code` in a fresh interpreter with an address-space limit; (returncode, output).
    A segfault shows as returncode -11 here instead of killing pytest; a memory bomb hits the limit, not the machine."""
    prelude = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({mem_gib} << 30, {mem_gib} << 30))\n"
               if mem_gib else '')
    import cdatlib  # the child imports the very cdatlib this test process imported (not whatever its cwd holds)
    pkg_root = str(Path(cdatlib.__file__).resolve().parents[1])
    env = {**os.environ, 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([pkg_root] + [q for q in os.environ.get('PYTHONPATH', '').split(os.pathsep) if q])}
    p = subprocess.run([sys.executable, '-c', prelude + textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd='/')
    return p.returncode, p.stdout + p.stderr

LOAD_AND_TOUCH = """
    import sys
    from cdatlib.formats import DatasetFormatError, {fn}
    try: obj = {fn}(sys.argv[1] if len(sys.argv) > 1 else {path!r})
    except DatasetFormatError as e: print('REFUSED', e); raise SystemExit(0)
    print('LOADED', repr(obj)[:200])  # reading the elements is what crashes on a pointer dtype
"""

def assert_refused_isolated(path, fn='safe_pickle_load', field=None, **kw):
    rc, out = run_isolated(LOAD_AND_TOUCH.format(fn=fn, path=str(path)), **kw)
    assert rc == 0, f'the process died (rc {rc}): {out[-2000:]}'
    assert 'REFUSED' in out and str(path) in out, out[-2000:]
    if field: assert field in out, out[-2000:]
    return out

def refused(fn, path, field=None, *args, **kw):
    with pytest.raises(DatasetFormatError) as e: fn(path, *args, **kw)
    msg = str(e.value)
    assert str(path) in msg, msg
    if field is not None: assert field in msg, msg
    return msg


# ---------------------------------------------------------------- 1. a dtype whose state declares an object field
class ObjectFieldDtype:
    "numpy.dtype(base) whose BUILD state declares one object field at offset 0 and flags 0 (raw bytes, no list)."
    def __init__(self, base): self.base = base
    def __reduce__(self):
        return (np.dtype, (self.base, False, True), (3, '|', None, ('f',), {'f': (np.dtype('O'), 0)}, 8, 1, 0))

class PointerArray:
    "An array of that dtype whose 8 bytes of data would be read as a PyObject pointer."
    def __init__(self, base, shape=(1,)): self.base, self.shape = base, shape
    def __reduce__(self):
        return (_RECONSTRUCT, (np.ndarray, (0,), b'b'),
                (1, self.shape, ObjectFieldDtype(self.base), False, struct.pack('<Q', 0x4141414141) * int(np.prod(self.shape))))

@pytest.mark.parametrize('base', ['V8', 'f8'])
def test_object_field_dtype_pickle_no_segfault(tmp_path, base):
    p = tmp_path/'mosi_data.pkl'
    p.write_bytes(pickle.dumps({'train': {'labels': PointerArray(base, (1, 1, 1))}}, protocol=2))
    assert len(p.read_bytes()) < 400
    assert_refused_isolated(p, 'safe_pickle_load', field='dtype')
    assert_refused_isolated(p, 'load_dataset', field='dtype')

@pytest.mark.parametrize('base', ['V8', 'f8'])
def test_object_field_dtype_torch_no_segfault(tmp_path, base):
    p = tmp_path/'train_valid_test.pt'
    torch.save({'train': {'src-text': PointerArray(base)}}, p)
    assert_refused_isolated(p, 'safe_torch_load', field='dtype')
    assert_refused_isolated(p, 'load_dataset', field='dtype')

def test_scalar_with_object_field_dtype_refused(tmp_path):
    class PointerScalar:
        def __reduce__(self): return (np.float64(1).__reduce__()[0], (ObjectFieldDtype('V8'), struct.pack('<Q', 0x41414141)))
    p = tmp_path/'s.pkl'; p.write_bytes(pickle.dumps({'x': PointerScalar()}, protocol=2))
    assert_refused_isolated(p, 'safe_pickle_load', field='dtype')

def test_plain_dtypes_still_load(tmp_path):
    obj = {k: np.arange(4).astype(k) for k in ('f4', '>f8', 'i2', 'u1', '?', 'c8', 'U3', 'S2')}
    obj['ids'] = np.array([b'a', b'b'], dtype=object)
    p = tmp_path/'ok.pkl'; p.write_bytes(pickle.dumps(obj, protocol=2))
    back = safe_pickle_load(p)
    for k, v in obj.items():
        assert back[k].dtype == v.dtype and (back[k] == v).all()


# ---------------------------------------------------------------- 2. BUILD on a class
# GLOBAL argparse.Namespace; state (None, {'out_dir': '/tmp/attacker'}); BUILD -> setattr on the class itself
CLASS_PATCH = b'\x80\x02cargparse\nNamespace\nN}X\x07\x00\x00\x00out_dirX\r\x00\x00\x00/tmp/attackers\x86b.'

def _parser_default():
    parser = argparse.ArgumentParser(); parser.add_argument('--out-dir', default='runs')
    return parser.parse_args([]).out_dir

@pytest.mark.parametrize('target', [b'cargparse\nNamespace\n', b'cnumpy\nndarray\n', b'cnumpy\ndtype\n',
                                    b'ccollections\nOrderedDict\n'])
def test_build_on_class_refused(tmp_path, target):
    data = CLASS_PATCH.replace(b'cargparse\nNamespace\n', target)
    p = tmp_path/'patch.pkl'; p.write_bytes(data)
    try:
        refused(safe_pickle_load, p, 'BUILD')
        assert not hasattr(argparse.Namespace, 'out_dir') and _parser_default() == 'runs'
    finally:
        if 'out_dir' in vars(argparse.Namespace): del argparse.Namespace.out_dir  # never leak into other tests

def test_build_on_class_refused_in_torch_file(tmp_path):
    p = tmp_path/'tv.pt'
    with zipfile.ZipFile(p, 'w') as z: z.writestr('tv/data.pkl', CLASS_PATCH)
    try:
        refused(safe_torch_load, p, 'BUILD')
        refused(load_dataset, p, 'BUILD')
        assert not hasattr(argparse.Namespace, 'out_dir') and _parser_default() == 'runs'
    finally:
        if 'out_dir' in vars(argparse.Namespace): del argparse.Namespace.out_dir

def test_namespace_instances_still_load(tmp_path):
    p = tmp_path/'ns.pkl'; p.write_bytes(pickle.dumps({'settings': argparse.Namespace(a=1, b='x')}, protocol=2))
    assert vars(safe_pickle_load(p)['settings']) == {'a': 1, 'b': 'x'}


# ---------------------------------------------------------------- 3. HDF5 reading outside the file
SECRET = b'SECRET-BYTES-0123456789abcdef!!!' * 4  # 128 bytes = 16 float64 values

def _secret(tmp_path):
    s = tmp_path/'outside.bin'; s.write_bytes(SECRET)
    return s

def _csd_with(path, make_features):
    "A .csd with one video whose `features` dataset is made by make_features(group); intervals are honest."
    with h5py.File(path, 'w') as f:
        v = f.create_group('Root').create_group('data').create_group('v1')
        make_features(v)
        v.create_dataset('intervals', data=np.stack([np.arange(8.), np.arange(1., 9.)], 1))
    return path

def _assert_no_secret(msg): assert 'SECRET' not in msg and '0123456789abcdef' not in msg

def test_csd_external_link_refused(tmp_path):
    other = tmp_path/'other.h5'
    with h5py.File(other, 'w') as f: f['x'] = np.frombuffer(SECRET, np.float64).reshape(8, 2)
    p = _csd_with(tmp_path/'ext_link.csd', lambda v: v.__setitem__('features', h5py.ExternalLink(str(other), 'x')))
    msg = refused(read_csd, p, 'Root/data/v1/features')
    assert 'external link' in msg; _assert_no_secret(msg)
    refused(load_sdk_csd, p, 'Root/data/v1/features')

def test_csd_soft_link_refused(tmp_path):
    p = _csd_with(tmp_path/'soft.csd', lambda v: v.__setitem__('features', h5py.SoftLink('/Root/data/v1/intervals')))
    assert 'soft link' in refused(read_csd, p, 'Root/data/v1/features')

def test_csd_external_storage_refused(tmp_path):
    s = _secret(tmp_path)
    p = _csd_with(tmp_path/'ext_store.csd',
                  lambda v: v.create_dataset('features', shape=(8, 2), dtype='f8', external=[(str(s), 0, len(SECRET))]))
    msg = refused(read_csd, p, 'Root/data/v1/features')
    assert 'external raw storage' in msg; _assert_no_secret(msg)

def test_csd_virtual_dataset_refused(tmp_path):
    other = tmp_path/'other.h5'
    with h5py.File(other, 'w') as f: f['x'] = np.frombuffer(SECRET, np.float64).reshape(8, 2)
    def virtual(v):
        layout = h5py.VirtualLayout(shape=(8, 2), dtype='f8')
        layout[:] = h5py.VirtualSource(str(other), 'x', shape=(8, 2))
        v.create_virtual_dataset('features', layout)
    p = _csd_with(tmp_path/'virtual.csd', virtual)
    msg = refused(read_csd, p, 'Root/data/v1/features')
    assert 'virtual' in msg; _assert_no_secret(msg)

def test_csd_huge_declared_size_refused(tmp_path):
    # 16 GiB declared, nothing written: a few KB on disk, reading it would allocate 16 GiB of fill values
    p = _csd_with(tmp_path/'huge.csd', lambda v: v.create_dataset('features', shape=(2**31, 1), dtype='f8'))
    assert p.stat().st_size < 100_000
    msg = refused(read_csd, p, 'Root/data/v1/features')
    assert 'declares' in msg and 'bytes' in msg

def test_csd_huge_compressed_size_refused(tmp_path):
    p = _csd_with(tmp_path/'huge_gz.csd', lambda v: v.create_dataset('features', shape=(2**28, 8), dtype='f8',
                                                                       chunks=(2**16, 8), compression='gzip'))
    msg = refused(read_csd, p, 'data')
    assert 'declare' in msg and 'compressed' in msg


# ---------------------------------------------------------------- 4. every dataset's dtype and rank (all videos, labels too)
def _sdk(tmp_path, label_rows=None, audio_v2=None):
    f = tmp_path/'sdk'; f.mkdir(parents=True)
    iv = lambda n: np.stack([np.arange(n), np.arange(1, n + 1)], 1).astype(float)
    lab = {v: (np.array([[0.5]], np.float32), np.array([[0., 3.]])) for v in ('v1', 'v2', 'v3')}
    if label_rows is not None: lab['v2'] = label_rows
    write_csd(f/'X_Labels.csd', 'labels', lab)
    for name, d in (('X_glove.csd', 3), ('X_COVAREP.csd', 2), ('X_Facet.csd', 1)):
        vids = {v: (np.ones((3, d), np.float32), iv(3)) for v in ('v1', 'v2', 'v3')}
        if name == 'X_COVAREP.csd' and audio_v2 is not None: vids['v2'] = audio_v2
        write_csd(f/name, name[2:-4], vids)
    (f/'folds.json').write_text(json.dumps({'train': ['v1'], 'valid': ['v2'], 'test': ['v3']}))
    return f

def test_sdk_second_video_wrong_rank(tmp_path):
    f = _sdk(tmp_path, audio_v2=(np.ones((3, 2, 2), np.float32), np.stack([np.arange(3), np.arange(1, 4)], 1).astype(float)))
    with pytest.raises(DatasetFormatError, match=r'X_COVAREP\.csd.*COVAREP/data/v2/features.*wrong rank'): load_sdk_csd(f)

def test_sdk_second_video_wrong_dtype_and_size(tmp_path):
    f = _sdk(tmp_path, audio_v2=(np.array([[b'ab', b'cd']] * 3), np.stack([np.arange(3), np.arange(1, 4)], 1).astype(float)))
    with pytest.raises(DatasetFormatError, match=r'X_COVAREP\.csd.*data/v2/features.*not numbers'): load_sdk_csd(f)
    g = _sdk(tmp_path/'b', audio_v2=(np.ones((3, 5), np.float32), np.stack([np.arange(3), np.arange(1, 4)], 1).astype(float)))
    with pytest.raises(DatasetFormatError, match=r'X_COVAREP\.csd.*disagree'): load_sdk_csd(g)

def test_sdk_labels_checked_in_every_video(tmp_path):
    f = _sdk(tmp_path, label_rows=(np.array([0.5], np.float32), np.array([0., 3.])))  # rank 1 in the second video
    with pytest.raises(DatasetFormatError, match=r'X_Labels\.csd.*labels/data/v2/features.*wrong rank'): load_sdk_csd(f)
    g = _sdk(tmp_path/'c', label_rows=(np.array([[0.5 + 1j]], np.complex64), np.array([[0., 3.]])))
    with pytest.raises(DatasetFormatError, match=r'X_Labels\.csd.*labels/data/v2/features.*complex'): load_sdk_csd(g)

def test_complex_features_refused(tmp_path):
    rng = np.random.default_rng(0)
    d = {s: {'text': rng.normal(size=(2, 3, 4)), 'audio': rng.normal(size=(2, 3, 2)), 'vision': rng.normal(size=(2, 3, 1)),
             'labels': rng.uniform(-3, 3, size=(2, 1, 1))} for s in ('train', 'valid', 'test')}
    d['valid']['audio'] = d['valid']['audio'] * 1j
    p = tmp_path/'mosi_data.pkl'; p.write_bytes(pickle.dumps(d))
    assert 'imaginary' in refused(load_mult_pickle, p, 'valid.audio')


# ---------------------------------------------------------------- 5. memory bombs
MEMORY_CASE = """
    import sys
    from cdatlib.formats import DatasetFormatError, {fn}
    try: {fn}({path!r})
    except DatasetFormatError as e: print('REFUSED', e); raise SystemExit(0)
    except MemoryError: print('RAW MemoryError'); raise SystemExit(3)
    print('LOADED')
"""

def _refused_without_memory(path, fn='safe_pickle_load', field=None, must=('bytes',)):
    rc, out = run_isolated(MEMORY_CASE.format(fn=fn, path=str(path)), mem_gib=3)
    assert rc == 0 and 'REFUSED' in out and str(path) in out, f'rc {rc}: {out[-1500:]}'
    if field: assert field in out, out
    for m in must: assert m in out, out
    return out

@pytest.mark.parametrize('op', [b'R', b'\x81'])  # REDUCE: name(2**40); NEWOBJ: name.__new__(name, 2**40)
@pytest.mark.parametrize('name', ['bytearray', 'bytes'])
def test_tiny_pickle_huge_allocation(tmp_path, name, op):
    # PROTO 2; GLOBAL __builtin__.<name>; LONG1 2**40; TUPLE1; REDUCE|NEWOBJ; STOP: about 40 bytes asking for 1 TiB
    data = b'\x80\x02c__builtin__\n' + name.encode() + b'\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85' + op + b'.'
    assert len(data) <= 43
    p = tmp_path/'bomb.pkl'; p.write_bytes(data)
    _refused_without_memory(p, must=('refused', name))

def test_array_declaring_more_than_its_bytes(tmp_path):
    class Huge:
        def __reduce__(self):
            return (_RECONSTRUCT, (np.ndarray, (0,), b'b'), (1, (10**12,), np.dtype('f8'), False, b'\0' * 8))
    p = tmp_path/'huge.pkl'; p.write_bytes(pickle.dumps({'train': {'text': Huge()}}, protocol=2))
    out = _refused_without_memory(p, field='array', must=('declares 8000000000000 bytes', 'holds 8'))
    p2 = tmp_path/'mosi_data.pkl'; p2.write_bytes(p.read_bytes())
    _refused_without_memory(p2, fn='load_dataset', field='array')

def test_binbytes8_declaring_huge_length(tmp_path):
    data = b'\x80\x04\x8e' + struct.pack('<Q', 2**40) + b'abc'  # BINBYTES8 of 1 TiB in an 14-byte file
    p = tmp_path/'b8.pkl'; p.write_bytes(data)
    _refused_without_memory(p, must=('truncated or corrupt',))

def test_zip_bomb_pt(tmp_path):
    p = tmp_path/'train_valid_test.pt'
    with zipfile.ZipFile(p, 'w', zipfile.ZIP_DEFLATED) as z: z.writestr('train_valid_test/data.pkl', bytes(200 * 2**20))
    assert p.stat().st_size < 2**20
    _refused_without_memory(p, fn='safe_torch_load', field='zip', must=('zip bomb',))
    _refused_without_memory(p, fn='load_dataset', field='zip')

def test_zip_bomb_npz(tmp_path):
    p = tmp_path/'u.npz'
    with zipfile.ZipFile(p, 'w', zipfile.ZIP_DEFLATED) as z: z.writestr('text.npy', bytes(200 * 2**20))
    from cdatlib.formats import load_utterance_npz
    assert 'zip bomb' in refused(load_utterance_npz, p, 'zip')

def test_memory_error_never_reaches_the_user(tmp_path, monkeypatch):
    import cdatlib.formats as F
    p = tmp_path/'mosi_data.pkl'; p.write_bytes(pickle.dumps({'train': {'labels': np.zeros((1, 1, 1))}}))
    def oom(*a, **k): raise MemoryError()
    monkeypatch.setattr(F, 'load_mult_pickle', oom)
    assert 'out of memory' in refused(load_dataset, p, 'memory')

def test_torch_tensor_beyond_its_storage(tmp_path):
    "A tensor of 10**9 elements viewing a 4-element storage record: refused before any view is made."
    import collections, io
    storage = object()
    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (10**9,), (1,), False, collections.OrderedDict()))
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj): return ('storage', torch.FloatStorage, '0', 'cpu', 4) if obj is storage else None
    buf = io.BytesIO(); Pickler(buf, protocol=2).dump({'x': Tensor()})
    p = tmp_path/'t.pt'
    with zipfile.ZipFile(p, 'w') as z: z.writestr('t/data.pkl', buf.getvalue()); z.writestr('t/data/0', bytes(16))
    assert 'storage' in refused(safe_torch_load, p, 'tensor')


# ---------------------------------------------------------------- 6. truncated files, inside every guard
def _tailor_pt(path):
    rng = np.random.default_rng(0)
    torch.save({s: {'src-text': rng.normal(size=(3, 4, 5)).astype(np.float32), 'src-audio': np.zeros((3, 4, 2), np.float32),
                    'src-visual': np.zeros((3, 4, 1), np.float32), 'tgt': [[2, 4, 3], [2, 3], [2, 5, 3]]}
                for s in ('train', 'valid', 'test')}, path)
    return path

@pytest.mark.parametrize('keep', [0.1, 0.5, 0.9, 0.999])
def test_truncated_pt_in_sniffing_and_readers(tmp_path, keep):
    full = _tailor_pt(tmp_path/'full.pt').read_bytes()
    p = tmp_path/'train_valid_test.pt'; p.write_bytes(full[:int(len(full) * keep)])
    assert 'corrupt' in refused(load_dataset, p)
    assert 'corrupt' in refused(load_tailor_pt, p)


# ---------------------------------------------------------------- 7. paths that are not regular files
def test_symlink_loop(tmp_path):
    p = tmp_path/'loop.pkl'; os.symlink(p, p)
    for fn in (safe_pickle_load, load_dataset, read_csd, safe_torch_load):
        assert 'symlink loop' in refused(fn, p)

def test_dev_null_and_directory(tmp_path):
    for fn in (safe_pickle_load, load_tailor_pt, read_csd, load_dataset):
        assert 'not a regular file' in refused(fn, Path('/dev/null'))
    d = tmp_path/'data.pkl'; d.mkdir()
    for fn in (safe_pickle_load, load_tailor_pt, read_csd):
        assert 'directory' in refused(fn, d)

def test_fifo_never_opened(tmp_path):
    p = tmp_path/'data.pkl'; os.mkfifo(p)
    # in a subprocess with a timeout: opening a FIFO for reading would block forever
    rc, out = run_isolated(f"""
        from cdatlib import formats as F
        for fn in ('safe_pickle_load', 'load_dataset', 'safe_torch_load', 'read_csd', 'load_utterance_npz'):
            try: getattr(F, fn)({str(p)!r}); print(fn, 'LOADED')
            except F.DatasetFormatError as e: print(fn, 'REFUSED', e)
    """, timeout=60, mem_gib=0)
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 5 and all('REFUSED' in l and str(p) in l and 'FIFO' in l for l in lines), out


def test_broken_symlink(tmp_path):
    p = tmp_path/'gone.pkl'; os.symlink(tmp_path/'nothing-here', p)
    assert 'broken symlink' in refused(safe_pickle_load, p)
    with pytest.raises(FileNotFoundError, match='no such file'): safe_pickle_load(tmp_path/'absent.pkl')

def test_complex_or_string_labels_refused(tmp_path):
    rng = np.random.default_rng(0)
    d = {s: {'text': rng.normal(size=(2, 3, 4)), 'audio': rng.normal(size=(2, 3, 2)), 'vision': rng.normal(size=(2, 3, 1)),
             'labels': rng.uniform(-3, 3, size=(2, 1, 1))} for s in ('train', 'valid', 'test')}
    d['test']['labels'] = d['test']['labels'] + 2j
    p = tmp_path/'mosi_data.pkl'; p.write_bytes(pickle.dumps(d))
    assert 'imaginary' in refused(load_mult_pickle, p, 'test.labels')
    d['test']['labels'] = np.array(['1.5', '2']).reshape(2, 1, 1)
    p.write_bytes(pickle.dumps(d))
    assert 'real numbers' in refused(load_mult_pickle, p, 'test.labels')
