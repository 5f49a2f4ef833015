"""Sweeps and grids on a real multi-node Ray cluster, and Ray's failures as one `cdat: error:` line.

The cluster is two Ray nodes on this machine's loopback interface, each started with `ray start` as a process of
its own (`--block`, in a session of its own, with its own --temp-dir and ports): a head (`ray start --head`) and a
worker (`ray start --address=127.0.0.1:PORT`), one CPU each. A reproduce grid (`cdat reproduce ... --ray-address`)
and an alpha sweep (`tune_cdat(..., ray_address=...)`) run on it; each time the worker node is killed in the middle
of a unit (a trial), and the grid (the sweep) still ends with every row, the killed unit resumed from its last.pt
on the head. The one-line errors (nothing at the address, a trial no node can hold, no GPU, a Ray that cannot
start) are checked to come within seconds, before anything is trained.

Loopback only. Ray replaces 127.0.0.1 by the machine's network address (`resolve_ip_for_localhost`) unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and that setting in turn makes `ray start --address` refuse to start a worker
node. So the nodes are started through Ray's own CLI entry point (`ray.scripts.scripts.main`, what the `ray` command
runs) with that check let through and the node address kept at 127.0.0.1 (NODE_MAIN); every other process (the
nodes' children, the drivers) gets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 from its environment, and a driver in this
process the same setting (`loopback_driver`). Usage statistics are off, token authentication is off
(RAY_AUTH_MODE=disabled), and every port is chosen free on 127.0.0.1.

Stopping: a node is every process in the session of its `ray start` (the raylet, the GCS, the agents and the
workers that run the units), plus any process whose command line names its private temp dir. Those exact PIDs are
sent SIGKILL, to kill the worker in the middle of a run and, in the teardown, to stop both nodes whatever
happened (the teardown then checks that none is left). Not `ray stop --force`: it stops every Ray process of the
machine, other people's included. Linux only (/proc); skipped without Ray."""
import contextlib, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
import pandas as pd
import pytest

ray = pytest.importorskip('ray', reason='Ray is an optional extra: pip install -e ".[tune]" to run the cluster tests')
if not Path('/proc/self/stat').exists(): pytest.skip('the cluster test finds the nodes\' processes in /proc (Linux)', allow_module_level=True)

from cdatlib.cli import main
from cdatlib.reproduce import EXPERIMENTS, resolve, pending

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NODE_MAIN = """import sys
import ray._private.ray_constants as constants, ray._private.services as services
from ray._common.network_utils import get_localhost_ip
constants.ENABLE_RAY_CLUSTER = True # a worker node may join (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would refuse it) ...
services.get_node_ip_address = lambda address=None: get_localhost_ip() # ... and 127.0.0.1 stays 127.0.0.1
from ray.scripts.scripts import main
sys.argv[0] = 'ray'
sys.exit(main())
"""
ENV = {'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER': '0', # Ray keeps 127.0.0.1 (and does not look for the network address)
       'RAY_AUTH_MODE': 'disabled', 'RAY_USAGE_STATS_ENABLED': '0', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1',
       # a dead node is noticed within seconds (the defaults: about 15 s)
       'RAY_health_check_period_ms': '1000', 'RAY_health_check_timeout_ms': '1000', 'RAY_health_check_failure_threshold': '3'}
START_TIMEOUT = 60 # seconds for a node to come up
RUN_TIMEOUT = 150 # seconds for a whole grid or sweep


def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def env()->dict:
    e = {k: v for k, v in os.environ.items() if k not in ('RAY_ADDRESS', 'RAY_AUTH_TOKEN')}
    return {**e, **ENV}

def proc_session(pid:int)->int:
    "The session id of a live process (field 6 of /proc/PID/stat); None when it is gone, or dead and not yet reaped"
    try: st = Path(f'/proc/{pid}/stat').read_text()
    except OSError: return None
    fields = st[st.rindex(')') + 2:].split()
    return None if fields[0] in 'ZX' else int(fields[3])

def all_pids()->list:
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


class LoopbackNode:
    "One Ray node on 127.0.0.1, started with `ray start --block` in a session of its own, with its own temp dir"
    def __init__(self, head_port:int=None, head:bool=False):
        self.temp = Path(tempfile.mkdtemp(prefix='rc', dir='/tmp')) # short: Ray's socket paths must fit in 107 bytes
        self.out = open(self.temp/'ray-start.log', 'w')
        ports = ['--node-manager-port', '--object-manager-port', '--dashboard-agent-listen-port',
                 '--dashboard-agent-grpc-port', '--metrics-export-port', '--runtime-env-agent-port']
        args = ['start', '--block', '--node-ip-address=127.0.0.1', '--num-cpus=1', '--object-store-memory=100000000',
                '--disable-usage-stats', f'--temp-dir={self.temp}', *(f'{p}={free_port()}' for p in ports)]
        if head: args += ['--head', f'--port={head_port}', '--include-dashboard=false', f'--dashboard-port={free_port()}']
        else: args += [f'--address=127.0.0.1:{head_port}']
        self.proc = subprocess.Popen([PY, '-c', NODE_MAIN, *args], env=env(), cwd=ROOT, start_new_session=True,
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def wait_up(self, timeout:float=START_TIMEOUT):
        "Until `ray start` wrote the cluster's address (the node is up); fails with its log otherwise"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (self.temp/'ray_current_cluster').exists(): return self
            if self.proc.poll() is not None: break
            time.sleep(0.2)
        raise RuntimeError(f"a Ray node did not start within {timeout} s:\n{self.log()[-3000:]}")

    def log(self)->str:
        return (self.temp/'ray-start.log').read_text(errors='replace')

    def pids(self)->list:
        "Every process of this node: its session's, and any that names its temp dir"
        out = []
        for p in all_pids():
            sid = proc_session(p)
            if sid is None: continue
            if sid == self.proc.pid: out.append(p); continue
            try: cmd = Path(f'/proc/{p}/cmdline').read_bytes()
            except OSError: continue
            if str(self.temp).encode() in cmd: out.append(p)
        return out

    def kill(self):
        "SIGKILL every process of the node (a machine that dies); returns the PIDs it killed"
        killed = []
        for _ in range(5): # a process may be starting a child as we go: repeat until none is left
            pids = self.pids()
            if not pids: break
            for p in pids:
                try: os.kill(p, signal.SIGKILL); killed.append(p)
                except ProcessLookupError: pass
            time.sleep(0.3)
        try: self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired: pass
        self.out.close()
        return killed

    def lock_holders(self, under:Path)->dict:
        "{run folder: pid} of the runs this node's processes train now (each holds its folder's .lock, chapter 09)"
        out = {}
        for p in self.pids():
            try: fds = os.listdir(f'/proc/{p}/fd')
            except OSError: continue
            for fd in fds:
                try: target = os.readlink(f'/proc/{p}/fd/{fd}')
                except OSError: continue
                t = Path(target)
                if t.name == '.lock' and str(t).startswith(str(under)): out[t.parent] = p
        return out


@pytest.fixture
def cluster():
    "A head and a worker node on 127.0.0.1, one CPU each; both stopped (every process of theirs) after the test"
    port = free_port()
    nodes = {}
    t0 = time.monotonic()
    try:
        nodes['head'] = LoopbackNode(port, head=True) # registered before it is waited for: stopped even if it never comes up
        nodes['head'].wait_up()
        nodes['worker'] = LoopbackNode(port)
        nodes['worker'].wait_up()
        print(f"cluster up in {time.monotonic() - t0:.1f} s at 127.0.0.1:{port}")
        yield {'address': f'127.0.0.1:{port}', **nodes}
    finally: # every node stopped first, then checked
        left = {}
        for n in reversed(list(nodes.values())):
            n.kill()
            if n.pids(): left[str(n.temp)] = n.pids()
            shutil.rmtree(n.temp, ignore_errors=True)
        assert not left, f'processes of the Ray nodes survived: {left}'


@pytest.fixture
def loopback_driver(monkeypatch):
    "This process joins clusters on 127.0.0.1 as they are (Ray would connect to the machine's network address)"
    import ray._private.ray_constants as constants
    monkeypatch.setattr(constants, 'ENABLE_RAY_CLUSTER', False)
    monkeypatch.setenv('RAY_AUTH_MODE', 'disabled')
    yield
    if ray.is_initialized(): ray.shutdown()


def cdat(capsys, *args):
    "Run `cdat ARGS` here: (exit status, stdout, stderr, seconds)"
    t = time.monotonic()
    rc = main(list(args)); cap = capsys.readouterr()
    return rc, cap.out, cap.err, time.monotonic() - t

def one_error_line(err:str)->str:
    "The one `cdat: error:` line of stderr (warnings about the data may come before it, nothing else)"
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith('cdat: warning: ')]
    assert len(lines) == 1 and lines[0].startswith('cdat: error: '), err
    return lines[0]

TUNE = ['tune', '--method', 'cdat', '--confidence', 'ce', '--epochs', '1', '--batch-size', '64', '--quiet']


@pytest.mark.parametrize('args,needle', [
    (['--cpus-per-trial', '1000'], '--cpus-per-trial 1000: no node of the Ray cluster has that many (nodes: 1 x ('),
    (['--gpus-per-trial', '1'], '--gpus-per-trial 1: no node of the Ray cluster has that many'),
    (['--ray-address', '127.0.0.1:1'], '--ray-address 127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1 (Connection refused); start its head there'),
])
def test_tune_refuses_at_once(args, needle, tmp_path, capsys, loopback_driver):
    "What Ray would wait on forever (or fail on after 40 s) is one line within seconds, before anything is trained"
    if '--gpus-per-trial' in args and __import__('torch').cuda.is_available(): pytest.skip('this machine has a GPU')
    rc, out, err, secs = cdat(capsys, *TUNE, '--out-dir', str(tmp_path), *args)
    line = one_error_line(err)
    assert rc == 2 and needle in line, err
    assert secs < 10, f'{secs:.1f} s'
    assert not list(tmp_path.rglob('*.pt')) and not list(tmp_path.iterdir()), 'refused before anything was trained'
    assert not ray.is_initialized()

def test_reproduce_refuses_a_missing_cluster_at_once(tmp_path, capsys, loopback_driver):
    rc, out, err, secs = cdat(capsys, 'reproduce', 'hycon-table6', '--smoke', '--out', str(tmp_path), '--ray-address', '127.0.0.1:1')
    assert rc == 2 and 'no Ray cluster answers at 127.0.0.1:1 (Connection refused)' in one_error_line(err), err
    assert secs < 10, f'{secs:.1f} s'
    assert not list(tmp_path.rglob('*.pt'))


@pytest.mark.parametrize('failure', [
    Exception("The current node timed out during startup. This could happen because some of the raylet failed to "
              "startup or the GCS has become overloaded."), # Ray raises a bare Exception after waiting ~30 s
    ValueError("The configured object store size (30.0 GB) exceeds /dev/shm size (8.0 GB). This will harm performance. "
               "Consider deleting files in /dev/shm or increasing its size with --shm-size in Docker."),
])
def test_ray_that_cannot_start_is_one_line(failure, tmp_path, capsys, monkeypatch):
    "Ray's start-up failures (made here by a stand-in for ray.init) are one line, not 'probably a bug in cdatlib'"
    def init(**kw): raise failure
    monkeypatch.setattr(ray, 'init', init)
    rc, out, err, secs = cdat(capsys, *TUNE, '--out-dir', str(tmp_path))
    line = one_error_line(err)
    assert rc == 2 and line.startswith(f"cdat: error: Ray could not start on this machine: {str(failure).splitlines()[0]}; "
                                       "start it yourself, sized to fit (`ray start --head"), err
    assert 'bug' not in line and not list(tmp_path.rglob('*.pt')) and not ray.is_initialized()

def test_trial_no_node_can_hold_is_refused_by_the_cluster(cluster, tmp_path, capsys, loopback_driver):
    "Against the cluster's own nodes (two nodes of one CPU each): one line, nothing trained, the driver disconnected"
    addr = cluster['address']
    for args, needle in ((['--cpus-per-trial', '2'], '--cpus-per-trial 2: no node of the Ray cluster has that many '
                                                     '(nodes: 2 x (1 CPU, 0 GPU)); a trial runs on one node: ask for at most 1'),
                         (['--gpus-per-trial', '1'], '--gpus-per-trial 1: no node of the Ray cluster has that many '
                                                     '(nodes: 2 x (1 CPU, 0 GPU)); use 0')):
        rc, out, err, secs = cdat(capsys, *TUNE, '--out-dir', str(tmp_path), '--ray-address', addr, *args)
        assert rc == 2 and needle in one_error_line(err), err
        assert secs < 30, f'{secs:.1f} s'
        assert not list(tmp_path.rglob('*.pt')) and not ray.is_initialized()


@contextlib.contextmanager
def driven(args:list, tmp_path):
    "A driver process (its output in tmp_path/driver.log) and its deadline; killed with its whole session if still running"
    log = open(tmp_path/'driver.log', 'w')
    driver = subprocess.Popen([PY, *args], env=env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try: yield driver, time.monotonic() + RUN_TIMEOUT
    finally:
        if driver.poll() is None: os.killpg(driver.pid, signal.SIGKILL); driver.wait()
        log.close()

DONE = re.compile(r'^ray: done (.+) seed (\d+) on node ([0-9a-f]{8}) ')

def test_grid_spreads_over_two_nodes_and_survives_a_dead_worker(cluster, tmp_path):
    "Units run on both nodes; the worker dies in the middle of a unit; the grid ends with every row, that unit resumed"
    t0 = time.monotonic()
    name, out = 'hycon-table6', tmp_path/'grid'
    sets = ['--set', 'epochs=40'] # about 5 s a unit: long enough to die in the middle of one
    cfgs = resolve(EXPERIMENTS[name], smoke=True, out=out, sets={'epochs': 40})
    assert len(pending(cfgs)) == 5
    args = ['-c', 'import sys; from cdatlib.cli import main; sys.exit(main())', 'reproduce', name, '--smoke', *sets,
            '--out', str(out), '--ray-address', cluster['address']]
    worker, killed_unit, first_rows, seen_on_worker = cluster['worker'], None, None, set()
    with driven(args, tmp_path) as (driver, end):
        while killed_unit is None and driver.poll() is None and time.monotonic() < end:
            holding = worker.lock_holders(out) # the units the worker node trains now
            seen_on_worker |= set(holding)
            finished_on_worker = {f for f in seen_on_worker if (f/'done.json').exists()}
            for folder in holding:
                if not finished_on_worker or (folder/'done.json').exists() or not (folder/'log.csv').exists(): continue
                if len(pd.read_csv(folder/'log.csv')) < 2: continue
                worker.kill() # the worker machine dies, in the middle of its second unit, two epochs in
                killed_unit, first_rows = folder, pd.read_csv(folder/'log.csv')
                break
            time.sleep(0.05)
        kill_s = time.monotonic() - t0
        assert killed_unit is not None, ('the worker node never trained a second unit; driver output:\n'
                                         + (tmp_path/'driver.log').read_text()[-3000:])
        rc = driver.wait(timeout=max(1, end - time.monotonic()))
    text = (tmp_path/'driver.log').read_text()
    assert rc == 0, text[-3000:]
    print(f"worker killed after {kill_s:.1f} s (in {killed_unit.parent.name}, epoch {len(first_rows)}), grid done after "
          f"{time.monotonic() - t0:.1f} s:", *[l for l in text.splitlines() if l.startswith('ray:')], sep='\n  ')
    # every row, in the report
    assert pending(cfgs) == []
    per_seed = pd.read_csv(out/name/'results.csv')
    assert sorted(per_seed['row'].astype(str)) == sorted(cfgs)
    # the units ran on both nodes; the one that died with the worker finished on the other node
    done = {(m[1], int(m[2])): m[3] for m in map(DONE.match, text.splitlines()) if m}
    assert len(done) == 5 and len(set(done.values())) == 2, text
    label = next(l for l, c in cfgs.items() if c.run_dir(0) == killed_unit)
    worker_nodes = {done[(l, 0)] for l, c in cfgs.items() if c.run_dir(0) in finished_on_worker}
    assert len(worker_nodes) == 1 and done[(label, 0)] not in worker_nodes, (done, finished_on_worker)
    # ... resumed from its last.pt: the epochs it had checkpointed were not trained again (same timings)
    final = pd.read_csv(killed_unit/'log.csv')
    assert len(final) == 40 and list(final['epoch']) == list(range(40))
    kept = len(first_rows) - 1 # the last row may be newer than last.pt (log.csv is written first)
    assert kept >= 1 and final['time'][:kept].tolist() == first_rows['time'][:kept].tolist()


SWEEP = """import json, sys
from cdatlib.config import TrainConfig
from cdatlib.tune import tune_cdat
cfg = TrainConfig(method='cdat', confidence='ce', epochs=2, cdat_epochs=40, patience=0, batch_size=64, out_dir=sys.argv[1], seeds=[0])
res = tune_cdat(cfg, num_samples=2, ray_address=sys.argv[2], grace_period=40) # no early stop: every trial runs 40 epochs
print('TRIALS', res['trials'].to_json(orient='records'))
"""

def test_sweep_spreads_over_two_nodes_and_survives_a_dead_worker(cluster, tmp_path):
    "Trials run on both nodes; the worker dies in the middle of its trial; Tune runs it again, it resumes, every trial ends"
    t0 = time.monotonic()
    out = tmp_path/'sweep'
    head, worker = cluster['head'], cluster['worker']
    ran_on, killed, first_rows = {}, None, None # {trial folder: node}, the trial that died with the worker
    with driven(['-c', SWEEP, str(out), cluster['address']], tmp_path) as (driver, end):
        while driver.poll() is None and time.monotonic() < end:
            for node_name, node in (('head', head), ('worker', worker)):
                if node_name == 'worker' and killed: continue
                for folder in node.lock_holders(out):
                    if folder.parent.name != 'trials': continue # stages 1 and 2 train in the driver
                    ran_on.setdefault(folder, node_name)
                    if node_name == 'worker' and killed is None and (folder/'log.csv').exists() \
                       and not (folder/'done.json').exists() and len(pd.read_csv(folder/'log.csv')) >= 2:
                        worker.kill() # the worker machine dies, two epochs into its trial
                        killed, first_rows = folder, pd.read_csv(folder/'log.csv')
            time.sleep(0.05)
        rc = driver.wait(timeout=max(1, end - time.monotonic()))
    text = (tmp_path/'driver.log').read_text()
    assert rc == 0, text[-3000:]
    print(f"sweep done after {time.monotonic() - t0:.1f} s; trials ran on", {f.name: n for f, n in ran_on.items()},
          f"the worker died in {killed.name if killed else None}; driver:", *text.splitlines()[-12:], sep='\n  ')
    assert 'a trial failed' not in text, text[-3000:]
    assert killed is not None, ran_on
    assert set(ran_on.values()) == {'head', 'worker'}, ran_on
    trials = pd.DataFrame(json.loads(next(l for l in text.splitlines() if l.startswith('TRIALS '))[len('TRIALS '):]))
    assert len(trials) == 2 and (trials['epochs'] == 40).all(), trials   # every trial, every epoch
    final = pd.read_csv(killed/'log.csv')
    kept = len(first_rows) - 1 # the epochs in its last.pt when the worker died: not trained again (same timings)
    assert len(final) == 40 and kept >= 1 and final['time'][:kept].tolist() == first_rows['time'][:kept].tolist()
