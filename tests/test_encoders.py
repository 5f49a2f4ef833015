"Tests of cdatlib.encoders that do not fit in the notebook: no network access, real CMU-MOSI transcripts"
import os, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('CDATLIB_SHARED_DATA', ROOT.parent/'shared'/'data'))


def test_bert_loads_with_network_blocked():
    "BertTextEncoder loads and encodes with every socket refused and no HF offline variables set by the caller"
    code = textwrap.dedent("""
        import socket
        def refuse(*a, **k): raise RuntimeError('network access attempted')
        socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse
        import os, torch
        from cdatlib.encoders import BertTextEncoder
        enc = BertTextEncoder()
        assert os.environ['HF_HUB_OFFLINE'] == '1' and os.environ['TRANSFORMERS_OFFLINE'] == '1'
        with torch.no_grad(): e = enc(['it was really good', 'there is a sad part'])
        assert e.shape == (2, 384) and torch.isfinite(e).all()
        print('ok')
    """)
    env = {k: v for k, v in os.environ.items() if k not in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-3000:]


def test_missing_model_dir_names_path(tmp_path):
    from cdatlib.encoders import BertTextEncoder
    missing = tmp_path/'bert-base-uncased'
    with pytest.raises(FileNotFoundError, match='bert-base-uncased'): BertTextEncoder(missing)
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match='config.json'): BertTextEncoder(missing)


def test_minilm_transcripts_predict_mosi_sentiment():
    "Frozen MiniLM embeddings of the real CMU-MOSI transcripts carry sentiment: a linear probe on the SDK folds"
    seg = DATA/'mosi'/'mosi_segments.csv'
    if not seg.exists(): pytest.skip(f"real data not found at {seg}: clone beside shared/ or set CDATLIB_SHARED_DATA")
    import numpy as np, pandas as pd, torch
    from scipy.stats import pearsonr
    from sklearn.linear_model import LogisticRegression, Ridge
    from cdatlib.encoders import BertTextEncoder
    df = pd.read_csv(seg)
    df = df[df.std_split.isin(['train', 'test'])].reset_index(drop=True)
    enc = BertTextEncoder()
    with torch.no_grad():
        E = torch.cat([enc(enc.tokenize(df.text.tolist()[i:i + 256], max_len=50)) for i in range(0, len(df), 256)]).numpy()
    assert E.shape == (len(df), 384) and np.isfinite(E).all()
    tr, te = (df.std_split == 'train').values, (df.std_split == 'test').values
    acc = LogisticRegression(max_iter=2000).fit(E[tr], df.binary_nonneg[tr]).score(E[te], df.binary_nonneg[te])
    corr = pearsonr(Ridge(1.0).fit(E[tr], df.sentiment[tr]).predict(E[te]), df.sentiment[te])[0]
    # measured: acc 0.757, corr 0.622 on the 686 test segments; chance acc is about 0.58
    assert acc > 0.70, acc
    assert corr > 0.50, corr
