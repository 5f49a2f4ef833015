"""Runs that are interrupted, misused or fed bad values: `cdat` answers with one `cdat: error:` line (no traceback),
never loses or silently damages a run, and a run killed at any phase resumes to the same weights as an uninterrupted
one. Each test here failed on commit 8b280ff. Tiny runs on data_samples/ (a second or two each); the kill tests start
one real process per phase, killed by SIGKILL at a named point (`CDATLIB_KILL_AT`, see `cdatlib.learner.kill_point`)."""
import errno, json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import torch

import cdatlib.run as run_pipeline
import cdatlib.callbacks as callbacks
from cdatlib.cli import main
from cdatlib.callbacks import load_checkpoint, file_mode
from cli_helpers import one_thread, cdat_main, cdat_proc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT/'data_samples'/'tailor_mosei_aligned.pt'
RUN = 'naive-tailor_mosei_aligned'
TINY = ['train', '--epochs', '3', '--batch-size', '32', '--quiet']

def assert_one_error(rc, err, needle, code=2):
    assert 'Traceback' not in err, err
    errors = [l for l in err.splitlines() if l.startswith('cdat: error:')]
    assert len(errors) == 1, err
    assert needle in errors[0], (needle, err)
    assert all(l.startswith(('cdat: error:', 'cdat: warning:')) for l in err.splitlines() if l.strip()), err
    assert rc == code, (rc, err)

def seed_dir(out, seed=0): return Path(out)/RUN/f'seed-{seed}'

def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob('*')) if p.is_file()}

# ---------------------------------------------------------------- bad values: refused before anything runs

@pytest.mark.parametrize('args,needle', [
    (['--seeds', '0', '0'], 'seeds: [0] given more than once'),      # 8b280ff: trained twice, printed "± 0.000"
    (['--seeds', '-1'], 'seeds: each seed must be in [0, 2**32)'),   # 8b280ff: traceback from numpy
    (['--seeds', str(2**32)], 'seeds: each seed must be in [0, 2**32)'),
    (['--lr', 'inf'], 'lr: must be a finite number'),                 # 8b280ff: NonFiniteLossError traceback
    (['--lr', 'nan'], 'lr: must be a finite number'),
    (['--grad-clip', 'nan'], 'grad_clip: must be a finite number'),   # 8b280ff: NaN passed `< 0`
    (['--weight-decay', 'inf'], 'weight_decay: must be a finite number'),
    (['--warmup', 'nan'], 'warmup: must be a finite number'),
    (['--layout', 'csv'], "layout: one of mult, mmsa, tailor, sdk, utterance"),
])
def test_bad_values_are_one_line(args, needle, tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'runs'), *args)
    assert_one_error(rc, err, needle)
    assert not (tmp_path/'runs').exists()   # nothing was created

@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_unavailable_cuda_is_refused(tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path), '--device', 'cuda')
    assert_one_error(rc, err, "device: 'cuda' asked for")

@pytest.mark.skipif(getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(), reason='MPS here')
def test_unavailable_mps_is_refused(tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path), '--device', 'mps')
    assert_one_error(rc, err, "device: 'mps' asked for")

def test_file_as_out_dir(tmp_path, capsys):
    f = tmp_path/'runs'; f.write_text('not a folder')
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(f))
    assert_one_error(rc, err, f'out_dir: {f} exists and is not a folder')
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(f/'deeper'))
    assert_one_error(rc, err, 'exists and is not a folder')
    assert f.read_text() == 'not a folder'

def test_layout_npz_and_utterance_reach_the_same_reader(tmp_path, capsys):
    # 8b280ff: --layout npz passed the config, then the readers refused 'npz' ("unknown layout")
    for name in ('npz', 'utterance'):
        rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path), '--layout', name, '--data', str(SAMPLE))
        assert 'unknown layout' not in err and 'layout:' not in err, err
        assert_one_error(rc, err, str(SAMPLE))   # a .pt is not an utterance .npz: the reader says so

# ---------------------------------------------------------------- data that cannot be trained on

def write_mult_with_empty(split, path):
    from cdatlib.samples import make_mult_mosi_aligned, write_pickle
    data, _ = make_mult_mosi_aligned()
    data[split] = {k: v[:0] for k, v in data[split].items()}
    write_pickle(data, path)
    return path

@pytest.mark.parametrize('split,extra', [('train', []), ('valid', []), ('test', ['--test'])])
def test_empty_split_is_refused_before_training(split, extra, tmp_path, capsys):
    # 8b280ff: empty valid -> KeyError 'valid' traceback; empty test with --test -> traceback after the whole run
    data = write_mult_with_empty(split, tmp_path/f'empty_{split}.pkl')
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'runs'), '--data', str(data), *extra)
    assert_one_error(rc, err, f'the {split} split is empty')
    assert not (tmp_path/'runs').exists()   # refused before anything was written

def test_empty_test_split_is_fine_without_test(tmp_path, capsys):
    data = write_mult_with_empty('test', tmp_path/'empty_test.pkl')
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'runs'), '--data', str(data))
    assert rc == 0, err

def test_data_warnings_are_printed(tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path))
    assert rc == 0, err
    assert any(l.startswith('cdat: warning:') and 'non-finite' in l for l in err.splitlines()), err

# ---------------------------------------------------------------- existing runs are never damaged

@pytest.fixture
def finished(tmp_path, capsys):
    "A finished 3-epoch run in tmp_path/runs"
    out = tmp_path/'runs'
    rc, _, err = cdat_main(capsys, *TINY, '--out-dir', str(out))
    assert rc == 0, err
    return out

def test_rerun_without_resume_refuses(finished, capsys):
    before = snapshot(finished)
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished))
    assert_one_error(rc, err, 'holds a run already')
    assert '--resume' in err and '--overwrite' in err
    assert snapshot(finished) == before

def test_overwrite_starts_again(finished, capsys):
    d = seed_dir(finished)
    (d/'done.json').write_text('{"seed": 0, "marker": 1}')
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished), '--overwrite', '--epochs', '2')
    assert rc == 0, err
    assert 'marker' not in json.loads((d/'done.json').read_text())
    assert json.loads((d/'config.json').read_text())['epochs'] == 2

@pytest.mark.parametrize('args,fields', [
    (['--lr', '0.01'], ['lr (saved 0.001, given 0.01)']),    # 8b280ff: kept the old lr silently, saved the new one
    (['--epochs', '5'], ['epochs (saved 3, given 5)']),      # 8b280ff: the schedule jumped
    (['--model', 'tfn', '--run-name', RUN], ['model (saved']),   # 8b280ff: overwrote config.json, then crashed
    (['--batch-size', '16', '--patience', '2'], ['batch_size', 'patience']),
])
def test_resume_refuses_a_changed_configuration(finished, args, fields, capsys):
    d = seed_dir(finished)
    (d/'done.json').unlink()   # an unfinished run
    before = snapshot(finished)
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished), '--resume', *args)
    assert_one_error(rc, err, 'resume: the configuration differs from')
    for f in fields: assert f in err, err
    assert snapshot(finished) == before

def test_resume_accepts_the_safe_fields(finished, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished), '--resume', '--device', 'cpu')
    assert rc == 0, err

def test_corrupt_done_json_is_treated_as_unfinished(finished, capsys):
    d = seed_dir(finished)
    good = json.loads((d/'done.json').read_text())
    (d/'done.json').write_bytes(b'{"seed": 0, "valid_micro')   # 8b280ff: JSONDecodeError traceback
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished), '--resume')
    assert rc == 0, err
    assert 'Traceback' not in err and 'done.json: unreadable' in err
    again = json.loads((d/'done.json').read_text())
    assert {k: v for k, v in again.items() if k not in ('seconds', 'check')} == {k: v for k, v in good.items() if k not in ('seconds', 'check')}

def test_corrupt_last_pt_is_one_line(finished, capsys):
    d = seed_dir(finished)
    (d/'done.json').unlink()
    (d/'last.pt').write_bytes((d/'last.pt').read_bytes()[:500])   # an interrupted copy
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished), '--resume')
    assert_one_error(rc, err, f"{d/'last.pt'}: not a readable checkpoint")

def test_corrupt_best_pt_is_one_line_in_evaluate(finished, capsys):
    d = seed_dir(finished)
    (d/'best.pt').write_bytes(b'PK\x03\x04 not really a zip')
    rc, out, err = cdat_main(capsys, 'evaluate', str(d), '--split', 'valid')
    assert_one_error(rc, err, f"{d/'best.pt'}: not a readable checkpoint")

@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_evaluate_a_gpu_run_on_a_machine_without_one(finished, capsys):
    d = seed_dir(finished)
    cfg = json.loads((d/'config.json').read_text()); cfg['device'] = 'cuda'
    (d/'config.json').write_text(json.dumps(cfg))
    rc, out, err = cdat_main(capsys, 'evaluate', str(d), '--split', 'valid')
    assert_one_error(rc, err, "device: 'cuda' asked for")
    rc, out, err = cdat_main(capsys, 'evaluate', str(d), '--split', 'valid', '--device', 'cpu')
    assert rc == 0 and 'valid_micro_f1' in out, err

def test_help_names_the_layouts_and_flags(capsys):
    with pytest.raises(SystemExit) as e: main(['train', '--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for word in ('utterance', 'npz (= utterance)', '--overwrite', '--resume', '--debug', '--with', '--init-from'): assert word in out

def test_resume_with_test_tests_a_run_finished_without(finished, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(finished), '--resume', '--test')
    assert rc == 0, err
    assert 'test_micro_f1' in json.loads((seed_dir(finished)/'done.json').read_text())
    assert 'test_micro_f1' in out

def test_files_of_a_run_have_one_mode(finished):
    # 8b280ff: checkpoints were owner-only (mkstemp's 0o600) while config.json followed the umask
    files = [p for p in finished.rglob('*') if p.is_file()]
    assert {p.name for p in files} >= {'config.json', 'best.pt', 'last.pt', 'log.csv', 'done.json', 'per_seed.csv', 'summary.csv'}
    assert {p.stat().st_mode & 0o777 for p in files} == {file_mode()}
    assert not [p for p in finished.rglob('.*')], 'no lock or temporary files left behind'

# ---------------------------------------------------------------- a second process

HOLDER = '''import sys, time
from cdatlib.callbacks import RunLock
lock = RunLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(120)
'''

def test_a_second_process_is_stopped_and_a_dead_ones_lock_blocks_nothing(tmp_path, capsys):
    out = tmp_path/'runs'
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, str(seed_dir(out))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        rc, _, err = cdat_main(capsys, *TINY, '--out-dir', str(out))
        assert_one_error(rc, err, 'another process is training into this folder')
        assert not (seed_dir(out)/'config.json').exists()
    finally:
        holder.kill(); holder.wait()
    assert (seed_dir(out)/'.lock').exists()   # the killed holder left its lock file behind ...
    rc, _, err = cdat_main(capsys, *TINY, '--out-dir', str(out))
    assert rc == 0, err                       # ... which blocks nothing: the OS released the lock

# ---------------------------------------------------------------- failures during a run

def test_nonfinite_loss_is_one_line(tmp_path, capsys):
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path), '--lr', '1e30')
    assert_one_error(rc, err, 'non-finite loss', code=1)
    assert str(seed_dir(tmp_path)) in err

@pytest.mark.parametrize('code,needle', [(errno.ENOSPC, 'disk full writing'), (errno.EACCES, 'Permission denied')])
def test_write_errors_are_one_line_naming_the_file(code, needle, tmp_path, capsys, monkeypatch):
    def fail(fd, data): raise OSError(code, os.strerror(code))
    monkeypatch.setattr(callbacks, '_write_all', fail)
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path))
    assert_one_error(rc, err, needle, code=1)
    assert str(seed_dir(tmp_path)/'config.json') in err   # the first file the run writes, not a temporary name
    assert not [p for p in tmp_path.rglob('*.tmp')]

@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root ignores file permissions')
def test_unwritable_out_dir_is_one_line(tmp_path, capsys):
    out = tmp_path/'ro'; out.mkdir(); out.chmod(0o500)
    try:
        rc, _, err = cdat_main(capsys, *TINY, '--out-dir', str(out))
        assert_one_error(rc, err, 'Permission denied', code=1)
    finally: out.chmod(0o700)

def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(run_pipeline, 'build_learner', interrupted)
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path))
    assert rc == 130 and 'Traceback' not in err
    assert err.strip().splitlines()[-1] == ('cdat: interrupted; run the same command with --resume to continue from the '
                                            'last finished epoch')
    assert not [l for l in err.splitlines() if l.startswith('cdat: error:')]

def test_unexpected_errors_are_one_line_and_debug_shows_them(tmp_path, capsys, monkeypatch):
    def bug(*a, **k): raise ZeroDivisionError('a bug')
    monkeypatch.setattr(run_pipeline, 'build_model', bug)
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'a'))
    assert_one_error(rc, err, 'unexpected ZeroDivisionError: a bug', code=1)
    assert '--debug' in err
    with pytest.raises(ZeroDivisionError): main([*TINY, '--out-dir', str(tmp_path/'b'), '--debug'])
    r = cdat_proc('train', '--seeds', '0', '0', '--debug')
    assert 'Traceback' in r.stderr and 'ConfigError' in r.stderr

def test_best_weights_come_from_memory(tmp_path):
    "8b280ff re-read best.pt in after_fit: a file replaced behind the run's back became the reported model"
    from cdatlib.formats import load_dataset
    from cdatlib.models.naive import NaiveFusion
    from cdatlib.learner import Callback
    from cdatlib.callbacks import build_learner, set_seed
    class Scribble(Callback):
        order = 60
        def after_epoch(self, learn): (learn.path/'best.pt').write_bytes(b'another process was here')
    class Keep(Callback):
        order = 60
        def before_fit(self, learn): self.states = {}
        def after_epoch(self, learn): self.states[learn.epoch] = {k: v.clone() for k, v in learn.model.state_dict().items()}
    data = load_dataset(SAMPLE)
    set_seed(0)
    learn = build_learner(NaiveFusion(data.dims, data.task.n_outputs, hidden=8, head_hidden=8), data, lr=3e-3,
                          batch_size=32, path=tmp_path, device='cpu', progress=False, cbs=[Scribble(), keep := Keep()])
    learn.fit(4)
    best = keep.states[learn.best_epoch]
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, best[k]), k

# ---------------------------------------------------------------- killed at every phase, resumed to the same weights

def run_record(out, seeds=(0, 1)):
    "Everything a finished run leaves that must not depend on interruptions (timings left out)"
    rec = {}
    for s in seeds:
        d = seed_dir(out, s)
        rec[s] = {'best': load_checkpoint(d/'best.pt')['model'], 'last': load_checkpoint(d/'last.pt')['model'],
                  'best_epoch': load_checkpoint(d/'best.pt')['epoch'],
                  'done': {k: v for k, v in json.loads((d/'done.json').read_text()).items() if k not in ('seconds', 'check')},
                  'log': pd.read_csv(d/'log.csv').drop(columns='time'), 'config': {k: v for k, v in json.loads((d/'config.json').read_text()).items() if k != 'out_dir'}}
    rec['per_seed'] = pd.read_csv(Path(out)/RUN/'per_seed.csv').drop(columns='seconds')
    return rec

def assert_same_run(a, b):
    for s in (0, 1):
        for which in ('best', 'last'):
            assert list(a[s][which]) == list(b[s][which])
            for k in a[s][which]: assert torch.equal(a[s][which][k], b[s][which][k]), (s, which, k)
        assert a[s]['best_epoch'] == b[s]['best_epoch'] and a[s]['done'] == b[s]['done'] and a[s]['config'] == b[s]['config']
        pd.testing.assert_frame_equal(a[s]['log'], b[s]['log'])
    pd.testing.assert_frame_equal(a['per_seed'], b['per_seed'])

@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp('reference')
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: assert main([*TINY, '--seeds', '0', '1', '--out-dir', str(out)]) == 0
    finally: torch.set_num_threads(n)
    return run_record(out)

# 200 train samples in batches of 32: 7 batches per epoch, 3 epochs per seed, seeds 0 and 1
PHASES = {
    'batch#3': 'in epoch 0, before any checkpoint',
    'batch#10': 'in epoch 1',
    'wrote:best.pt#1': 'between best.pt and last.pt of epoch 0',
    'write:last.pt#2': 'while last.pt of epoch 1 is written (leaves its temporary file)',
    'wrote:last.pt#3': 'after the last last.pt, before done.json (8b280ff: no attribute best_epoch)',
    'write:done.json#1': 'while done.json is written',
    'wrote:done.json#1': 'between the seeds',
    'write:config.json#2': 'while the second seed starts (its folder holds only a temporary file)',
    'write:summary.csv': 'while the summary is written',
}

@pytest.mark.parametrize('phase', list(PHASES))
def test_killed_at_any_phase_resumes_to_the_same_run(phase, uninterrupted, tmp_path, capsys):
    out = tmp_path/'runs'
    r = cdat_proc(*TINY, '--seeds', '0', '1', '--out-dir', str(out), kill_at=phase)
    assert r.returncode == -signal.SIGKILL, (phase, r.returncode, r.stderr[-2000:])
    if phase.startswith('write:'): assert [p for p in out.rglob('.*.tmp')], 'killed mid-write: a temporary file is left'
    rc, _, err = cdat_main(capsys, *TINY, '--seeds', '0', '1', '--out-dir', str(out), '--resume')
    assert rc == 0, (phase, err)
    assert 'Traceback' not in err
    assert not [p for p in out.rglob('*.tmp')], 'stale temporary files are cleaned'
    assert_same_run(uninterrupted, run_record(out))

# ---------------------------------------------------------------- the data report's problems refuse training

def test_problems_of_the_data_refuse_training(tmp_path, capsys, monkeypatch):
    from cdatlib.dataset import MultimodalData
    if not hasattr(MultimodalData, 'problems'): pytest.skip('MultimodalData.problems() not available')
    monkeypatch.setattr(MultimodalData, 'problems', lambda self: ['train.labels: 3 values are not 0 or 1'])
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'runs'))
    assert_one_error(rc, err, 'train.labels: 3 values are not 0 or 1')
    assert not (tmp_path/'runs').exists()
    # a problem of the test split only matters with --test; without it, it is a warning
    monkeypatch.setattr(MultimodalData, 'problems', lambda self: ['test.audio: every value was NaN or inf and became 0'])
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'runs'))
    assert rc == 0 and 'cdat: warning:' in err and 'test.audio: every value' in err, err
    rc, out, err = cdat_main(capsys, *TINY, '--out-dir', str(tmp_path/'runs2'), '--test')
    assert_one_error(rc, err, 'test.audio: every value was NaN')

def test_resuming_a_checkpoint_of_an_older_cdatlib(tmp_path):
    "8b280ff's last.pt has no in-memory copy of the best weights: they come from its best.pt (if its epoch matches)"
    from cdatlib.formats import load_dataset
    from cdatlib.models.naive import NaiveFusion
    from cdatlib.learner import Learner
    from cdatlib.callbacks import CheckpointCB, ResumeCB, set_seed
    data = load_dataset(SAMPLE)
    def make():
        set_seed(0)   # selecting the *highest* validation loss makes an early epoch the best, the last one not
        return Learner(NaiveFusion(data.dims, data.task.n_outputs, hidden=8, head_hidden=8), data.dataloaders(32, seed=0),
                       data.task, lr=3e-3, path=tmp_path, cbs=[CheckpointCB(monitor='loss', mode='max')])
    full = make().fit(4)
    assert full.best_epoch < 3
    ck = load_checkpoint(tmp_path/'last.pt')
    del ck['cbs']['CheckpointCB']['best_model']   # as an older cdatlib wrote it
    callbacks.atomic_save(ck, tmp_path/'last.pt')
    resumed = make().fit(4, cbs=[ResumeCB(tmp_path/'last.pt')])
    assert resumed.best_epoch == full.best_epoch
    for k, v in full.model.state_dict().items(): assert torch.equal(v, resumed.model.state_dict()[k]), k
