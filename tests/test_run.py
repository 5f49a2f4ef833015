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
