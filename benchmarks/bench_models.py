"""Training-step time of every fusion model, this checkout beside an older commit, measured side by side in one run.

Usage:  python benchmarks/bench_models.py [--threads 1] [--clock cpu|wall] [--budget 12] [--models tfn misa ...]
                                          [--opts fused foreach] [--full-batch] [--old-commit 8b280ff]
                                          [--old-path /tmp/cdat_8b280ff] [--no-old]

Batches are MOSEI-shaped, the reference size of the CDaT experiments: batch 64 (TAILOR 16 unless --full-batch: one
TAILOR step at 64 takes tens of seconds on one CPU thread), 60 aligned steps with no padding; text 300 (GloVe),
audio 74 (COVAREP), vision 35 (FACET); 6 emotion logits, BCE loss. Every model has its default configuration (TFN:
CDaT's reference TFN; MISA and TAILOR: the sizes CDaT ran them at).

A training step is what the Learner does per batch: forward, task loss + auxiliary losses, backward, global
gradient-norm clipping at 1.0, AdamW step (the Learner's own `adamw` and `param_groups`, lr 1e-4, weight decay
0.01), gradients zeroed. Two child processes, one importing `cdatlib` from this checkout and one from a `git
worktree` of the old commit (added on first use; the main checkout is not touched), build the same models from
the same seed; the parent alternates single steps between them (old, new, and new with AdamW(fused=True) /
(foreach=True) as asked, in rotating order), so background load hits every side alike. Times are medians of the
workers' CPU time by default (robust to other jobs on a shared machine; with one thread it is the step's compute
time) or of wall time (--clock wall). The ratio new / old is what the goal is stated in.

Then, for the new code only, in eval mode under no_grad: the time of `encode`, of one `fuse`, and of one batched
`fuse` over 3B samples (each modality dropped in turn, `drop_each_modality`), as fractions of the new training
step. These bound from below what an add-on that re-fuses with modalities dropped (CDaT) can cost per step.
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, L = 64, 60
DIMS = {'text': 300, 'audio': 74, 'vision': 35}
GOALS = {'tfn': 0.94, 'tailor': 0.82, 'misa': 0.78}   # step time new / 8b280ff at most (issue 8)
SMALL_BATCH = {'tailor': 16}   # batch used by default where a step at 64 takes many seconds on one CPU thread


# ---------------------------------------------------------------- child process: one side of the comparison
def worker(root:str, threads:int):
    "Serve JSON commands on stdin with `cdatlib` imported from `root`; one JSON answer per line on stdout"
    sys.path.insert(0, root)
    import torch
    torch.set_num_threads(threads)
    import cdatlib
    from cdatlib.dataset import Task
    from cdatlib.config import model_class   # the registry of the checkout under test (8b280ff has it too)
    from cdatlib import learner as L_
    task = None   # set by the first 'build': the parent sends this checkout's EMOTIONS to both sides
    models, opts, batches = {}, {}, {}

    def make_batch(n):
        g = torch.Generator().manual_seed(0)
        b = {m: torch.randn(n, L, d, generator=g) for m, d in DIMS.items()}
        b.update({f'{m}_mask': torch.ones(n, L, dtype=torch.bool) for m in DIMS})
        b['y'] = (torch.rand(n, task.n_outputs, generator=g) > 0.7).float()
        b['index'] = torch.arange(n)
        return b

    def optimiser(model, kind):
        groups = L_.param_groups(model, 0.01)
        if kind == 'learner': return L_.adamw(groups, 1e-4)
        return torch.optim.AdamW(groups, lr=1e-4, eps=1e-6, **{kind: True})   # foreach=True or fused=True

    clock = time.perf_counter

    def step(name, kind):
        model, opt, batch = models[name], opts[(name, kind)], batches[name]
        t0 = clock()
        out = model(batch)
        loss = task.loss(out.logits, batch['y']) + sum(out.aux_losses.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return (clock() - t0) * 1e3

    def stages(name, n):
        from cdatlib.models.core import drop_each_modality
        model, batch = models[name].eval(), batches[name]
        ts = {'encode': [], 'fuse': [], 'fuse_3B': []}
        with torch.no_grad():
            for _ in range(n + 1):   # the first round is a warm-up
                t0 = clock(); parts = model.encode(batch); t1 = clock()
                model.fuse(parts); t2 = clock()
                p3, d3 = drop_each_modality(parts); model.fuse(p3, d3); t3 = clock()
                for k, v in zip(ts, (t1 - t0, t2 - t1, t3 - t2)): ts[k].append(v * 1e3)
        model.train()
        return {k: statistics.median(v[1:]) for k, v in ts.items()}

    print(json.dumps({'ok': True, 'cdatlib': str(Path(cdatlib.__file__).parent), 'torch': torch.__version__}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd['op'] == 'clock': clock = time.process_time if cmd['clock'] == 'cpu' else time.perf_counter; ans = {}
            elif cmd['op'] == 'build':
                task = Task('multilabel', tuple(cmd['classes']), 'mosei-emotions')
                torch.manual_seed(0)
                models[cmd['model']] = model = model_class(cmd['model'])(DIMS, task.n_outputs).train()
                for kind in cmd['opts']: opts[(cmd['model'], kind)] = optimiser(model, kind)
                batches[cmd['model']] = make_batch(cmd['batch'])
                ans = {'params': sum(p.numel() for p in model.parameters() if p.requires_grad)}
            elif cmd['op'] == 'step': ans = {'ms': step(cmd['model'], cmd['opt'])}
            elif cmd['op'] == 'stages': ans = stages(cmd['model'], cmd['n'])
            elif cmd['op'] == 'free': models.pop(cmd['model'], None); opts.clear(); batches.clear(); ans = {}
            else: break
        except Exception as e:   # report it; the parent prints it in the table
            ans = {'error': f'{type(e).__name__}: {e}'[:200]}
        print(json.dumps(ans), flush=True)


class Side:
    "A worker process and a way to talk to it"
    def __init__(self, label, root, threads):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(root))
        self.label = label
        self.p = subprocess.Popen([sys.executable, __file__, '--worker', str(root), '--threads', str(threads)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(root))
        self.info = json.loads(self.p.stdout.readline())

    def __call__(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + '\n'); self.p.stdin.flush()
        ans = json.loads(self.p.stdout.readline())
        if 'error' in ans: raise RuntimeError(f"{self.label}: {ans['error']}")
        return ans

    def close(self):
        try: self.p.stdin.write(json.dumps({'op': 'quit'}) + '\n'); self.p.stdin.close()
        except (BrokenPipeError, OSError): pass
        self.p.wait(timeout=30)


def old_worktree(path:Path, commit:str) -> Path:
    "A git worktree of `commit` at `path` (added if missing; the main checkout is not touched)"
    if not (path/'cdatlib').is_dir():
        print(f"# adding a worktree of {commit} at {path}", file=sys.stderr)
        subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', str(path), commit], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=1, help='torch / OMP threads in each worker (default 1)')
    p.add_argument('--budget', type=float, default=12., help='seconds of timed steps per model and side (default 12)')
    p.add_argument('--reps', type=int, default=3, help='least number of timed steps per side (default 3)')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps per side first (default 1)')
    p.add_argument('--models', nargs='*', default=None,
                   help='names in the model registry, cdatlib.config.MODELS (default: all)')
    p.add_argument('--full-batch', action='store_true', help=f'batch {B} for every model (default: {SMALL_BATCH})')
    p.add_argument('--old-commit', default='8b280ff')
    p.add_argument('--old-path', type=Path, default=Path('/tmp/cdat_8b280ff'))
    p.add_argument('--no-old', action='store_true', help='only this checkout (no ratios)')
    p.add_argument('--opts', nargs='*', default=['fused'], choices=['foreach', 'fused'],
                   help='AdamW variants also timed on the new side (default: fused)')
    p.add_argument('--clock', choices=['cpu', 'wall'], default='cpu',
                   help="'cpu': CPU time of each worker process (robust to other jobs on a shared machine; with one "
                        "thread it is the step's compute time); 'wall': elapsed time (default cpu)")
    p.add_argument('--worker', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker: return worker(a.worker, a.threads)   # before this process imports any cdatlib
    sys.path.insert(0, str(ROOT))
    from cdatlib.config import MODELS   # the one model registry, the `cdat` command's
    from cdatlib.dataset import EMOTIONS
    a.models = a.models or list(MODELS)
    unknown = [m for m in a.models if m not in MODELS]
    if unknown: p.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")

    t_start = time.time()
    sides = {'new': Side('new', ROOT, a.threads)}
    if not a.no_old: sides['old'] = Side('old', old_worktree(a.old_path, a.old_commit), a.threads)
    for s in sides.values(): s(op='clock', clock=a.clock)
    print(f"torch {sides['new'].info['torch']} | python {platform.python_version()} | "
          f"{platform.processor() or platform.machine()} | {a.threads} thread(s) per side")
    print(f"new: {sides['new'].info['cdatlib']}" + (f" | old ({a.old_commit}): {sides['old'].info['cdatlib']}" if 'old' in sides else ''))
    print(f"MOSEI-shaped batches (B={B} unless the table says less), L={L} (no padding), dims {DIMS}, {len(EMOTIONS)} logits; training step = forward + "
          f"loss + backward + clip + AdamW; median ms of {a.clock} time, old and new steps interleaved\n")
    # (side, optimiser): 'learner' = cdatlib.learner.adamw as it is; 'foreach' / 'fused' = AdamW(foreach=True / fused=True)
    extra = [('new', k) for k in a.opts]
    runs = ([('old', 'learner')] if 'old' in sides else []) + [('new', 'learner')] + extra
    hdr = (f"{'model':12} {'B':>3} {'params':>11} {'old ms':>8} {'new ms':>8} {'new/old':>8} {'goal':>6} {'ok':>3} "
           + ''.join(f"{'+' + k + ' ms':>12} {'/old':>6} " for _, k in extra)
           + f"| {'encode':>6} {'fuse':>5} {'fuse3B':>6}")
    print(hdr); print('-' * len(hdr))
    for name in a.models:
        bs = B if a.full_batch else SMALL_BATCH.get(name, B)
        try:
            params = None
            for s in {side for side, _ in runs}:
                params = sides[s](op='build', model=name, classes=EMOTIONS, opts=[k for ss, k in runs if ss == s], batch=bs)['params']
            for _ in range(a.warmup):
                for s, k in runs: sides[s](op='step', model=name, opt=k)
            first = {r: sides[r[0]](op='step', model=name, opt=r[1])['ms'] for r in runs}
            n = max(a.reps, min(50, int(a.budget * 1e3 / sum(first.values()))))
            ts = {r: [v] for r, v in first.items()}
            for i in range(n - 1):
                order = runs[i % len(runs):] + runs[:i % len(runs)]   # rotate who goes first
                for r in order: ts[r].append(sides[r[0]](op='step', model=name, opt=r[1])['ms'])
            med = {r: statistics.median(v) for r, v in ts.items()}
            st = sides['new'](op='stages', model=name, n=max(2, min(10, n // 2)))
            new = med[('new', 'learner')]
            old = med.get(('old', 'learner'))
            goal = GOALS.get(name)
            ok = '' if goal is None or old is None else ('yes' if new / old <= goal else 'no')
            ratio = lambda t: f"{t / old:5.2f}x" if old else f"{'-':>6}"
            cells = (f"{(f'{old:8.1f}' if old else '-'):>8} {new:8.1f} {ratio(new):>8} {(f'{goal:.2f}x' if goal else '-'):>6} {ok:>3} "
                     + ''.join(f"{med[r]:12.1f} {ratio(med[r])} " for r in extra))
            print(f"{name:12} {bs:>3} {params:>11,} {cells}| {st['encode'] / new:6.2f} {st['fuse'] / new:5.2f} "
                  f"{st['fuse_3B'] / new:6.2f}  ({n} steps/side)", flush=True)
        except RuntimeError as e:
            print(f"{name:12} failed: {e}", flush=True)
        for s in sides.values(): s(op='free', model=name)
    for s in sides.values(): s.close()
    print(f"\ngoal: new step / {a.old_commit} step at most {', '.join(f'{k} {v}x' for k, v in GOALS.items())} "
          f"(issue 8). Total {time.time() - t_start:.0f}s.")


if __name__ == '__main__':
    main()
