"The `cdat` command as a user runs it: every model trains from `cdat train --model ...` on the embedded samples."
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def cdat(*args, cwd=None):
    exe = Path(sys.executable).with_name('cdat')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from cdatlib.cli import main; sys.exit(main())']
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, timeout=600)

@pytest.mark.parametrize('model', ['naive', 'tfn', 'misa', 'tailor'])
def test_each_model_trains_from_the_command_line(model, tmp_path):
    args = ['train', '--model', model, '--epochs', '2', '--out-dir', str(tmp_path), '--quiet']
    if model == 'tailor':   # the reference size (10M parameters) takes a minute on 2 CPU cores; shrink it via --model-arg
        args += ['--model-arg', 'hidden_size=64', '--model-arg', 'ff_dim=64', '--model-arg', 'text_layers=2']
    r = cdat(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'valid_micro_f1' in r.stdout
    seed_dir = tmp_path/f'{model}-tailor_mosei_aligned'/'seed-0'
    done = json.loads((seed_dir/'done.json').read_text())
    assert 0 <= done['valid_micro_f1'] <= 1
    assert json.loads((seed_dir/'config.json').read_text())['model'] == model

def test_evaluate_a_finished_run_on_test(tmp_path):
    assert cdat('train', '--epochs', '2', '--out-dir', str(tmp_path), '--quiet', cwd=tmp_path).returncode == 0
    r = cdat('evaluate', str(tmp_path/'naive-tailor_mosei_aligned'/'seed-0'), '--split', 'test', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'test_micro_f1' in r.stdout

@pytest.mark.parametrize('args,needle', [
    (['train', '--data', '/nowhere/x.pkl'], '/nowhere/x.pkl does not exist'),
    (['train', '--model', 'gpt'], "unknown model 'gpt'"),
    (['train', '--epochs', '0'], 'epochs: must be at least 1'),
    (['train', '--model-arg', 'wings=2', '--epochs', '1'], 'model_args'),
    (['evaluate', '/nowhere/run'], 'no such run folder'),
    (['data', 'describe', '/nowhere/y.pt'], '/nowhere/y.pt'),
])
def test_bad_arguments_give_one_line_not_a_traceback(args, needle, tmp_path):
    r = cdat(*args, '--out-dir', str(tmp_path)) if args[0] == 'train' else cdat(*args)
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if not l.startswith('cdat: warning:')]   # the data's warnings may come first
    assert len(lines) == 1 and lines[0].startswith('cdat: error:') and needle in lines[0], r.stderr

def test_describe_every_sample():
    for f in sorted((ROOT/'data_samples').iterdir()):
        if f.suffix in ('.json', '.md'): continue
        r = cdat('data', 'describe', str(f))
        assert r.returncode == 0, (f, r.stderr)
        assert 'train:' in r.stdout and 'layout:' in r.stdout
