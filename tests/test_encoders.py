"Tests of cdatlib.encoders that do not fit in the notebook: no network access, real CMU-MOSI transcripts"
import os, subprocess, sys, textwrap
from pathlib import Path
import pytest

from cdatlib.formats import shared_data_dir
ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()   # $CDATLIB_SHARED_DATA (tests/conftest.py sets it in a checkout beside shared/data)


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


def test_lstm_without_padding_skips_packing(monkeypatch):
    "A batch with no padding runs nn.LSTM directly (no compact/pack/unpack/scatter), with the packed path's results"
    import torch
    import cdatlib.encoders as E
    torch.manual_seed(0)
    enc = E.LSTMEncoder(4, 6, num_layers=2, bidirectional=True).eval()
    x, full = torch.randn(3, 7, 4), torch.ones(3, 7, dtype=torch.bool)
    with torch.no_grad():
        p_out, (p_h, _) = enc.rnn(E.pack_padded_sequence(x, torch.full((3,), 7), batch_first=True))
        p_out = E.pad_packed_sequence(p_out, batch_first=True)[0]
        p_final = p_h.view(2, 2, 3, 6)[-1].transpose(0, 1).reshape(3, -1)
        def refuse(*a, **k): raise AssertionError('packed path taken for a batch without padding')
        monkeypatch.setattr(E, 'pack_padded_sequence', refuse)
        out, final = enc.encode(x, full)
    assert torch.allclose(out, p_out, atol=1e-6) and torch.allclose(final, p_final, atol=1e-6)


def test_lstm_padding_invariance_with_one_padded_sample():
    "One padded sample in the batch still takes the packed path: every sample's state equals its state alone"
    import torch
    from cdatlib.encoders import LSTMEncoder
    torch.manual_seed(0)
    enc = LSTMEncoder(4, 6, bidirectional=True).eval()
    x, mask = torch.randn(3, 7, 4), torch.ones(3, 7, dtype=torch.bool)
    mask[1, :3] = False; x[1, :3] = 0.                       # left padding on one sample only
    with torch.no_grad():
        out, final = enc.encode(x, mask)
        alone = enc.encode(x[1:2, 3:])[1]
        assert torch.allclose(final[1], alone[0], atol=1e-6)
        assert torch.allclose(final[0], enc.encode(x[:1])[1][0], atol=1e-6)
        assert out[1, :3].abs().sum() == 0
        assert torch.equal(enc.encode(x, mask, outputs=False)[1], final)
        assert enc.encode(x, mask, outputs=False)[0] is None


def test_feature_transformer_without_padding_passes_no_key_mask():
    "No padding: no key padding mask reaches attention (an all-False one would keep PyTorch off its fused kernels)"
    import torch
    from torch import nn
    from cdatlib.encoders import FeatureTransformer
    torch.manual_seed(0)
    ft = FeatureTransformer(4, hidden_dim=8, num_layers=2, num_heads=2, ff_dim=16).eval()
    seen = []
    for layer in ft.encoder.layers:
        orig = layer.self_attn.forward
        def fwd(*a, _o=orig, **kw): seen.append(kw.get('key_padding_mask')); return _o(*a, **kw)
        layer.self_attn.forward = fwd
    x = torch.randn(2, 5, 4)
    y = ft(x, torch.ones(2, 5, dtype=torch.bool))            # gradients on: the layers call self_attn
    assert len(seen) == 2 and all(k is None for k in seen)
    assert torch.allclose(y, ft(x), atol=1e-6)


def test_fast_attention_inside_a_transformer_matches_pytorch():
    "Training mode, padded batch: FastMultiheadAttention's own attention (dropout ~0) = PyTorch's (dropout 0)"
    import copy, torch
    from cdatlib.encoders import FeatureTransformer, FastMultiheadAttention
    torch.manual_seed(0)
    ref = FeatureTransformer(4, hidden_dim=8, num_layers=2, num_heads=2, ff_dim=16, dropout=0.).train()
    ours = copy.deepcopy(ref)
    for layer in ours.encoder.layers:
        assert isinstance(layer.self_attn, FastMultiheadAttention)
        layer.self_attn.dropout = 1e-9          # takes the rand-based path, keeps (almost surely) everything
    x, mask = torch.randn(3, 6, 4), torch.ones(3, 6, dtype=torch.bool)
    mask[0, :2] = False; mask[2, 5] = False
    a, b = ref(x, mask), ours(x, mask)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    b.sum().backward()                         # gradients flow through the hand-written attention
    assert ours.encoder.layers[0].self_attn.in_proj_weight.grad.abs().sum() > 0
