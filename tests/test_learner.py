"""Learner tests that need real processes: SIGKILL-and-resume gives bit-identical results; a non-finite loss stops
the run naming epoch and batch and leaves the last good checkpoint untouched. Tiny data, CPU, a few seconds."""
import json, os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch

# One training script, run in child processes. Modes:
#   full    train N_EPOCHS epochs without interruption
#   kill    same, but SIGKILL itself right after epoch KILL_AT's checkpoint is written
#   resume  continue from last.pt up to N_EPOCHS
#   nan     the loss becomes NaN at (epoch 2, batch 1); a copy of last.pt is taken after epoch 1
SCRIPT = textwrap.dedent('''
    import json, os, shutil, signal, sys
    from pathlib import Path
    import torch
    from torch import nn
    from cdatlib.dataset import Task, MultimodalDataset, MultimodalData
    from cdatlib.models.core import FusionModel, FusionOutput
    from cdatlib.learner import *
    from cdatlib.callbacks import *

    mode, run, loader, kill_at, n_epochs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)

    def split(n, seed):
        g = torch.Generator().manual_seed(seed)
        f = {'text': torch.randn(n, 5, 6, generator=g), 'audio': torch.randn(n, 4, 3, generator=g),
             'vision': torch.randn(n, 3, 4, generator=g)}
        y = (f['text'].mean((1, 2)) + f['audio'][:, 0, 0])[:, None]
        return MultimodalDataset(f, y, Task('regression', ('sentiment',), 'toy'))
    data = MultimodalData({'train': split(70, 1), 'valid': split(30, 2), 'test': split(30, 3)})

    class Tiny(FusionModel):
        def __init__(self, dims, n_outputs):
            super().__init__(dims, n_outputs)
            self.enc = nn.ModuleDict({m: nn.Linear(d, 8) for m, d in dims.items()})
            self.drop = nn.Dropout(0.3) # uses the RNG during training: resuming must restore it
            self.head = nn.Linear(24, n_outputs)
        def forward(self, batch, drop=()):
            h = {m: torch.relu(self.enc[m](batch[m].mean(1))) * (m not in drop) for m in self.enc}
            z = self.drop(torch.cat(list(h.values()), -1))
            return FusionOutput(h=h, z=z, logits=self.head(z), aux_losses={'l2': 1e-3 * z.pow(2).mean()})

    class KillCB(Callback):
        order = 10_000 # after CheckpointCB wrote last.pt
        def after_epoch(self, learn):
            if learn.epoch == kill_at: os.kill(os.getpid(), signal.SIGKILL)

    class NanCB(Callback):
        def after_loss(self, learn):
            if learn.training and (learn.epoch, learn.iter) == (2, 1): learn.add_loss('bad', torch.tensor(float('nan')))

    class CopyLastCB(Callback):
        order = 10_000
        def after_epoch(self, learn):
            if learn.epoch == 1: shutil.copyfile(run/'last.pt', run/'last_after_epoch1.pt')

    set_seed(0)
    dls = data.dataloaders(batch_size=16, seed=0) if loader == 'dataloader' else dataloaders(data, 16, device='cpu')
    cbs = [DeviceCB('cpu'), MetricsCB(), ProgressCB(show=False), WarmupLinearCB(0.2), GradClipCB(1.0),
           NonFiniteLossCB(), CSVLoggerCB(), CheckpointCB(restore_best=False)]
    cbs += {'kill': [KillCB()], 'nan': [NanCB(), CopyLastCB()]}.get(mode, [])
    learn = Learner(Tiny(data.dims, 1), dls, data.task, lr=1e-2, cbs=cbs, path=run, config={'mode': mode})
    learn.fit(n_epochs, cbs=[ResumeCB(run/'last.pt')] if mode == 'resume' else [])
    torch.save(learn.model.state_dict(), run/'final_weights.pt')
    res = {'history': [{k: v for k, v in r.items() if k != 'time'} for r in learn.history],
           'valid': learn.evaluate('valid'), 'best_epoch': learn.best_epoch}
    (run/'result.json').write_text(json.dumps(res))
''')

N_EPOCHS, KILL_AT = 5, 2

def run_script(tmp_path, mode, run, loader='dataloader', kill_at=-1, n_epochs=N_EPOCHS):
    script = tmp_path/'train.py'
    if not script.exists(): script.write_text(SCRIPT)
    env = {**os.environ, 'PYTHONHASHSEED': '0'}
    return subprocess.run([sys.executable, str(script), mode, str(run), loader, str(kill_at), str(n_epochs)],
                          capture_output=True, text=True, env=env, timeout=120)

def run_in_process(tmp_path, mode, run, loader='dataloader', kill_at=-1, n_epochs=N_EPOCHS):
    "The same script in this process (saves one interpreter start-up; the results must still match bit for bit)"
    import runpy
    script = tmp_path/'train.py'
    if not script.exists(): script.write_text(SCRIPT)
    argv, nthreads = sys.argv, torch.get_num_threads()
    sys.argv = [str(script), mode, str(run), loader, str(kill_at), str(n_epochs)]
    try: runpy.run_path(str(script), run_name='__main__')
    finally: sys.argv = argv; torch.set_num_threads(nthreads)

def ok(p):
    assert p.returncode == 0, p.stderr[-3000:]
    return p

@pytest.mark.parametrize('loader', ['dataloader', 'device'])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, loader):
    full, cut = tmp_path/'full', tmp_path/'cut'
    run_in_process(tmp_path, 'full', full, loader)
    p = run_script(tmp_path, 'kill', cut, loader, kill_at=KILL_AT)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert not (cut/'final_weights.pt').exists()
    from cdatlib.callbacks import load_checkpoint
    assert load_checkpoint(cut/'last.pt')['epoch'] == KILL_AT
    ok(run_script(tmp_path, 'resume', cut, loader))

    w_full, w_cut = torch.load(full/'final_weights.pt'), torch.load(cut/'final_weights.pt')
    assert list(w_full) == list(w_cut)
    for k in w_full: assert torch.equal(w_full[k], w_cut[k]), k
    r_full, r_cut = json.loads((full/'result.json').read_text()), json.loads((cut/'result.json').read_text())
    assert r_cut == r_full  # per-epoch history (every metric, loss part and lr), best epoch, final valid metrics
    assert len(r_full['history']) == N_EPOCHS
    # the CSV log of the resumed run has each epoch once, equal to the uninterrupted one apart from timings
    import pandas as pd
    a, b = pd.read_csv(full/'log.csv').drop(columns='time'), pd.read_csv(cut/'log.csv').drop(columns='time')
    pd.testing.assert_frame_equal(a, b)
    # the best checkpoints agree too
    assert load_checkpoint(full/'best.pt')['epoch'] == load_checkpoint(cut/'best.pt')['epoch']

def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path/'nan'
    p = run_script(tmp_path, 'nan', run)
    assert p.returncode != 0
    assert 'NonFiniteLossError' in p.stderr
    assert 'non-finite loss (nan) at epoch 2, batch 1 (train pass' in p.stderr, p.stderr[-2000:]
    assert (run/'last.pt').read_bytes() == (run/'last_after_epoch1.pt').read_bytes()
    assert sorted(f.name for f in run.iterdir()) == ['best.pt', 'last.pt', 'last_after_epoch1.pt', 'log.csv']
    from cdatlib.callbacks import load_checkpoint
    ck = load_checkpoint(run/'last.pt')
    assert ck['epoch'] == 1 and len(ck['history']) == 2
    assert all(torch.isfinite(v).all() for v in ck['model'].values())
    import pandas as pd
    assert list(pd.read_csv(run/'log.csv').epoch) == [0, 1]   # the failed epoch is not logged


# ---- in-process tests of the debugging tools: SingleBatchCB, lr_find, ActivationStatsCB ----
from torch import nn
from cdatlib.dataset import Task, MultimodalDataset, MultimodalData, masks_from_padding
from cdatlib.models.core import FusionModel, FusionOutput
from cdatlib import learner as L, callbacks as C


def _toy_data(n=40, seed=0):
    def split(n, seed):
        g = torch.Generator().manual_seed(seed)
        f = {'text': torch.randn(n, 5, 6, generator=g), 'audio': torch.randn(n, 4, 3, generator=g),
             'vision': torch.randn(n, 3, 4, generator=g)}
        f['text'][: n // 2, 3:] = 0 # padding: the first half has 3 real text steps of 5
        y = (f['text'][:, :3].mean((1, 2)) + f['audio'][:, 0, 0])[:, None]
        return MultimodalDataset(f, y, Task('regression', ('sentiment',), 'toy'), masks={'text': masks_from_padding(f['text'])})
    return MultimodalData({'train': split(n, seed + 1), 'valid': split(20, seed + 2), 'test': split(20, seed + 3)})


class SeqToy(FusionModel):
    "text stays a sequence (with its mask as `h_masks`), audio and vision become vectors"
    def __init__(self, dims, n_outputs):
        super().__init__(dims, n_outputs)
        self.enc = nn.ModuleDict({m: nn.Linear(d, 4) for m, d in dims.items()})
        self.head = nn.Linear(12, n_outputs)
    def forward(self, batch, drop=()):
        h = {'text': self.enc['text'](batch['text']),
             'audio': self.enc['audio'](batch['audio'].mean(1)), 'vision': self.enc['vision'](batch['vision'].mean(1))}
        m = batch['text_mask'].unsqueeze(-1).float()
        text = (h['text'] * m).sum(1) / m.sum(1).clamp(min=1)
        z = torch.cat([text, h['audio'], h['vision']], -1)
        return FusionOutput(h=h, z=z, logits=self.head(z), h_masks={'text': batch['text_mask']})


def _learner(data, cbs=(), **kw):
    torch.manual_seed(0)
    return L.Learner(SeqToy(data.dims, 1), data.dataloaders(batch_size=8, seed=0), data.task,
                     cbs=[L.ProgressCB(show=False), *cbs], **kw)


def _weights(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_single_batch_cb_runs_one_training_batch():
    data = _toy_data()
    n = {'train': 0, 'valid': 0}
    class Count(L.Callback):
        def after_batch(self, learn): n[learn.split] += 1
    learn = _learner(data, [L.SingleBatchCB(), Count()])
    before = _weights(learn.model)
    learn.fit(3)
    assert n == {'train': 1, 'valid': 0}
    assert learn.history == []
    assert learn.out.logits.shape == (8, 1)
    assert not all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items()) # one step was taken


def test_lr_find_has_no_side_effect(tmp_path):
    data = _toy_data()
    l2 = C.L2Penalty() # an add-on with parameters of its own: they must come back too
    learn = _learner(data, [C.CheckpointCB(), C.CSVLoggerCB(), l2], path=tmp_path)
    before, scale, rng = _weights(learn.model), l2.logits.detach().clone(), torch.get_rng_state()
    cbs = list(learn.cbs)
    lrs, losses = finder = C.lr_find(learn, n_iter=30)
    assert len(lrs) == len(losses) and 2 < len(lrs) <= 30
    ratios = torch.tensor(lrs[1:]) / torch.tensor(lrs[:-1])
    assert torch.allclose(ratios, ratios[0].expand_as(ratios)) and ratios[0] > 1 # exponential growth
    assert lrs[0] == pytest.approx(1e-7)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(l2.logits.detach(), scale)
    assert torch.equal(torch.get_rng_state(), rng)
    assert list(tmp_path.iterdir()) == [] # neither checkpoints nor a CSV log
    assert learn.opt is None and learn.history == []
    assert learn.cbs == cbs and finder not in learn.cbs # the Learner's own callbacks are back
    # and the next fit is the one it would have been without the finder
    learn.fit(2)
    ref = _learner(data, [C.CheckpointCB(), C.CSVLoggerCB(), C.L2Penalty()], path=tmp_path/'ref')
    ref.fit(2)
    assert [h['valid_mae'] for h in learn.history] == [h['valid_mae'] for h in ref.history]


def test_lr_find_stops_on_divergence_and_on_nan():
    data = _toy_data()
    class Explode(L.Callback): # a loss that grows 10x per training step from step 5 on
        order = 40
        def before_fit(self, learn): self.step = 0
        def after_loss(self, learn):
            if not learn.training: return
            if self.step >= 5: learn.add_loss('boom', torch.tensor(10. ** (self.step - 4)))
            self.step += 1
    assert len(C.lr_find(_learner(data, [Explode()]), n_iter=100).lrs) < 10
    class Nan(L.Callback):
        def after_loss(self, learn):
            if learn.training and learn.iter == 2: learn.add_loss('bad', torch.tensor(float('nan')))
    learn = _learner(data, [Nan(), C.NonFiniteLossCB()])
    before = _weights(learn.model)
    assert len(C.lr_find(learn, n_iter=100).lrs) == 3 # stopped by the finder, before NonFiniteLossCB raised
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())


def test_activation_stats_match_hand_computation():
    data = _toy_data()
    stats = C.ActivationStatsCB()
    learn = _learner(data, [stats, L.SingleBatchCB()])
    learn.fit(1)
    b, out = learn.batch, learn.out
    mask = b['text_mask']
    assert not mask.all() # the batch has padding, so pooling over real steps matters
    real = torch.cat([out.h['text'][i, mask[i]] for i in range(len(mask))]).flatten()
    assert stats.stds['text'] == [pytest.approx(real.std().item(), rel=1e-5)]
    assert stats.stds['text'][0] != pytest.approx(out.h['text'].std().item(), rel=1e-3) # padding would change it
    assert stats.stds['audio'] == [pytest.approx(out.h['audio'].flatten().std().item(), rel=1e-5)]
    full = _learner(data, [stats2 := C.ActivationStatsCB()])
    full.fit(2)
    assert {m: len(s) for m, s in stats2.stds.items()} == {m: 2 * len(full.dls['train']) for m in ('text', 'audio', 'vision')}


# ---- one fit, resuming as a callback, state per callback instance, one set of defaults, one folder per run ----

def test_importing_callbacks_changes_nothing_in_the_learner():
    "Chapter 09 neither patches nor replaces chapter 08's Learner: `fit` is defined once, with `cbs` for a resume"
    code = textwrap.dedent('''
        import sys, inspect
        import cdatlib, cdatlib.learner as L
        assert 'cdatlib.callbacks' not in sys.modules, 'importing cdatlib imported cdatlib.callbacks'
        before = dict(vars(L.Learner))
        import cdatlib.callbacks
        after = dict(vars(L.Learner))
        assert after == before, sorted(set(after) ^ set(before)) or [k for k in after if after[k] is not before[k]]
        assert list(inspect.signature(L.Learner.fit).parameters) == ['self', 'n_epochs', 'cbs']
    ''')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, p.stderr[-2000:]


def test_two_callbacks_of_one_class_keep_their_own_state(tmp_path):
    "Each callback's state is saved under `learn.cb_key(cb)`: two EarlyStoppingCBs on different metrics get their own back"
    data = _toy_data()
    def make():
        es = [C.EarlyStoppingCB(patience=100), C.EarlyStoppingCB(patience=100, monitor='loss', mode='min')]
        learn = _learner(data, [*es, C.L2Penalty(weight=0.5), C.CheckpointCB(restore_best=False)], path=tmp_path, lr=3e-2)
        return learn, es
    learn, (a, b) = make()
    learn.fit(4)
    assert (a.monitor, b.monitor) == ('mae', 'loss') and a.best != b.best   # the loss includes the L2 term
    ck = C.load_checkpoint(tmp_path/'last.pt')
    assert ck['cbs']['EarlyStoppingCB#0'] == a.state_dict() and ck['cbs']['EarlyStoppingCB#1'] == b.state_dict()
    fresh, (a2, b2) = make()
    fresh.fit(4, cbs=[C.ResumeCB(tmp_path/'last.pt')])   # the run is finished: nothing trains, its state comes back
    assert fresh.history == learn.history
    assert (a2.best, a2.wait, a2.stop) == (a.best, a.wait, a.stop)
    assert (b2.best, b2.wait, b2.stop) == (b.best, b.wait, b.stop)
    # a checkpoint of an older cdatlib keyed the state by class name: still read, by both
    old = {**ck, 'cbs': {'EarlyStoppingCB': b.state_dict()}}
    third, (a3, b3) = make()
    C.restore_learner(third, old)
    assert a3.best == b3.best == b.best


def test_resume_refuses_another_number_of_epochs(tmp_path):
    data = _toy_data()
    _learner(data, [C.CheckpointCB()], path=tmp_path).fit(2)
    with pytest.raises(C.CheckpointError, match='written for a run of 2 epochs, not 3'):
        _learner(data, [C.CheckpointCB()], path=tmp_path).fit(3, cbs=[C.ResumeCB(tmp_path/'last.pt')])


def test_build_learner_defaults_are_train_configs():
    import inspect
    from cdatlib.config import TrainConfig
    cfg, params = TrainConfig(), inspect.signature(C.build_learner).parameters
    names = dict(batch_size='batch_size', lr='lr', wd='weight_decay', warmup='warmup', clip='grad_clip', patience='patience')
    assert {k: params[k].default for k in names} == {k: getattr(cfg, v) for k, v in names.items()}


def test_a_fresh_fit_does_not_overwrite_another_fits_checkpoints(tmp_path):
    import re
    data = _toy_data()
    make = lambda **kw: _learner(data, [C.CheckpointCB(**kw)], path=tmp_path)
    first = make().fit(2)
    files = lambda: {n: (tmp_path/n).read_bytes() for n in ('best.pt', 'last.pt')}
    before = files()
    with pytest.raises(C.CheckpointError, match=re.escape(f"{tmp_path}: already holds best.pt, last.pt of another fit")) as e:
        make().fit(2)
    assert 'overwrite=True' in str(e.value) and 'ResumeCB' in str(e.value) and '\n' not in str(e.value)
    assert files() == before                             # nothing was replaced
    first.fit(3)                                         # the same Learner again (fine-tuning): its own files
    assert C.load_checkpoint(tmp_path/'last.pt')['n_epochs'] == 3
    make(overwrite=True).fit(1)                          # asked for
    assert C.load_checkpoint(tmp_path/'last.pt')['n_epochs'] == 1


def test_build_learner_without_a_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _toy_data()
    build = lambda **kw: C.build_learner(SeqToy(data.dims, 1), data, lr=1e-2, batch_size=8, device='cpu', progress=False, **kw)
    torch.manual_seed(0)
    learn = build().fit(3)
    assert learn.path is None and list(tmp_path.iterdir()) == []   # no runs/ folder, no log
    best = min(h['valid_mae'] for h in learn.history)
    assert learn.best_score == best and learn.evaluate('valid')['mae'] == pytest.approx(best, abs=1e-5)
    build(path='run').fit(1)
    assert sorted(p.name for p in (tmp_path/'run').iterdir()) == ['best.pt', 'last.pt', 'log.csv']
    with pytest.raises(C.CheckpointError, match='run: already holds'): build(path='run').fit(1)
    build(path='run', overwrite=True).fit(1)
