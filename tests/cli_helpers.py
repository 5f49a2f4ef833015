"Helpers shared by the tests that drive the `cdat` command (imported by name: pytest puts tests/ on sys.path)"
import os, subprocess, sys
import pytest
import torch
from cdatlib.cli import main

@pytest.fixture(autouse=True)
def one_thread():
    "Bit-exact comparisons between this process and child processes need the same thread count"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def cdat_main(capsys, *args):
    "`cdat ARGS` in this process: (exit status, stdout, stderr)"
    rc = main(list(args)); cap = capsys.readouterr()
    return rc, cap.out, cap.err

def cdat_proc(*args, kill_at=None, timeout=300):
    "`cdat ARGS` in a child process, optionally SIGKILLed at the point `kill_at`"
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': '0'}
    env.pop('CDATLIB_KILL_AT', None)
    if kill_at: env['CDATLIB_KILL_AT'] = kill_at
    code = 'import sys, torch; torch.set_num_threads(1); from cdatlib.cli import main; sys.exit(main())'
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, env=env, timeout=timeout)
