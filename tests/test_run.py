"The run pipeline (chapter 14) as the one path: the command and Python write the same run; nothing is lost"
import contextlib, dataclasses, io, json
import pytest
from cdatlib.config import TrainConfig, ConfigError
from cdatlib import run
from cdatlib.cli import main, make_parser, config_from_args

QUIET = dict(progress=False, log=lambda *a: None, warn=lambda *a: None)

def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()

def test_cli_and_python_write_the_same_config(tmp_path):
    flags = ['--model', 'naive', '--epochs', '1', '--batch-size', '16', '--lr', '0.002', '--seeds', '3', '--with', 'l2',
             '--with-arg', 'l2.weight=0.1', '--model-arg', 'hidden=8', '--device', 'cpu', '--quiet']
    rc, _, err = _main('train', *flags, '--out-dir', str(tmp_path/'cli'))
    assert rc == 0, err
    cfg = TrainConfig(model='naive', epochs=1, batch_size=16, lr=0.002, seeds=[3], addons={'l2': {'weight': 0.1}},
                      model_args={'hidden': 8}, device='cpu', out_dir=str(tmp_path/'py'))
    assert config_from_args(make_parser().parse_args(['train', *flags, '--out-dir', str(tmp_path/'py')])) == cfg
    res = run.train(cfg, **QUIET)
    cli_dir = tmp_path/'cli'/cfg.name()/'seed-3'
    strip = lambda p: {**json.loads(p.read_text()), 'out_dir': ''}
    assert strip(cli_dir/'config.json') == strip(res.seed_dir(3)/'config.json')
    # the same seed and settings: the same numbers
    assert json.loads((cli_dir/'done.json').read_text())['valid_loss'] == res.per_seed.valid_loss[0]

def test_python_run_never_overwrites_silently(tmp_path):
    cfg = TrainConfig(epochs=1, device='cpu', out_dir=str(tmp_path))
    res = run.train(cfg, **QUIET)
    before = (res.seed_dir(0)/'best.pt').read_bytes()
    with pytest.raises(ConfigError, match='holds a run already'): run.train(cfg, **QUIET)
    assert (res.seed_dir(0)/'best.pt').read_bytes() == before
    per_seed, summary = run.train(cfg, resume=True, **QUIET)            # a TrainResult unpacks as the old pair
    assert per_seed.valid_loss.tolist() == res.per_seed.valid_loss.tolist()

def test_overwrite_refuses_to_delete_its_own_init_weights(tmp_path):
    "`--init-from X/r/seed-0 --overwrite` into X/r once deleted the weights it was to start from, then failed"
    cfg = TrainConfig(epochs=1, device='cpu', out_dir=str(tmp_path), run_name='r')
    res = run.train(cfg, **QUIET)
    files = {p.name: p.read_bytes() for p in res.seed_dir(0).iterdir()}
    rc, _, err = _main('train', '--epochs', '1', '--device', 'cpu', '--out-dir', str(tmp_path), '--run-name', 'r',
                       '--init-from', str(res.seed_dir(0)), '--overwrite', '--quiet')
    assert rc == 2 and 'which --overwrite would clear' in err, err
    assert {p.name: p.read_bytes() for p in res.seed_dir(0).iterdir()} == files   # nothing lost

def test_load_run_predict_and_evaluate_agree(tmp_path):
    cfg = TrainConfig(epochs=2, device='cpu', out_dir=str(tmp_path))
    res = run.train(cfg, **QUIET)
    loaded = run.load_run(res.seed_dir(0))
    assert loaded.config == dataclasses.replace(cfg, seeds=[0]) and list(loaded.models) == ['naive']
    preds = run.predict(loaded, 'valid')
    assert len(preds) == len(loaded.data.valid) and 'pred_happy' in preds and 'target_happy' in preds
    m = run.evaluate_run(res.seed_dir(0), 'valid')
    assert m['micro_f1'] == pytest.approx(res.per_seed.valid_micro_f1[0])

def test_stages_are_declared_once():
    names = [s.name for s in run.STAGES]
    assert names == ['baseline', 'confidnet', 'cdat']
    cfg = TrainConfig(method='cdat', confidence='ce')
    assert list(run.method_stages(cfg, 0, '/x')) == ['baseline', 'cdat']            # CE needs no ConfidNet stage
    assert list(run.method_stages(dataclasses.replace(cfg, confidence='confidnet'), 0, '/x')) == names

# ---------------------------------------------------------------- records that cannot be forged, files that are files
def _finished_run(tmp_path, **kw):
    cfg = TrainConfig(epochs=2, device='cpu', out_dir=str(tmp_path), **kw)
    return cfg, run.train(cfg, **QUIET)

def test_a_forged_record_is_never_believed(tmp_path):
    cfg, res = _finished_run(tmp_path)
    done = res.seed_dir(0)/'done.json'
    row = json.loads(done.read_text()); row['valid_micro_f1'] = 99.   # edited by hand
    done.write_text(json.dumps(row))
    warned = []
    again = run.train(cfg, resume=True, progress=False, log=lambda *a: None, warn=warned.append)
    assert any('does not match its checksum' in w for w in warned), warned
    assert again.per_seed.valid_micro_f1[0] == pytest.approx(res.per_seed.valid_micro_f1[0])   # recomputed, not copied
    assert json.loads(done.read_text())['valid_micro_f1'] != 99.

@pytest.mark.parametrize('epoch', [10**9, -5, 'y'])
def test_an_edited_checkpoint_is_refused_with_its_name(tmp_path, epoch):
    import torch
    from cdatlib.callbacks import load_checkpoint, atomic_save
    cfg = TrainConfig(epochs=3, device='cpu', out_dir=str(tmp_path))
    folder = cfg.run_dir(0)
    run.train(dataclasses.replace(cfg, epochs=3), **QUIET)
    (folder/'done.json').unlink()                                    # as if killed before the record
    ck = load_checkpoint(folder/'last.pt'); ck['epoch'] = epoch; atomic_save(ck, folder/'last.pt')
    rc, _, err = _main('train', '--epochs', '3', '--device', 'cpu', '--out-dir', str(tmp_path), '--resume', '--quiet')
    lines = [l for l in err.splitlines() if l.startswith('cdat: error:')]
    assert rc == 2 and len(lines) == 1 and 'last.pt' in lines[0], err

def test_a_lock_that_is_a_link_is_refused(tmp_path):
    target = tmp_path/'elsewhere'/'created'
    target.parent.mkdir()
    folder = tmp_path/'runs'/'naive-tailor_mosei_aligned'/'seed-0'
    folder.mkdir(parents=True)
    (folder/'.lock').symlink_to(target)
    rc, _, err = _main('train', '--epochs', '1', '--device', 'cpu', '--out-dir', str(tmp_path/'runs'), '--quiet')
    assert rc == 2 and 'is a link' in err, err
    assert not target.exists()                                       # nothing created through the link

@pytest.mark.parametrize('name', ['..', '../x', '/tmp/x', 'a/b'])
def test_run_names_are_names(tmp_path, name):
    rc, _, err = _main('train', '--epochs', '1', '--out-dir', str(tmp_path), '--run-name', name, '--quiet')
    assert rc == 2 and 'is a path; give a plain folder name' in err, err

def test_a_config_that_is_a_fifo_does_not_hang(tmp_path):
    import os
    folder = tmp_path/'run'/'seed-0'; folder.mkdir(parents=True)
    os.mkfifo(folder/'config.json')
    rc, _, err = _main('evaluate', str(folder))
    assert rc == 2 and 'not a regular file' in err, err

def test_concurrent_seeds_merge_their_tables(tmp_path):
    "Two calls train two seeds of one run: the run's per_seed.csv holds both, not the last writer's alone"
    import pandas as pd
    cfg = TrainConfig(epochs=1, device='cpu', out_dir=str(tmp_path))
    run.train(dataclasses.replace(cfg, seeds=[1]), **QUIET)
    res = run.train(dataclasses.replace(cfg, seeds=[0]), **QUIET)
    assert res.per_seed.seed.tolist() == [0]                         # this call's rows
    assert pd.read_csv(res.run_dir/'per_seed.csv').seed.tolist() == [0, 1]

def test_a_record_of_other_weights_is_not_believed(tmp_path):
    cfg, res = _finished_run(tmp_path)
    from cdatlib.callbacks import load_checkpoint, atomic_save
    ck = load_checkpoint(res.seed_dir(0)/'best.pt')
    for v in ck['model'].values(): v.add_(1.)                         # other weights under the record's name
    atomic_save(ck, res.seed_dir(0)/'best.pt')
    assert run.RunFolder(res.seed_dir(0), 0).read_done() == (None, 'best.pt is not the file this record was made with')

@pytest.mark.parametrize('args,needle', [
    (['--method', 'cdat', '--with-arg', 'cdat.adjust=sideways'], 'addons.cdat'),
    (['--method', 'cdat', '--confidence', 'confidnet', '--confidnet-arg', 'n_layers=0'], 'confidnet_args'),
    (['--model-arg', 'dropout=NaN'], 'model_args.dropout: expected float (a finite number), got nan'),
    (['--with', 'hycon', '--with-arg', 'hycon.v2=maybe'], "addons.hycon.v2: expected bool (true or false), got 'maybe'"),
    (['--with', 'l2', '--with-arg', 'l2.weight=heavy'], "addons.l2.weight: expected float (a finite number), got 'heavy'"),
    (['--with', 'hycon', '--with-arg', 'hycon.temperature=-1'], 'addons.hycon'),
])
def test_arguments_are_refused_before_any_training(tmp_path, args, needle):
    rc, _, err = _main('train', '--epochs', '1', '--device', 'cpu', '--out-dir', str(tmp_path), '--quiet', *args)
    lines = [l for l in err.splitlines() if l.startswith('cdat:') and 'warning' not in l]
    assert rc == 2 and len(lines) == 1 and needle in lines[0] and 'probably a bug' not in lines[0], err
    assert not any(tmp_path.rglob('best.pt'))                       # not even a baseline stage was trained

@pytest.mark.parametrize('spelling,value', [('False', False), ('false', False), ('0', False), ('True', True), ('1', True)])
def test_a_bool_argument_is_read_as_the_add_on_declares(tmp_path, spelling, value):
    rc, _, err = _main('train', '--epochs', '1', '--device', 'cpu', '--out-dir', str(tmp_path), '--quiet',
                       '--with', 'hycon', '--with-arg', f'hycon.v2={spelling}')
    assert rc == 0, err
    cfg = json.loads(next(tmp_path.rglob('config.json')).read_text())
    assert cfg['addons']['hycon']['v2'] is value                      # the string 'False' would have been true

# ---------------------------------------------------------------- data that reads but cannot teach anything
def _sample_with(**train_changes):
    import copy
    from cdatlib.formats import load_dataset
    from cdatlib.config import find_data_samples
    data = load_dataset(find_data_samples()/'tailor_mosei_aligned.pt')
    data.splits_ = dict(data.splits_)
    tr = data.splits_['train'] = copy.copy(data.train)
    for k, v in train_changes.items(): setattr(tr, k, v(tr))
    return data

@pytest.mark.parametrize('changes,check,needle', [
    (dict(labels=lambda tr: tr.labels * 0), 'no-positive', 'train.labels: no training sample has a positive label'),
    (dict(labels=lambda tr: tr.labels * 0 + 1), 'constant-labels', 'train.labels: every training label is'),
    (dict(ids=lambda tr: ['valid_0'] + list(tr.ids[1:])), 'shared-ids', 'valid.id: 1 of its ids are also train ids'),
    (dict(ids=lambda tr: [tr.ids[1]] + list(tr.ids[1:])), 'duplicate-ids', 'train.id: 1 ids appear twice or more'),
])
def test_unlearnable_data_is_refused_unless_accepted(tmp_path, changes, check, needle):
    data = _sample_with(**changes)
    cfg = TrainConfig(epochs=1, device='cpu', out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match='--accept-data ' + check): run.train(cfg, data=data, **QUIET)
    assert not (tmp_path/cfg.name()).exists()                        # refused before anything was written
    warned = []
    also = ['constant-labels'] if check == 'no-positive' else []     # all-zero labels are constant too
    run.train(cfg, data=data, accept=[check, *also], progress=False, log=lambda *a: None, warn=warned.append)
    assert any(needle in w and 'accepted' in w for w in warned), warned

def test_feature_sizes_must_match_across_splits(tmp_path):
    import copy
    data = _sample_with()
    te = data.splits_['test'] = copy.copy(data.test)
    te.features = {**te.features, 'audio': te.features['audio'][..., :5]}
    with pytest.raises(ConfigError, match='test.audio: 5 features, train has 12'):
        run.train(TrainConfig(epochs=1, device='cpu', out_dir=str(tmp_path)), data=data, **QUIET)

def test_absurd_feature_scales_are_a_warning(tmp_path):
    data = _sample_with(features=lambda tr: {**tr.features, 'vision': tr.features['vision'] * 1e30})
    warned = []
    run.train(TrainConfig(epochs=1, device='cpu', out_dir=str(tmp_path)), data=data, progress=False,
              log=lambda *a: None, warn=warned.append)
    assert any('train.vision: values up to' in w and 'absurd scale' in w for w in warned), warned

def test_accept_data_from_the_command_line():
    args = make_parser().parse_args(['train', '--accept-data', 'no-positive', '--accept-data', 'shared-ids'])
    assert args.accept_data == ['no-positive', 'shared-ids']
    with pytest.raises(ConfigError, match="invalid choice: 'everything'"): make_parser().parse_args(['train', '--accept-data', 'everything'])
