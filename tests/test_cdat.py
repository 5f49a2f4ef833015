"Tests of cdatlib.cdat (CDaT: masking analysis, modality confidence, dynamic PKT) beyond the notebooks' own checks"
import copy, math, os, sys
import numpy as np
import pytest
import torch
from torch import nn
from cdatlib.dataset import MODALITIES, Task
from cdatlib.models.core import ToyFusion, toy_batches
from cdatlib.models.naive import NaiveFusion
from cdatlib.cdat.masking import masking_gains, fuse_dropped, supports_fuse, train_mode
from cdatlib.cdat.confidence import tcp_target, fit_confidnet, cache_fused, ce_confidence, ConfidNet
from cdatlib.cdat.transfer import pkt_loss, pkt_probs, pair_weights, dckt_loss, CDaT, PAIRS

DIMS = {'text': 6, 'audio': 3, 'vision': 4}

class Toy(ToyFusion):
    "Chapter 06's ToyFusion with dropout 0.5; counts forward calls and logs (rows, training) of each fuse call"
    def __init__(self, dims=DIMS, n_outputs=2, hidden=4):
        super().__init__(dims, n_outputs, hidden, dropout=0.5)
        self.n_forward, self.fuse_log = 0, []
    def fuse(self, parts, drop=()):
        self.fuse_log.append((len(parts['h']['text']), self.training))
        return super().fuse(parts, drop)
    def forward(self, batch, drop=()):
        self.n_forward += 1
        return super().forward(batch, drop)

def batches(n, B=8, seed=0):
    "n toy batches (3 steps, two 0/1 labels) with sample indices numbered on across batches"
    return toy_batches(n, B, seed, dims=DIMS)

class Probe:
    "Stands in for the Learner inside one training batch"
    def __init__(self, model, batch, task):
        self.model, self.batch, self.task, self.training = model, batch, task, True
        self.out = model(batch); self.loss_parts, self.loss = {}, torch.zeros(())
    def add_loss(self, name, value): self.loss_parts[name] = value; self.loss = self.loss + value

TASK = Task('multilabel', ('a', 'b'))

# ---------------------------------------------------------------- PKT
def loop_pkt(s, t, eps=1e-8):
    "Plain-Python PKT on 0-d tensors (autograd-able): KL(teacher || student), mean over B*B"
    def probs(h):
        h = h.flatten(1); B = len(h)
        u = [h[i] / (torch.sqrt((h[i] * h[i]).sum()) + eps) for i in range(B)]
        K = [[((u[i] * u[j]).sum() + 1) / 2 for j in range(B)] for i in range(B)]
        return [[K[i][j] / sum(K[i]) for j in range(B)] for i in range(B)]
    P, Q = probs(t), probs(s); B = len(P)
    return sum(P[i][j] * torch.log((P[i][j] + eps) / (Q[i][j] + eps)) for i in range(B) for j in range(B)) / B ** 2

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_pkt_values_and_gradients_match_loop(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(6, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    v, w = pkt_loss(s, t), loop_pkt(s, t)
    assert abs(v.item() - w.item()) < 1e-6
    gv, gw = torch.autograd.grad(v, (s, t)), torch.autograd.grad(w, (s, t))
    for a, b in zip(gv, gw): assert torch.allclose(a.double(), b, atol=1e-6)

def test_pkt_zero_rows_finite():
    s = torch.randn(5, 4); s[0] = 0; s.requires_grad_()
    t = torch.randn(5, 3); t[1:3] = 0
    v = pkt_loss(s, t)
    assert torch.isfinite(v)
    (gs,) = torch.autograd.grad(v, s)
    assert torch.isfinite(gs).all()
    assert torch.isfinite(pkt_loss(torch.zeros(4, 3), torch.zeros(4, 2)))
    assert abs(v.item() - loop_pkt(s.detach(), t).item()) < 1e-6
    p = pkt_probs(torch.zeros(3, 2))
    assert torch.allclose(p, torch.full((3, 3), 1 / 3))

def test_pkt_identical_is_zero_and_per_sample_weights():
    h = torch.randn(7, 4)
    assert pkt_loss(h, h).abs().item() < 1e-7
    s, t = torch.randn(7, 4), torch.randn(7, 3)
    assert torch.allclose(pkt_loss(s, t, weights=torch.full((7,), 2.)), 2 * pkt_loss(s, t))
    w = torch.zeros(7); w[0] = 1
    p, q = pkt_probs(t), pkt_probs(s)
    row0 = (p[0] * torch.log((p[0] + 1e-8) / (q[0] + 1e-8))).sum() / 49
    assert torch.allclose(pkt_loss(s, t, weights=w), row0, atol=1e-8)

# ---------------------------------------------------------------- weights
def test_pair_weights_by_hand():
    w = torch.tensor([[0.2, 0.9, 0.5]]) # text, audio, vision: audio most dispensable
    lam = dict(zip(PAIRS, pair_weights(w)[0].tolist()))
    assert lam[('audio', 'text')] == pytest.approx(0.9) and lam[('audio', 'vision')] == pytest.approx(0.9)
    assert lam[('vision', 'text')] == pytest.approx(0.5)
    assert lam[('text', 'vision')] == lam[('text', 'audio')] == lam[('vision', 'audio')] == 0

def test_tcp_targets():
    lg = torch.tensor([[0., 2.], [1., -1.]]); y = torch.tensor([[1., 1.], [0., 0.]])
    p = torch.sigmoid(lg)
    assert torch.allclose(tcp_target(lg, y, 'multilabel'), torch.tensor([p[0].mean().item(), 0.]))
    assert torch.allclose(tcp_target(lg, y, 'binary_per_class'), torch.tensor([p[0].mean().item(), (1 - p[1]).mean().item()]))
    assert torch.allclose(tcp_target(torch.tensor([[0.5]]), torch.tensor([[1.5]]), 'regression'), torch.tensor([math.exp(-1)]))

def test_ce_confidence_defaults_and_direction():
    lf, ld = torch.randn(4, 3), torch.randn(3, 4, 3)
    code = ce_confidence(lf, ld, direction='code')
    p, q = torch.sigmoid(lf), torch.sigmoid(ld)
    want = -(p * q.log() + (1 - p) * (1 - q).log()).mean(-1).T
    assert torch.allclose(code, want, atol=1e-5)
    assert torch.allclose(ce_confidence(lf, ld), torch.exp(-code), atol=1e-6)

# ---------------------------------------------------------------- masking analysis
def loop_gains(y, pf, pd, criterion):
    lab = lambda r: {c for c, v in enumerate(r) if v > 0.5}
    jac = lambda a, b: 1. if not a and not b else len(a & b) / len(a | b)
    wrong = [i for i in range(len(y)) if lab(pf[i]) != lab(y[i])]
    res = []
    for k in range(3):
        ok = [(jac(lab(pd[k][i]), lab(y[i])) > jac(lab(pf[i]), lab(y[i])) if criterion == 'jaccard'
               else lab(pd[k][i]) == lab(y[i])) for i in wrong]
        res.append(ok)
    return [sum(r) for r in res] + [sum(any(r[j] for r in res) for j in range(len(wrong)))], len(wrong)

@pytest.mark.parametrize('criterion', ['jaccard', 'exact'])
def test_masking_gains_random_vs_loop(criterion):
    rng = np.random.default_rng(0)
    y = (rng.random((60, 4)) > .6).astype(float)
    pf, pd = rng.random((60, 4)), rng.random((3, 60, 4))
    rep = masking_gains(y, pf, pd, criterion=criterion, drop_empty=False)   # every sample, as the loop counts
    counts, n = loop_gains(y.tolist(), pf.tolist(), pd.tolist(), criterion)
    assert rep.table['improved'].tolist() == counts and rep.table['misclassified'].iloc[0] == n
    kept = masking_gains(y, pf, pd, criterion=criterion, drop_empty=True)
    assert kept.table['misclassified'].iloc[0] == sum(1 for i in range(60) if y[i].any() and ((pf[i] > .5) != (y[i] > .5)).any())

def test_fuse_dropped_one_batched_eval_call():
    torch.manual_seed(0)
    m = Toy().train(); b = batches(1)[0]
    out = m(b); m.fuse_log.clear()
    z3, l3 = fuse_dropped(m, out, b)
    assert m.fuse_log == [(24, False)] and m.training and not l3.requires_grad
    with train_mode(m, False), torch.no_grad():
        for k, mod in enumerate(MODALITIES): assert torch.allclose(l3[k], m.fuse(out.parts, drop=mod).logits, atol=1e-6)

# ---------------------------------------------------------------- ConfidNet stage
@pytest.mark.parametrize('epochs', [1, 7])
def test_confidnet_runs_model_once_per_batch(epochs):
    torch.manual_seed(0)
    m = Toy(); before = copy.deepcopy(m.state_dict())
    dls = {'train': batches(3), 'valid': batches(2, seed=1)}
    net, hist = fit_confidnet(m, dls, TASK, epochs=epochs, lr=1e-3, batch_size=8)
    assert m.n_forward == 5 and len(hist) == epochs
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())

def test_confidnet_selects_best_validation_epoch():
    torch.manual_seed(0)
    m = Toy(); dls = {'train': batches(3), 'valid': batches(2, seed=1)}
    cache = {s: cache_fused(m, dls[s], TASK) for s in dls}
    net, hist = fit_confidnet(m, dls, TASK, epochs=30, lr=3e-3, batch_size=8, cache=cache)
    v = cache['valid']; k = v['y'].gt(0).any(-1)
    with torch.no_grad(): mse = torch.nn.functional.mse_loss(net(v['z'][k]), v['target'][k]).item()
    assert mse == pytest.approx(hist['valid_mse'].min(), abs=1e-6)
    with pytest.raises(ValueError, match="validation"): fit_confidnet(m, {'train': dls['train']}, TASK, epochs=1)

def test_confidnet_variants():
    assert sum(isinstance(l, nn.Linear) for l in ConfidNet(5, n_layers=8).net) == 8
    assert sum(isinstance(l, nn.BatchNorm1d) for l in ConfidNet(5).net) == 3

# ---------------------------------------------------------------- the CDaT callback
def test_cdat_term_equals_hand_computation_and_grad_flows():
    torch.manual_seed(0)
    m = Toy().train(); b = batches(1)[0]
    net = ConfidNet(12)
    with torch.no_grad(): net(torch.randn(16, 12)) # moves the BatchNorm running statistics away from their init
    cb = CDaT(alpha=100., confidnet=net)
    net.train() # as the Learner sets a callback's modules during training: the weights must still be eval-mode ones
    pr = Probe(m, b, TASK); cb.after_loss(pr)
    assert net.training
    with train_mode(m, False), train_mode(net, False), torch.no_grad():
        w = torch.stack([net(m.fuse(pr.out.parts, drop=mod).z) for mod in MODALITIES], 1)
    lam = pair_weights(w)
    want = sum(lam[:, k].mean() * pkt_loss(pr.out.h[s], pr.out.h[t].detach()) for k, (s, t) in enumerate(PAIRS))
    assert torch.allclose(pr.loss_parts['cdat'], 100. * want, rtol=1e-5)
    assert m.training
    g = torch.autograd.grad(pr.loss_parts['cdat'], m.enc['text'].weight, allow_unused=True)[0]
    assert g is None or torch.isfinite(g).all()

def test_cdat_parameter_free_naive_fusion_has_zero_gradient():
    "The official Early model, NaiveFusion(encoder='none'): h_m are time-means of raw features, so PKT's gradient is exactly zero"
    torch.manual_seed(0)
    m = NaiveFusion(DIMS, 2, encoder='none'); b = batches(1)[0]
    for kw in [dict(confidence='const'), dict(confidence='ce'), dict(confidence='ce', detach_teacher=False, weighting='sample')]:
        pr = Probe(m, b, TASK); task_loss = TASK.loss(pr.out.logits, b['y'])
        CDaT(alpha=1e7, **kw).after_loss(pr)
        assert pr.loss_parts['cdat'].item() > 0
        ga = torch.autograd.grad(task_loss + pr.loss_parts['cdat'], list(m.parameters()), retain_graph=True)
        gb = torch.autograd.grad(task_loss, list(m.parameters()))
        assert all(torch.equal(x, y) for x, y in zip(ga, gb))

def test_cdat_validation_and_inference_untouched():
    from cdatlib.learner import Learner, MetricsCB
    torch.manual_seed(0)
    m = Toy(); dls = {'train': batches(2), 'valid': batches(2, seed=1)}
    learn = Learner(m, dls, TASK, cbs=[CDaT(confidence='ce'), MetricsCB()], lr=1e-3)
    learn.fit(1)
    assert 'train_loss_cdat' in learn.history[0] and 'valid_loss_cdat' not in learn.history[0]
    m.fuse_log.clear(); learn.evaluate('valid')
    assert [r for r, _ in m.fuse_log] == [8, 8] # the model alone: no masked passes at validation

def test_cdat_bad_options():
    for kw, msg in [(dict(), 'needs confidnet='), (dict(confidence='x'), "'const', 'ce' or 'confidnet'"),
                    (dict(confidence='ce', adjust='max'), 'adjust must be'), (dict(confidence='ce', weights_from='old'), 'weights_from')]:
        with pytest.raises(ValueError, match=msg): CDaT(**kw)

def test_cdat_state_dict_roundtrip():
    net = ConfidNet(12)
    sd = CDaT(confidnet=net).state_dict()
    other = ConfidNet(12); cb = CDaT(confidnet=other); cb.load_state_dict(sd)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))

# ---------------------------------------------------------------- the four course models
def _sample():
    from cdatlib.config import find_data_samples
    from cdatlib.formats import load_dataset
    p = find_data_samples()/'tailor_mosei_aligned.pt'
    if not p.exists(): pytest.skip(f"sample file {p} missing")
    return load_dataset(p)

@pytest.mark.parametrize('name', ['naive', 'tfn', 'misa', 'tailor'])
def test_cdat_on_course_models(name):
    from cdatlib.config import model_class
    data = _sample()
    cls = model_class(name)
    torch.manual_seed(0)
    kw = cls.data_args(data.train.seq_lens, data.task)
    if name == 'tfn': kw.update(hidden={'text': 8, 'audio': 4, 'vision': 4}, out={'text': 8}, post_fusion_dim=16)
    m = cls(data.dims, data.task.n_outputs, **kw)
    if not supports_fuse(m): pytest.skip(f"{name} has no encode/fuse(parts, drop) split yet")
    b = data.train.batch(torch.arange(6))
    log, inner = [], m.fuse
    def fuse(parts, drop=()):
        log.append((len(next(t for t in _leaves(parts))), m.training)); return inner(parts, drop)
    m.fuse = fuse
    m.train(); torch.manual_seed(1)
    pr = Probe(m, b, data.task)
    cdat = CDaT(confidence='ce'); log.clear(); cdat.after_loss(pr)
    assert log == [(6, False), (18, False)] and m.training   # the eval-mode reference, then the 3B masked fusion
    assert torch.isfinite(pr.loss_parts['cdat'])
    (pr.loss + data.task.loss(pr.out.logits, b['y'])).backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the batched masked fusion equals separate masked forward passes
    with train_mode(m, False), torch.no_grad():
        o = m(b); _, l3 = fuse_dropped(m, o, b)
        for k, mod in enumerate(MODALITIES): assert torch.allclose(l3[k], inner(o.parts, drop=mod).logits, atol=1e-5)

def _leaves(x):
    if torch.is_tensor(x): yield x
    elif isinstance(x, dict):
        for v in x.values(): yield from _leaves(v)
    elif isinstance(x, (list, tuple)):
        for v in x: yield from _leaves(v)

# ---------------------------------------------------------------- known corruptions, analysis of a run
def _mosi_test():
    from cdatlib.config import find_data_samples
    from cdatlib.formats import load_dataset
    p = find_data_samples()/'mult_mosi_aligned.pkl'
    if not p.exists(): pytest.skip(f"sample file {p} missing")
    return load_dataset(p).test

@pytest.mark.parametrize('modality,fraction', [('text', 0.1), ('vision', 0.5), ('audio', 1.0)])
def test_corrupt_changes_exactly_that_fraction(modality, fraction):
    from cdatlib.cdat.masking import corrupt
    ds = _mosi_test()
    before = {m: ds.features[m].clone() for m in MODALITIES}
    bad, rec = corrupt(ds, modality, fraction, seed=1)
    changed = (bad.features[modality] != ds.features[modality]).flatten(1).any(1)
    assert int(changed.sum()) == round(fraction * len(ds)) == len(rec['index'])
    assert set(torch.nonzero(changed).flatten().tolist()) == set(rec['index'].tolist())
    assert torch.equal(bad.features[modality][rec['index']], ds.features[modality][rec['source']])
    assert torch.equal(bad.masks[modality][rec['index']], ds.masks[modality][rec['source']])
    for m in MODALITIES:
        assert torch.equal(ds.features[m], before[m]) # the input is not changed
        if m != modality: assert torch.equal(bad.features[m], ds.features[m])
    assert torch.equal(bad.labels, ds.labels) and bad.ids == ds.ids

def test_corrupt_bad_arguments():
    from cdatlib.cdat.masking import corrupt
    ds = _mosi_test()
    with pytest.raises(ValueError, match='fraction'): corrupt(ds, 'text', 1.5)
    with pytest.raises(ValueError, match='at least 2'): corrupt(ds, 'text', 1 / len(ds))
    assert len(corrupt(ds, 'text', 0.)[1]['index']) == 0

def test_analyze_masking_of_a_run(tmp_path):
    from cdatlib.config import TrainConfig
    from cdatlib.run import train, analyze_masking
    cfg = TrainConfig(model='naive', epochs=1, device='cpu', out_dir=str(tmp_path), seeds=[0])
    train(cfg, log=lambda *a: None, progress=False)
    rep = analyze_masking(cfg.run_dir(0), 'valid')['naive']
    assert list(rep.table.index) == [*MODALITIES, 'any'] and rep.preds['dropped'].shape[0] == 3

def test_misalignment_auroc_by_hand():
    from cdatlib.cdat.confidence import misalignment_auroc
    w = [[.9, .1, .2], [.3, .2, .8], [.5, .5, .5]]
    assert misalignment_auroc(w, [0, 2, -1]) == 1.
    # over all samples: the clean sample's .5 weights outrank the corrupted pairs' clean .1-.3 but not .8/.9
    assert misalignment_auroc(w, [0, 2, -1], samples='all') == 1.
    assert misalignment_auroc(w, [1, 1, -1]) == pytest.approx(0.5 / 8) # one tie (.2 vs .2) among 8 pairs

def test_cdat_run_resume_reuses_confidnet(tmp_path):
    "A finished CDaT run resumed: its ConfidNet is the saved one (ConfidNet's own file format), nothing is retrained"
    from cdatlib.config import TrainConfig
    from cdatlib.run import train
    from cdatlib.cdat.confidence import load_confidnet
    cfg = TrainConfig(method='cdat', confidence='confidnet', epochs=1, batch_size=64, device='cpu', out_dir=str(tmp_path),
                      model_args=dict(hidden=8, head_hidden=8), confidnet_args=dict(epochs=2, lr=1e-3))
    quiet = lambda *a: None
    first = train(cfg, log=quiet, warn=quiet, progress=False)
    top = cfg.run_dir(0)
    assert (top/'confidnet'/'confidnet.pt').exists() and (top/'cdat'/'best.pt').exists()
    net = load_confidnet(top/'confidnet'/'confidnet.pt')
    before = {p: p.stat().st_mtime_ns for p in top.rglob('*.pt')}
    again = train(cfg, resume=True, log=quiet, warn=quiet, progress=False)
    assert {p: p.stat().st_mtime_ns for p in top.rglob('*.pt')} == before # nothing written again
    assert again.per_seed.to_dict() == first.per_seed.to_dict()
    z = torch.randn(5, net.net[0].in_features)
    assert torch.equal(load_confidnet(top/'confidnet'/'confidnet.pt')(z), net(z))

# ---------------------------------------------------------------- bounded confidences, non-negative CDaT term
@pytest.mark.parametrize('bias', [-10., 10.])
def test_confidnet_output_in_unit_interval_when_forced(bias):
    net = ConfidNet(12).eval() # default output: sigmoid
    with torch.no_grad():
        net.net[-1].bias.fill_(bias); c = net(torch.randn(64, 12) * 5)
    assert ((c >= 0) & (c <= 1)).all()
    lin = ConfidNet(12, output='linear').eval()
    with torch.no_grad(): lin.net[-1].bias.fill_(bias); cl = lin(torch.randn(64, 12))
    assert ((cl < 0) if bias < 0 else (cl > 1)).any() # the official linear head is not bounded: the test can fail

def test_trained_confidnet_output_in_unit_interval():
    torch.manual_seed(0)
    m = Toy(); dls = {'train': batches(3), 'valid': batches(2, seed=1)}
    net, _ = fit_confidnet(m, dls, TASK, epochs=5, lr=3e-2, batch_size=8)
    with torch.no_grad(): c = net(torch.randn(256, 12) * 10)
    assert ((c >= 0) & (c <= 1)).all()

def test_confidnet_output_options_and_old_spelling():
    assert ConfidNet(5).output == 'sigmoid' and ConfidNet(5, sigmoid=False).output == 'linear'
    assert ConfidNet(5, output='linear').sigmoid is False and ConfidNet(5, sigmoid=True, output='linear').output == 'sigmoid'
    with pytest.raises(ValueError, match='output must be one of'): ConfidNet(5, output='relu')
    torch.manual_seed(0)
    net, _ = fit_confidnet(Toy(), {'train': batches(2), 'valid': batches(1, seed=1)}, TASK, epochs=1, output='linear')
    assert net.output == 'linear'

@pytest.mark.parametrize('adjust', ['ratio', 'threshold', 'difference', 'none'])
def test_pair_weights_never_negative(adjust):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(500, 3, generator=g) * 2 # confidences of either sign, as a linear ConfidNet gives
    assert (pair_weights(w, adjust) >= 0).all()
    assert torch.equal(pair_weights(w, adjust), pair_weights(w.clamp_min(0), adjust)) # negative reads as 0

@pytest.mark.parametrize('weighting', ['batch', 'sample'])
def test_dckt_loss_non_negative_on_random_inputs(weighting):
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        h = {m: torch.randn(8, d, generator=g) for m, d in DIMS.items()}
        loss, terms = dckt_loss(h, pair_weights(torch.randn(8, 3, generator=g)), weighting)
        assert loss.item() >= -1e-6 and (terms >= -1e-6).all()

def test_confidnet_one_host_read_per_epoch(monkeypatch):
    "The training loop reads its losses from the device once per epoch, not once per mini-batch"
    torch.manual_seed(0)
    m = Toy(); dls = {'train': batches(4), 'valid': batches(1, seed=1)}
    cache = {s: cache_fused(m, dls[s], TASK) for s in dls}
    calls = {'item': 0, 'tolist': 0}
    item, tolist = torch.Tensor.item, torch.Tensor.tolist
    def count(name, f): # only reads made by fit_confidnet itself (Adam reads its CPU step counters with .item())
        def g(self, *a):
            if sys._getframe(1).f_code.co_filename.endswith(os.path.join('cdat', 'confidence.py')): calls[name] += 1
            return f(self, *a)
        return g
    monkeypatch.setattr(torch.Tensor, 'item', count('item', item))
    monkeypatch.setattr(torch.Tensor, 'tolist', count('tolist', tolist))
    _, hist = fit_confidnet(m, dls, TASK, epochs=3, lr=1e-3, batch_size=4, cache=cache) # 8 steps per epoch
    assert calls['item'] + calls['tolist'] <= 3 and len(hist) == 3


# ---------------------------------------------------------------- review fixes: drop_empty, layout alias, ConfidNet file

def test_masking_gains_drop_empty_is_a_no_op_for_regression():
    "A sentiment value has no label set: drop_empty must not drop the negative samples"
    y, pf = np.array([1.2, -0.4, -2.0]), np.array([-0.1, 0.3, -1.0])
    pd_ = np.array([[0.3, -1., -1.], [-0.2, 0.5, 1.], [-0.5, -2., 2.]])
    kept = masking_gains(y, pf, pd_, kind='regression')
    dropped = masking_gains(y, pf, pd_, kind='regression', drop_empty=True)
    assert dropped.kept.all() and dropped.table.equals(kept.table)
    assert dropped.table.loc['any', 'misclassified'] == 2            # samples 0 and 1 have the wrong polarity
    # on a label set it still drops the empty rows
    yl = np.array([[1, 0], [0, 0]]); pl = np.array([[0., 1.], [1., 0.]])
    assert masking_gains(yl, pl, [pl] * 3, drop_empty=True).kept.tolist() == [True, False]
    assert masking_gains(yl, pl, [pl] * 3, kind='binary_per_class', drop_empty=True).kept.tolist() == [True, False]

def test_load_run_resolves_the_layout_alias(tmp_path, monkeypatch):
    "load_run reads the run's data with the layout resolved as `cdat train` does ('npz' -> 'utterance')"
    import cdatlib.run
    from cdatlib.config import TrainConfig, save_config
    from cdatlib.run import analyze_masking
    sample = os.path.join(os.path.dirname(__file__), '..', 'data_samples', 'tailor_mosei_aligned.pt')
    save_config(TrainConfig(data=sample, layout='npz'), tmp_path/'config.json')
    (tmp_path/'best.pt').write_bytes(b'')
    seen = []
    def fake_load(path, layout=None, **kw): seen.append(layout); raise RuntimeError('stop here')
    monkeypatch.setattr(cdatlib.run, 'load_dataset', fake_load)
    with pytest.raises(RuntimeError, match='stop here'): analyze_masking(tmp_path)
    assert seen == ['utterance']

def test_confidnet_file_records_the_net_not_the_arguments(tmp_path):
    "save_confidnet reads n_layers, widths, dropout and output off the net: load_confidnet rebuilds it exactly"
    from cdatlib.cdat.confidence import save_confidnet, load_confidnet, confidnet_arch
    torch.manual_seed(0)
    for kw in [dict(output='linear'), dict(n_layers=2, hidden=5, dropout=0.2, sigmoid=False), dict(n_layers=1), dict()]:
        net = ConfidNet(6, **kw).eval()
        save_confidnet(net, tmp_path/'c.pt', arch={'sigmoid': True, 'n_layers': 9})   # stale user arguments lose
        back = load_confidnet(tmp_path/'c.pt')
        z = torch.randn(5, 6) * 5
        assert back.output == net.output and confidnet_arch(back) == confidnet_arch(net), kw
        assert torch.equal(back(z), net(z)), kw
