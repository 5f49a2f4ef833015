"""What one GPU does in a short lease: model steps with and without mixed precision, the CDaT cost benchmark, one
epoch of each baseline on a MOSEI-sized dataset held on the device, and the three-stage TAILOR + CDaT pipeline at
reduced epochs, extrapolated to the full pipeline on real MOSEI.

Usage (normally through benchmarks/gpu_check.sh, which also enforces the wall-clock limit):

    python benchmarks/gpu_check.py [--out DIR] [--budget-s 450] [--text-dim 300|768] [--batch-size 64]
                                   [--stage-epochs 2] [--confidnet-epochs 10] [--cpu-smoke]

Data: random tensors the size of CMU-MOSEI's aligned features (MulT / TAILOR files): train 16,326, valid 1,871,
test 4,659 utterances; 50 aligned steps; text 300 (GloVe; 768 for BERT features with --text-dim 768), audio 74
(COVAREP), vision 35 (FACET); left zero-padding with 5..50 real steps; six emotion labels, multi-label. Made on the
device and kept there: batches are made by indexing (`cdatlib.learner.DeviceLoader`), nothing is copied per batch.
The values are random, so the metrics mean nothing; only the times do.

Sections (each one's results are written as soon as it ends, so an interrupted run keeps what it measured):
  1. model steps   per baseline, the median time of a training step (forward, loss, backward, clip 1.0, AdamW) in
                   float32 and under float16 autocast + GradScaler, batch 64 (this also warms each model up);
  2. pipeline      TAILOR + CDaT with ConfidNet confidence, the library's own code path: stage 1 `build_learner`
                   + fit, stage 2 `cache_fused` + `fit_confidnet` (timed alone, for the per-epoch cost), then stages
                   2 and 3 through the run pipeline (`cdatlib.run.train`, method cdat, from the stage-1 weights),
                   all with mixed precision;
  3. baselines     one epoch (train + valid) of naive, tfn, misa and tailor through `build_learner(amp=True)`;
  4. bench_cdat    benchmarks/bench_cdat.py --device cuda --amp (CDaT / baseline step time and memory), its output.

Estimate for real MOSEI: 50 x (stage-1 epoch) + (z cache + 500 x ConfidNet epoch) + 50 x (stage-3 epoch), from the
measured steady epochs (the last one of each stage), against the goal of 10 minutes on one H100-class GPU.

--cpu-smoke runs the same code at tiny sizes on the CPU (under a minute), to test the script without a GPU.
"""
import argparse, copy, datetime, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MOSEI = dict(sizes={'train': 16_326, 'valid': 1_871, 'test': 4_659}, seq_len=50,
             dims={'text': 300, 'audio': 74, 'vision': 35})
SMOKE = dict(sizes={'train': 48, 'valid': 16, 'test': 16}, seq_len=4, dims={'text': 12, 'audio': 6, 'vision': 5})
FULL = {'baseline': 50, 'confidnet': 500, 'cdat': 50}   # the official three-stage schedule (train.sh)
GOAL_S = 600.
BASELINES = ('naive', 'tfn', 'misa', 'tailor')


def sync(device):
    import torch
    if device.type == 'cuda': torch.cuda.synchronize(device)


def synthetic_mosei(spec:dict, device, seed:int=0):
    "A `MultimodalData` of random MOSEI-shaped tensors, made directly on `device`"
    import torch
    from cdatlib.dataset import MultimodalDataset, MultimodalData, Task, EMOTIONS
    task = Task('multilabel', EMOTIONS, 'mosei-emotions')
    g = torch.Generator(device=device).manual_seed(seed)
    L, splits = spec['seq_len'], {}
    for s, n in spec['sizes'].items():
        lengths = torch.randint(min(5, L), L + 1, (n,), generator=g, device=device)
        mask = torch.arange(L, device=device)[None] >= (L - lengths)[:, None]   # left-padded, as MulT's files
        feats = {m: torch.randn(n, L, d, generator=g, device=device) * mask[..., None] for m, d in spec['dims'].items()}
        y = (torch.rand(n, len(EMOTIONS), generator=g, device=device) < 0.2).float()
        splits[s] = MultimodalDataset(feats, y, task, ids=[f'{s}_{i}' for i in range(n)],
                                      masks={m: mask for m in spec['dims']}, split=s, source='synthetic-mosei')
    return MultimodalData(splits, layout='synthetic')


def _callback_base():
    from cdatlib.learner import Callback
    return Callback

class PhaseTimer(_callback_base()):
    "Callback: synchronised wall time of every train and valid pass, one dict per epoch in `self.epochs`"
    order = 100
    def __init__(self): self.epochs = []
    def _t(self, learn):
        sync(learn.device); return time.perf_counter()
    def before_epoch(self, learn): self.cur = {}
    def before_train(self, learn): self.t0 = self._t(learn)
    def after_train(self, learn): self.cur['train_s'] = self._t(learn) - self.t0
    def before_valid(self, learn): self.t0 = self._t(learn)
    def after_valid(self, learn): self.cur['valid_s'] = self._t(learn) - self.t0
    def after_epoch(self, learn):
        self.cur['epoch_s'] = self.cur.get('train_s', 0.) + self.cur.get('valid_s', 0.)
        self.epochs.append({k: round(v, 4) for k, v in self.cur.items()})


def learner_kw(a, device, **more):
    return dict(lr=5e-5, batch_size=a.batch_size, amp=True, device=device, on_device=True, warmup=0.1,
                progress=False, csv=None, **more)


# ---------------------------------------------------------------- sections
def model_steps(a, data, device):
    "Median training-step time per baseline, float32 and float16 autocast + GradScaler"
    import torch
    from cdatlib.config import model_class
    from cdatlib import learner as L_
    batch = data.train.batch(torch.arange(min(a.batch_size, len(data.train)), device=device))
    out = {}
    for name in BASELINES:
        torch.manual_seed(0)
        model = model_class(name)(data.dims, data.task.n_outputs).to(device).train()
        opt = L_.adamw(L_.param_groups(model, 0.01), 1e-4)
        res = {'params': sum(p.numel() for p in model.parameters() if p.requires_grad)}
        for amp in (False, True):
            scaler = torch.amp.GradScaler('cuda', enabled=amp and device.type == 'cuda')
            def step():
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == 'cuda'):
                    o = model(batch)
                    loss = data.task.loss(o.logits, batch['y']) + sum(o.aux_losses.values())
                scaler.scale(loss).backward(); scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
            for _ in range(a.warmup_steps): step()
            ts, t_end = [], time.perf_counter() + a.step_budget_s
            while len(ts) < a.min_steps or (time.perf_counter() < t_end and len(ts) < 200):
                sync(device); t0 = time.perf_counter(); step(); sync(device); ts.append((time.perf_counter() - t0) * 1e3)
            res['amp_ms' if amp else 'fp32_ms'] = round(statistics.median(ts), 3); res['amp_steps' if amp else 'fp32_steps'] = len(ts)
        res['amp_speedup'] = round(res['fp32_ms'] / res['amp_ms'], 3)
        out[name] = res
        print(f"  {name:7} {res['params']:>11,} params  fp32 {res['fp32_ms']:8.2f} ms  amp {res['amp_ms']:8.2f} ms  "
              f"({res['amp_speedup']:.2f}x)", flush=True)
        del model, opt
    return out


def pipeline(a, data, device, run_dir:Path, res:dict):
    "Stage 1 (TAILOR), stage 2 timed alone (cache + ConfidNet epochs), then stages 2 + 3 through `run.train`; fills `res` as it goes"
    from cdatlib.config import build_model
    from cdatlib.callbacks import build_learner, set_seed, dataloaders
    from cdatlib.cdat.confidence import cache_fused, fit_confidnet
    from cdatlib.config import TrainConfig
    from cdatlib.run import train
    res.update(model='tailor', confidence='confidnet', stage_epochs=a.stage_epochs, confidnet_epochs=a.confidnet_epochs)
    set_seed(0)
    base = build_model(TrainConfig(model='tailor'), data)   # as the run pipeline builds it for stages 2 and 3
    t1 = PhaseTimer(); res['stage1_epochs'] = t1.epochs   # filled in place: an interrupted run keeps the epochs done
    t0 = time.perf_counter()
    build_learner(base, data, path=run_dir/'baseline', cbs=[t1], **learner_kw(a, device)).fit(a.stage_epochs)
    res['stage1_total_s'] = round(time.perf_counter() - t0, 3)
    print(f"  stage 1: {a.stage_epochs} TAILOR epochs, {[e['epoch_s'] for e in t1.epochs]} s", flush=True)
    # stage 2 alone: one forward pass over train + valid for the cache, then ConfidNet epochs on it
    dls = dataloaders(data, a.batch_size, device=device, on_device=True)
    sync(device); t0 = time.perf_counter()
    cache = {s: cache_fused(base, dls[s], data.task, device) for s in ('train', 'valid')}   # as the ConfidNet stage does: no autocast
    sync(device); res['cache_s'] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    fit_confidnet(base, {'train': dls['train'], 'valid': dls['valid']}, data.task, epochs=a.confidnet_epochs, cache=cache)
    sync(device); res['confidnet_fit_s'] = round(time.perf_counter() - t0, 3)
    res['confidnet_epoch_s'] = round(res['confidnet_fit_s'] / a.confidnet_epochs, 4)
    print(f"  stage 2: cache {res['cache_s']} s, ConfidNet {res['confidnet_epoch_s']} s/epoch", flush=True)
    del cache
    # the whole of stages 2 and 3 as the library runs them (its own ConfidNet fit, then CDaT fine-tuning)
    t3 = PhaseTimer(); res['stage3_epochs'] = t3.epochs
    t0 = time.perf_counter()
    # the stages as the library runs them: `init_from` names stage 1's weights, so stages 2 and 3 run on `data`
    # (the random tensors held on the device; the configuration records the embedded sample's path, unused)
    cfg = TrainConfig(model='tailor', method='cdat', confidence='confidnet', alpha=1e4, epochs=a.stage_epochs,
                      batch_size=a.batch_size, lr=5e-5, device=str(device), init_from=str(run_dir/'baseline'),
                      confidnet_args=dict(epochs=a.confidnet_epochs), out_dir=str(run_dir/'cdat'), patience=0)
    result = train(cfg, data=data, cbs=[t3], progress=False, log=lambda *m: None, warn=lambda *m: None)
    hist = result.seed_dir(0)/'cdat'/'log.csv'
    res['stages23_total_s'] = round(time.perf_counter() - t0, 3)
    res['pipeline_total_s'] = round(res['stage1_total_s'] + res['stages23_total_s'], 3)
    import pandas as pd
    res['stage3_train_loss_cdat'] = float(pd.read_csv(hist)['train_loss_cdat'].iloc[-1])   # the CDaT term was there and finite
    print(f"  stages 2+3 (run.train): {res['stages23_total_s']} s; stage-3 epochs {[e['epoch_s'] for e in t3.epochs]} s; "
          f"last train_loss_cdat {res['stage3_train_loss_cdat']}", flush=True)
    return res


def estimate(res:dict, cpu_smoke:bool=False):
    "The full pipeline on real MOSEI from the steady (last) measured epoch of each stage; None until all three are known"
    if not (res.get('stage1_epochs') and 'confidnet_epoch_s' in res and res.get('stage3_epochs')): return None
    e1, e3 = res['stage1_epochs'][-1]['epoch_s'], res['stage3_epochs'][-1]['epoch_s']
    est = {'stage1_s': FULL['baseline'] * e1, 'stage2_s': res['cache_s'] + FULL['confidnet'] * res['confidnet_epoch_s'],
           'stage3_s': FULL['cdat'] * e3}
    est['total_s'] = sum(est.values())
    return {k: round(v, 1) for k, v in est.items()} | {
        'schedule': dict(FULL), 'goal_s': GOAL_S, 'meets_goal': None if cpu_smoke else bool(est['total_s'] <= GOAL_S),
        'cdat_over_baseline_epoch': round(e3 / e1, 3), 'from_epochs': 'the last measured epoch of stages 1 and 3'}


def fit_stage_epochs(a, r:dict, left_s:float):
    "Fewer reduced-pipeline epochs when the measured TAILOR step says two of each would not fit the time left"
    ms = r['sections'].get('model_steps', {}).get('tailor', {}).get('amp_ms')
    if not ms or a.cpu_smoke: return
    epoch_s = 1.25 * ms / 1e3 * -(-r['data']['sizes']['train'] // a.batch_size)   # + validation, roughly
    need = lambda e: e * epoch_s * (1 + 1.6) + 2 * 0.3 * epoch_s   # stage 1 + stage 3 (CDaT ~1.5x) + two z caches
    while a.stage_epochs > 1 and need(a.stage_epochs) > 0.6 * left_s: a.stage_epochs -= 1
    r['stage_epochs_note'] = f'stage epochs {a.stage_epochs} (TAILOR amp step {ms:.1f} ms, {left_s:.0f} s left)'


def baseline_epochs(a, data, device, run_dir:Path):
    "One epoch (train + valid) of every baseline through `build_learner(amp=True)`"
    from cdatlib.config import model_class
    from cdatlib.callbacks import build_learner, set_seed
    out = {}
    for name in BASELINES:
        set_seed(0)
        model = model_class(name)(data.dims, data.task.n_outputs)
        t = PhaseTimer()
        build_learner(model, data, path=run_dir/name, checkpoint=False, cbs=[t], **learner_kw(a, device)).fit(1)
        out[name] = t.epochs[0] | {'steps': -(-len(data.train) // a.batch_size)}
        out[name]['ms_per_step'] = round(1e3 * out[name]['train_s'] / out[name]['steps'], 3)
        print(f"  {name:7} epoch {out[name]['epoch_s']:8.2f} s (train {out[name]['train_s']:.2f}, valid {out[name]['valid_s']:.2f})", flush=True)
    return out


def bench_cdat(a, device, timeout_s:float):
    "benchmarks/bench_cdat.py in a child process; its table as text"
    args = ['--device', device.type, '--budget', str(a.cdat_budget_s)]
    args += ['--amp', '--reps', '3'] if device.type == 'cuda' else ['--models', 'NaiveFusion', '--no-official', '--no-memory', '--batch-size', '4', '--reps', '1']
    cmd = [sys.executable, str(ROOT/'benchmarks'/'bench_cdat.py'), *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(ROOT))
        return {'command': ' '.join(['python', 'benchmarks/bench_cdat.py', *args]), 'returncode': p.returncode,
                'stdout': p.stdout[-8000:], 'stderr': p.stderr[-2000:]}
    except subprocess.TimeoutExpired as e:
        return {'command': ' '.join(cmd), 'returncode': None, 'timeout_s': timeout_s,
                'stdout': (e.stdout or b'').decode(errors='replace')[-8000:] if isinstance(e.stdout, bytes) else (e.stdout or '')[-8000:]}


# ---------------------------------------------------------------- report
def markdown(r:dict)->str:
    env, lines = r['environment'], []
    lines += [f"# GPU check, {r['date']}", '',
              f"- device: **{env['device_name']}** ({env['device']}), torch {env['torch']}, CUDA {env.get('cuda')}, "
              f"python {env['python']}, cdatlib commit {env.get('commit')}",
              f"- mode: {'CPU smoke test (tiny sizes: the times mean nothing)' if r['cpu_smoke'] else 'GPU, mixed precision (float16 autocast + GradScaler)'}",
              f"- data: {r['data']['sizes']} utterances, {r['data']['seq_len']} aligned steps, dims {r['data']['dims']}, on the device "
              f"({r['data']['gb']:.2f} GB, made in {r['data']['make_s']:.1f} s); batch {r['batch_size']}",
              f"- total wall time {r.get('wall_s', 0):.0f} s" + (f"; **not finished**: {r['interrupted']}" if r.get('interrupted') else ''), '']
    ms = r['sections'].get('model_steps')
    if ms:
        lines += ['## Training step (batch %d)' % r['batch_size'] + (' (on a CPU there is no autocast: both columns are float32)' if r['cpu_smoke'] else ''), '', '| model | params | fp32 ms | amp ms | speed-up |', '|---|---:|---:|---:|---:|']
        lines += [f"| {k} | {v['params']:,} | {v['fp32_ms']:.2f} | {v['amp_ms']:.2f} | {v['amp_speedup']:.2f}x |" for k, v in ms.items()]
        lines.append('')
    be = r['sections'].get('baseline_epochs')
    if be:
        lines += ['## One epoch per baseline (amp, data on the device)', '', '| model | epoch s | train s | valid s | ms / step |', '|---|---:|---:|---:|---:|']
        lines += [f"| {k} | {v['epoch_s']:.2f} | {v['train_s']:.2f} | {v['valid_s']:.2f} | {v['ms_per_step']:.2f} |" for k, v in be.items()]
        lines.append('')
    pl = r['sections'].get('pipeline')
    if pl and not pl.get('estimate_full_mosei'):
        lines += ['## TAILOR + CDaT pipeline', '', f"not finished; measured so far: `{json.dumps(pl, default=str)[:600]}`", '']
    elif pl:
        est = pl['estimate_full_mosei']
        lines += ['## TAILOR + CDaT (ConfidNet), three stages at reduced epochs', '',
                  f"- stage 1: {pl['stage_epochs']} epochs, per epoch {[e['epoch_s'] for e in pl['stage1_epochs']]} s",
                  f"- stage 2: z cache {pl['cache_s']:.2f} s, ConfidNet {pl['confidnet_epoch_s']:.4f} s per epoch ({pl['confidnet_epochs']} timed)",
                  f"- stage 3: {pl['stage_epochs']} CDaT epochs, per epoch {[e['epoch_s'] for e in pl['stage3_epochs']]} s "
                  f"({est['cdat_over_baseline_epoch']:.2f}x a stage-1 epoch)",
                  f"- the reduced pipeline took {pl['pipeline_total_s']:.1f} s", '',
                  f"**Estimate, full pipeline on real MOSEI ({est['schedule']['baseline']} + ConfidNet {est['schedule']['confidnet']} + "
                  f"{est['schedule']['cdat']} epochs): {est['total_s']:.0f} s = {est['total_s'] / 60:.1f} min** "
                  f"(stage 1 {est['stage1_s']:.0f} s, stage 2 {est['stage2_s']:.0f} s, stage 3 {est['stage3_s']:.0f} s) on {env['device_name']}; "
                  f"goal {GOAL_S / 60:.0f} min on one H100-class GPU: **"
                  + ('not judged: a CPU smoke run says nothing about the goal' if est['meets_goal'] is None else ('met' if est['meets_goal'] else 'not met'))
                  + '**', '']
    bc = r['sections'].get('bench_cdat')
    if bc:
        lines += ['## benchmarks/bench_cdat.py', '', f"`{bc['command']}` (exit {bc['returncode']})", '', '```', bc.get('stdout', '').rstrip(), '```', '']
    if r.get('errors'):
        lines += ['## Errors', ''] + [f"- {k}: {v}" for k, v in r['errors'].items()] + ['']
    return '\n'.join(lines)


def write(r:dict, out:Path):
    out.mkdir(parents=True, exist_ok=True)
    pl = r['sections'].get('pipeline')
    if pl is not None: pl['estimate_full_mosei'] = estimate(pl, r['cpu_smoke'])
    for name, text in (('gpu_check.json', json.dumps(r, indent=1, default=str)), ('gpu_check.md', markdown(r))):
        tmp = out/(name + '.tmp'); tmp.write_text(text); os.replace(tmp, out/name)


def environment(device)->dict:
    import torch
    env = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'python': platform.python_version(),
           'device': str(device), 'host_cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count()}
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        env.update(device_name=p.name, memory_gb=round(p.total_memory / 2**30, 1), capability=f'{p.major}.{p.minor}',
                   cudnn=torch.backends.cudnn.version())
    else: env['device_name'] = 'CPU'
    try: env['commit'] = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError): env['commit'] = None
    return env


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--out', type=Path, default=Path(os.environ.get('GPU_CHECK_OUT', ROOT/'benchmarks'/'results')),
                   help='folder for gpu_check.json and gpu_check.md (default $GPU_CHECK_OUT or benchmarks/results)')
    p.add_argument('--budget-s', type=float, default=450., help='stop starting new sections after this many seconds (default 450)')
    p.add_argument('--text-dim', type=int, default=300, choices=[300, 768], help='300 GloVe (default) or 768 BERT features')
    p.add_argument('--batch-size', type=int, default=64, help='batch size (train.sh: 64)')
    p.add_argument('--stage-epochs', type=int, default=2, help='epochs of stage 1 and of stage 3 in the reduced pipeline (default 2)')
    p.add_argument('--confidnet-epochs', type=int, default=10, help='ConfidNet epochs in the reduced pipeline (default 10)')
    p.add_argument('--step-budget-s', type=float, default=2., help='seconds of timed steps per model and precision (default 2)')
    p.add_argument('--cdat-budget-s', type=float, default=3., help="bench_cdat.py's --budget (default 3)")
    p.add_argument('--sections', nargs='*', default=['model_steps', 'pipeline', 'baseline_epochs', 'bench_cdat'])
    p.add_argument('--cpu-smoke', action='store_true', default=os.environ.get('GPU_CHECK_CPU_SMOKE') == '1',
                   help='tiny sizes on the CPU, to test this script without a GPU (or GPU_CHECK_CPU_SMOKE=1)')
    a = p.parse_args(argv)
    import torch
    if not a.cpu_smoke and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
              "nothing measured. Run on a GPU machine, or with --cpu-smoke to test the script on a CPU.", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    device = torch.device('cpu' if a.cpu_smoke else 'cuda')
    if a.cpu_smoke:
        torch.set_num_threads(1)
        spec = copy.deepcopy(SMOKE)
        a.batch_size, a.stage_epochs, a.confidnet_epochs = 16, 1, 2
        a.step_budget_s, a.cdat_budget_s, a.warmup_steps, a.min_steps = 0., 0.2, 1, 1
    else:
        spec = copy.deepcopy(MOSEI); spec['dims']['text'] = a.text_dim
        a.warmup_steps, a.min_steps = 3, 5
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    r = {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), 'cpu_smoke': a.cpu_smoke,
         'batch_size': a.batch_size, 'environment': environment(device), 'sections': {}, 'errors': {}}
    print(f"gpu_check: {r['environment']['device_name']}, torch {torch.__version__}" + (' (CPU smoke test)' if a.cpu_smoke else ''), flush=True)
    t0 = time.perf_counter()
    data = synthetic_mosei(spec, device); sync(device)
    r['data'] = {'sizes': spec['sizes'], 'seq_len': spec['seq_len'], 'dims': spec['dims'], 'make_s': round(time.perf_counter() - t0, 2),
                 'gb': sum(ds.nbytes() for ds in data) / 1e9}
    print(f"data: {spec['sizes']} x {spec['seq_len']} steps, {r['data']['gb']:.2f} GB on {device}, {r['data']['make_s']} s", flush=True)
    elapsed = lambda: time.perf_counter() - t_start
    try:
        with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
            for name in a.sections:
                left = a.budget_s - elapsed()
                if left < 20:
                    r['errors'][name] = f'skipped: {elapsed():.0f} s of the {a.budget_s:.0f} s budget used'; continue
                print(f"[{elapsed():5.0f} s] {name}", flush=True)
                try:
                    if name == 'model_steps': r['sections'][name] = model_steps(a, data, device)
                    elif name == 'pipeline':
                        fit_stage_epochs(a, r, left)
                        r['sections'][name] = {}
                        pipeline(a, data, device, Path(tmp)/'pipeline', r['sections'][name])
                    elif name == 'baseline_epochs': r['sections'][name] = baseline_epochs(a, data, device, Path(tmp)/'baselines')
                    elif name == 'bench_cdat': r['sections'][name] = bench_cdat(a, device, max(10., left - 10))
                    else: r['errors'][name] = 'unknown section'
                except (RuntimeError, ValueError, MemoryError) as e:   # e.g. CUDA out of memory: record it, go on
                    r['errors'][name] = f'{type(e).__name__}: {str(e)[:300]}'
                    if device.type == 'cuda': torch.cuda.empty_cache()
                r['wall_s'] = round(elapsed(), 1); write(r, a.out)
    except KeyboardInterrupt:   # gpu_check.sh's time limit sends SIGINT first
        r['interrupted'] = f'stopped by the time limit after {elapsed():.0f} s'
    r['wall_s'] = round(elapsed(), 1)
    write(r, a.out)
    e = (r['sections'].get('pipeline') or {}).get('estimate_full_mosei')
    if e:
        print(f"estimate, full TAILOR+CDaT on real MOSEI: {e['total_s']:.0f} s ({e['total_s'] / 60:.1f} min); goal {GOAL_S:.0f} s: "
              f"{'not judged (CPU smoke)' if e['meets_goal'] is None else ('met' if e['meets_goal'] else 'not met')}")
    print(f"wrote {a.out/'gpu_check.json'} and {a.out/'gpu_check.md'} in {r['wall_s']:.0f} s")
    return 1 if r['errors'] or r.get('interrupted') else 0


if __name__ == '__main__':
    sys.exit(main())
