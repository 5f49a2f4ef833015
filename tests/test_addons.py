"""Add-ons: callbacks that own parameters are optimised, moved, saved and restored; `MetricsCB` takes a metric function;
`Learner.get_preds`; add-ons attached by name from `cdat train --with`, with `--with-arg` and `--init-from`. The toy
add-on `l2` (`cdatlib.callbacks.L2Penalty`) proves the whole path: its parameter trains, its loss term is logged, and a
killed run resumes to identical weights."""
import json, os, signal, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
import torch
from torch import nn

from cdatlib.cli import main
from cdatlib.learner import Callback, Learner, MetricsCB, LOSS_TERM_ORDER, LOSS_TERM_BAND
from cdatlib.callbacks import (CheckpointCB, WarmupLinearCB, GradClipCB, L2Penalty, NonFiniteLossCB, NonFiniteLossError,
                                load_checkpoint, set_seed, restore_learner, ResumeCB)
from cdatlib.formats import load_dataset
from cli_helpers import one_thread, cdat_main, cdat_proc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT/'data_samples'/'tailor_mosei_aligned.pt'
L2RUN = 'naive+l2-tailor_mosei_aligned'
TINY = ['train', '--epochs', '3', '--batch-size', '32', '--quiet']

@pytest.fixture(scope='module')
def data(): return load_dataset(SAMPLE)

def one_error(rc, err, needle):
    assert 'Traceback' not in err, err
    errors = [l for l in err.splitlines() if l.startswith('cdat: error:')]
    assert len(errors) == 1 and needle in errors[0], err
    assert rc == 2

class Toy(nn.Module):
    "A fusion-like model: time-means, one Linear; `drop` zeroes modalities"
    def __init__(self, dims, n_out):
        super().__init__(); self.lin = nn.Linear(sum(dims.values()), n_out)
    def forward(self, batch, drop=()):
        from cdatlib.models.core import FusionOutput
        h = {m: batch[m].mean(1) * (m not in drop) for m in ('text', 'audio', 'vision')}
        z = torch.cat(list(h.values()), -1)
        return FusionOutput(h=h, z=z, logits=self.lin(z), aux_losses={})

class HeadCB(Callback):
    "An add-on with a module of its own: a second head on z, trained by an extra loss term"
    order = LOSS_TERM_ORDER
    def __init__(self, dz, n_out): self.head = nn.Sequential(nn.Linear(dz, 4), nn.Dropout(0.5), nn.Linear(4, n_out))
    def after_loss(self, learn):
        learn.add_loss('head', learn.task.loss(self.head(learn.out.z), learn.batch['y']))

def make(data, path, cbs=(), **kw):
    set_seed(0)
    dz = sum(data.dims.values())
    return Learner(Toy(data.dims, data.task.n_outputs), data.dataloaders(batch_size=32, seed=0), data.task, lr=1e-2,
                   path=path, cbs=[WarmupLinearCB(), GradClipCB(1.0), CheckpointCB(restore_best=False),
                                   HeadCB(dz, data.task.n_outputs), *cbs], **kw)

def head_of(learn): return next(cb for cb in learn.cbs if isinstance(cb, HeadCB)).head

# ---------------------------------------------------------------- the Learner's hooks

def test_callback_parameters_are_optimised_saved_and_restored(data, tmp_path):
    learn = make(data, tmp_path)
    before = {k: v.clone() for k, v in head_of(learn).state_dict().items()}
    learn.fit(2)
    head = head_of(learn)
    assert any(not torch.equal(before[k], v) for k, v in head.state_dict().items()), 'the head trained'
    assert [g.get('name') for g in learn.opt.param_groups] == [None, None, 'HeadCB', 'HeadCB']
    assert 'train_loss_head' in learn.history[-1] and 'valid_loss_head' in learn.history[-1]
    ck = load_checkpoint(tmp_path/'last.pt')
    saved = ck['cb_params']['HeadCB']
    assert len(saved) == 4 and all(torch.equal(a, b) for a, b in zip(saved, head.parameters()))
    fresh = make(data, tmp_path)                 # another head, restored from the checkpoint
    fresh.opt = fresh.opt_func(fresh.param_groups(), fresh.lr)
    restore_learner(fresh, ck)
    assert all(torch.equal(a, b) for a, b in zip(head_of(fresh).parameters(), head.parameters()))

def test_callback_modules_follow_train_and_eval(data, tmp_path):
    modes = []
    class Spy(Callback):
        order = 60
        def after_batch(self, learn): modes.append((learn.split, head_of(learn).training))
    make(data, tmp_path, cbs=[Spy()]).fit(1)
    assert {m for m in modes} == {('train', True), ('valid', False)}

def test_resume_is_bit_exact_with_an_addon(data, tmp_path):
    class Interrupt(Exception): pass
    class StopAfter(Callback):
        order = 1000
        def after_epoch(self, learn):
            if learn.epoch == 1: raise Interrupt()
    full = make(data, tmp_path/'full').fit(4)
    with pytest.raises(Interrupt): make(data, tmp_path/'cut').fit(4, cbs=[StopAfter()])
    resumed = make(data, tmp_path/'cut').fit(4, cbs=[ResumeCB(tmp_path/'cut'/'last.pt')])
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()): assert torch.equal(a, b), k
    for a, b in zip(head_of(full).parameters(), head_of(resumed).parameters()): assert torch.equal(a, b)

def test_a_nonfinite_addon_term_is_caught(data, tmp_path):
    class NanTerm(Callback):
        order = LOSS_TERM_ORDER
        def after_loss(self, learn): learn.add_loss('bad', torch.tensor(float('nan')))
    learn = make(data, tmp_path, cbs=[NanTerm(), NonFiniteLossCB()])
    with pytest.raises(NonFiniteLossError, match='bad=nan'): learn.fit(1)
    assert LOSS_TERM_ORDER in LOSS_TERM_BAND and max(LOSS_TERM_BAND) < CheckpointCB.order < NonFiniteLossCB.order

def test_metrics_cb_metric_func_and_loss_only(data, tmp_path):
    class Other(nn.Module):   # a stage whose output is not one logit per class (a ConfidNet-like confidence)
        def __init__(self): super().__init__(); self.lin = nn.Linear(sum(data.dims.values()), 1)
        def forward(self, batch):
            from cdatlib.models.core import FusionOutput
            z = torch.cat([batch[m].mean(1) for m in ('text', 'audio', 'vision')], -1)
            return FusionOutput(h={}, z=z, logits=self.lin(z), aux_losses={})
    conf_loss = lambda logits, y: (torch.sigmoid(logits) - y.mean(1, keepdim=True)).pow(2).mean()
    learn = Learner(Other(), data.dataloaders(batch_size=32), data.task, loss_func=conf_loss, cbs=[MetricsCB()])
    learn.fit(1)   # 8b280ff: shape error in task_metrics
    assert set(learn.history[0]) == {'epoch', 'train_loss', 'valid_loss', 'lr', 'time'}
    learn = Learner(Other(), data.dataloaders(batch_size=32), data.task, loss_func=conf_loss,
                    cbs=[MetricsCB(lambda logits, y: {'mean_conf': torch.sigmoid(logits).mean().item()})])
    learn.fit(1)
    assert 0 < learn.history[0]['valid_mean_conf'] < 1

def test_get_preds(data, tmp_path):
    learn = make(data, tmp_path).fit(1)
    p, y, ids = learn.get_preds('test')
    assert p.shape == y.shape == (len(data.test), data.task.n_outputs)
    assert ids == data.test.ids and ((p >= 0) & (p <= 1)).all()   # probabilities for the emotion task
    assert torch.equal(y, data.test.labels)
    p2, _, _ = learn.get_preds('test', drop=('text', 'audio', 'vision'))
    assert torch.allclose(p2, torch.sigmoid(learn.model.lin.bias).expand_as(p2))   # everything dropped: the bias alone
    learn.model.train()
    learn.get_preds('valid')
    assert learn.model.training   # put back in the mode it was in

# ---------------------------------------------------------------- add-ons by name, from the command line

L2 = ['--with', 'l2', '--with-arg', 'l2.weight=0.05']

def test_l2_addon_from_the_command_line(tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, *L2, '--out-dir', str(tmp_path))
    assert rc == 0, err
    d = tmp_path/L2RUN/'seed-0'
    assert json.loads((d/'config.json').read_text())['addons'] == {'l2': {'weight': 0.05}}
    log = pd.read_csv(d/'log.csv')
    assert {'train_loss_l2', 'valid_loss_l2', 'train_loss_task'} <= set(log.columns)   # the term is logged
    assert (log.train_loss_l2 != 0).all()
    scale = load_checkpoint(d/'last.pt')['cb_params']['L2Penalty'][0]
    assert scale.shape == (3,) and not torch.equal(scale, torch.zeros(3))               # its parameter trained

@pytest.mark.parametrize('args,needle', [
    (['--with', 'l3'], "addons: unknown add-on 'l3'; choose one of l2"),
    (['--with', 'l2', '--with-arg', 'l2.wieght=1'], "addons.l2: unknown argument(s) ['wieght']"),
    (['--with-arg', 'l2.weight=1'], "the add-on 'l2' is not attached; add --with l2"),
    (['--with', 'l2', '--with-arg', 'weight=1'], "--with-arg: expected NAME.KEY=VALUE"),
    (['--init-from', '/nowhere/run/seed-0'], "init_from: /nowhere/run/seed-0/best.pt does not exist"),
])
def test_bad_addon_arguments_are_one_line(args, needle, tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, *args, '--out-dir', str(tmp_path))
    one_error(rc, err, needle)

def test_resume_refuses_changed_addon_arguments(tmp_path, capsys):
    assert cdat_main(capsys, *TINY, *L2, '--out-dir', str(tmp_path))[0] == 0
    (tmp_path/L2RUN/'seed-0'/'done.json').unlink()
    rc, out, err = cdat_main(capsys, *TINY, '--with', 'l2', '--with-arg', 'l2.weight=0.5', '--out-dir', str(tmp_path), '--resume')
    one_error(rc, err, "addons (saved {'l2': {'weight': 0.05}}, given {'l2': {'weight': 0.5}})")

def test_killed_run_with_addon_resumes_to_identical_weights(tmp_path, capsys):
    ref, cut = tmp_path/'ref', tmp_path/'cut'
    assert cdat_main(capsys, *TINY, *L2, '--out-dir', str(ref))[0] == 0
    r = cdat_proc(*TINY, *L2, '--out-dir', str(cut), kill_at='batch#10')   # in epoch 1
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    rc, out, err = cdat_main(capsys, *TINY, *L2, '--out-dir', str(cut), '--resume')
    assert rc == 0, err
    for name in ('last.pt', 'best.pt'):
        a, b = load_checkpoint(ref/L2RUN/'seed-0'/name), load_checkpoint(cut/L2RUN/'seed-0'/name)
        for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), (name, k)
        for x, y in zip(a['cb_params']['L2Penalty'], b['cb_params']['L2Penalty']): assert torch.equal(x, y), name
    pd.testing.assert_frame_equal(pd.read_csv(ref/L2RUN/'seed-0'/'log.csv').drop(columns='time'),
                                  pd.read_csv(cut/L2RUN/'seed-0'/'log.csv').drop(columns='time'))

def test_init_from_starts_at_the_earlier_runs_best_weights(tmp_path, capsys):
    first = tmp_path/'first'
    assert cdat_main(capsys, *TINY, '--out-dir', str(first))[0] == 0
    seed0 = first/'naive-tailor_mosei_aligned'/'seed-0'
    # a tiny learning rate: the second run's weights stay within rounding of where they started
    rc, out, err = cdat_main(capsys, 'train', '--epochs', '1', '--quiet', '--lr', '1e-12', '--init-from', str(seed0),
                             '--out-dir', str(tmp_path/'second'), '--run-name', 'warm')
    assert rc == 0, err
    a = load_checkpoint(seed0/'best.pt')['model']
    b = load_checkpoint(tmp_path/'second'/'warm'/'seed-0'/'last.pt')['model']
    for k in a: assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    assert json.loads((tmp_path/'second'/'warm'/'seed-0'/'config.json').read_text())['init_from'] == str(seed0)
