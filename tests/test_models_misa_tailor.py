"""MISA and TAILOR beyond the notebook demos: the BERT text path of both models, and a short training run on real
CMU-MOSI utterance vectors (read as length-1 sequences) from the real-data folder named by $CDATLIB_SHARED_DATA
(skipped when absent). Real-data runs are scored on the validation split only: the test split is not used here."""
import os
from pathlib import Path

import pytest
import torch

from cdatlib.dataset import MODALITIES
from cdatlib.formats import load_dataset, load_utterance_npz
from cdatlib.metrics import sentiment_metrics
from cdatlib.models.misa import MISA
from cdatlib.models.tailor import TAILOR

from cdatlib.formats import shared_data_dir
ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir()   # $CDATLIB_SHARED_DATA (tests/conftest.py sets it in a checkout beside shared/data)
TINY_TAILOR = dict(hidden_size=16, num_heads=2, ff_dim=32, text_layers=1, audio_layers=1, vision_layers=1,
                   cross_layers=1, decoder_layers=1, max_len=16)


@pytest.fixture(scope='module')
def mmsa():
    return load_dataset(ROOT / 'data_samples' / 'mmsa_mosi_aligned_50.pkl')


@pytest.mark.parametrize('make', [
    lambda d: MISA(d, 1, hidden_size=16, ff_dim=32, text_encoder='bert'),
    lambda d: TAILOR(d, 1, text_encoder='bert', **TINY_TAILOR),
], ids=['misa', 'tailor'])
def test_bert_text_path(mmsa, make):
    torch.manual_seed(0)
    model = make(mmsa.dims)
    batch = mmsa.train.batch(torch.arange(6))
    out = model(batch)
    assert out.logits.shape == (6, 1)
    bert_params = [p for n, p in model.named_parameters() if 'bert' in n]
    assert bert_params and not any(p.requires_grad for p in bert_params)  # frozen by default
    loss = mmsa.task.loss(out.logits, batch['y']) + sum(out.aux_losses.values())
    loss.backward()
    assert all(p.grad is None for p in bert_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if 'bert' not in n)
    with pytest.raises(KeyError, match='text_bert'):
        model({k: v for k, v in batch.items() if k != 'text_bert'})


def _fit(model, ds, task, epochs, lr, bs=64):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(ds)).split(bs):
            b = ds.batch(idx)
            out = model(b)
            loss = task.loss(out.logits, b['y']) + sum(out.aux_losses.values())
            opt.zero_grad(); loss.backward(); opt.step()
    return model.eval()


@pytest.mark.parametrize('name', ['misa', 'tailor'])
def test_real_mosi_utterances(name):
    path = SHARED / 'mosi' / 'mosi_poria_utterance_real.npz'
    if not path.exists():
        pytest.skip(f"real data not found at {path}: clone beside shared/ or set CDATLIB_SHARED_DATA")
    torch.set_num_threads(1)
    data = load_utterance_npz(path)
    assert all(data.train.seq_lens[m] == 1 for m in MODALITIES)
    torch.manual_seed(0)
    if name == 'misa': model, lr = MISA(data.dims, 1, hidden_size=32, ff_dim=64, rnn_hidden={'text': 32, 'audio': 32, 'vision': 32}), 1e-3
    else: model, lr = TAILOR(data.dims, 1, task_kind='regression', **TINY_TAILOR), 1e-3
    model = _fit(model, data.train, data.task, epochs=4, lr=lr)
    with torch.no_grad(): pred = model(data.valid.batch(torch.arange(len(data.valid)))).logits
    y = data.valid.labels
    mae = sentiment_metrics(y, pred)['mae']
    mae_median = sentiment_metrics(y, data.train.labels.median().expand_as(y))['mae']
    assert mae < mae_median, (name, mae, mae_median)


def test_misa_detached_norm_collapses_on_real_mosi():
    "The reference's detached row norms in the difference loss collapse MISA's vectors (see nbs/11_misa.ipynb)"
    path = SHARED / 'mosi' / 'mosi_poria_utterance_real.npz'
    if not path.exists():
        pytest.skip(f"real data not found at {path}: clone beside shared/ or set CDATLIB_SHARED_DATA")
    torch.set_num_threads(1)
    data = load_utterance_npz(path)
    valid = data.valid.batch(torch.arange(len(data.valid)))
    res = {}
    for detach in (False, True):
        torch.manual_seed(0)
        model = MISA(data.dims, 1, hidden_size=32, ff_dim=64, rnn_hidden={m: 32 for m in MODALITIES}, diff_detach_norm=detach)
        model = _fit(model, data.train, data.task, epochs=4, lr=1e-3)
        with torch.no_grad(): out = model(valid)
        spread = torch.stack([h.std(0).mean() for h in out.h.values()]).mean().item()
        res[detach] = (sentiment_metrics(data.valid.labels, out.logits)['mae'], spread)
    (mae_exact, spread_exact), (mae_ref, spread_ref) = res[False], res[True]
    assert mae_exact < mae_ref - 0.3, res
    assert spread_ref < 0.2 * spread_exact, res


@pytest.mark.parametrize('name', ['misa', 'tailor'])
def test_learner_trains_both_models(name, tmp_path):
    "Both models plug into the Learner: their weighted auxiliary losses show up in the logged loss parts"
    from cdatlib.learner import Learner, MetricsCB
    torch.set_num_threads(1)
    data = load_dataset(ROOT / 'data_samples' / 'tailor_mosei_aligned.pt')
    torch.manual_seed(0)
    if name == 'misa': model, aux = MISA(data.dims, 6, hidden_size=32, ff_dim=64), {'diff', 'sim', 'recon'}
    else:
        model = TAILOR(data.dims, 6, task_kind=data.task.kind, **TINY_TAILOR)
        aux = {'adv_private', 'adv_common', 'orth_private', 'orth_common', 'common'}
    learn = Learner(model, data.dataloaders(batch_size=32), data.task, lr=3e-3, cbs=[MetricsCB()], path=tmp_path)
    learn.fit(3)
    row = learn.history[-1]
    assert {f'train_loss_{k}' for k in aux} <= set(row), sorted(row)
    assert learn.history[-1]['train_loss'] < learn.history[0]['train_loss']
    assert 'valid_micro_f1' in row
