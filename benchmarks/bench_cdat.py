"""Cost of CDaT on top of each fusion model: training-step time and peak memory, CDaT / baseline, side by side in one run.

Usage:  python benchmarks/bench_cdat.py [--threads 1] [--budget 10] [--models NaiveFusion TFN MISA TAILOR]
                                        [--tailor-batches 16 64] [--with-ce] [--split-fuse] [--no-official] [--official-max-tailor-batch 16]
                                        [--no-memory] [--device cpu|cuda] [--amp] [--wall]

Batches are MOSEI-shaped (the reference size of the CDaT experiments): batch 64, 60 aligned steps, text 300, audio 74,
vision 35, 6 emotion logits; TAILOR also at batch 16. Every model is built with its default configuration.

Per model, four kinds of training step are interleaved (rotating order, so background load hits all alike):
  base      forward, task + auxiliary losses, backward, clip 1.0, AdamW (the Learner's `adamw`), zero_grad;
  cdat      the same with the `CDaT` callback's term (ConfidNet confidence): one measurement in eval mode without
            autograd (a forward pass of the batch, then one batched `fuse` over 3B rows reusing its encoder
            outputs), ConfidNet on the 3B fused vectors, six PKT terms;
  reuse     the same with `measure='training_pass'`: the masked fusion reuses the training forward's encoder outputs
            (no eval-mode forward; cheaper, but the training dropout decides the weights);
  ce        the same with CE confidence (no ConfidNet: the measurement and PKT only; shown with --with-ce);
  official  the same term computed with the official code's semantics (`official_passes=True`): four more full
            forward passes (one unused) in train mode, with autograd.
The floor is 1 + (eval no-grad forward + batched 3B fuse) / (base step): what an add-on that measures the batch in
eval mode and re-fuses it with each modality dropped must cost at least. On CPU the clock is the process's CPU time (--wall: wall-clock), so that other processes
on a shared machine do not inflate single steps; on CUDA it is wall-clock, synchronised. Peak memory is the highest
allocation above the step's start: on CPU from the torch profiler's per-op memory events (allocations freed inside
one op are not seen), on CUDA `torch.cuda.max_memory_allocated`. The official TAILOR step is skipped above
--official-max-tailor-batch (default 16: its memory is several times the baseline's).

Goals (issue 9): cdat/base within 10% of the floor; at most 1.3x for NaiveFusion, TFN and MISA, 1.5x for TAILOR;
peak memory at most 1.2x the baseline's.
"""
import argparse, copy, platform, statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch
from cdatlib.dataset import Task, MODALITIES
from cdatlib import learner as L_
from cdatlib.models.core import drop_each_modality
from cdatlib.cdat.confidence import ConfidNet
from cdatlib.cdat.transfer import CDaT

L = 60
DIMS = {'text': 300, 'audio': 74, 'vision': 35}
CLASSES = ('happy', 'sad', 'anger', 'surprise', 'disgust', 'fear')
MODULES = {'NaiveFusion': 'cdatlib.models.naive', 'TFN': 'cdatlib.models.tfn', 'MISA': 'cdatlib.models.misa',
           'TAILOR': 'cdatlib.models.tailor'}
GOALS = {'NaiveFusion': 1.3, 'TFN': 1.3, 'MISA': 1.3, 'TAILOR': 1.5}
FLOOR_SLACK, MEM_GOAL = 1.10, 1.20
TASK = Task('multilabel', CLASSES, 'mosei-emotions')


class Step:
    "Stands in for the Learner inside one training batch (what `CDaT.after_loss` reads and writes)"
    def __init__(self, model, batch):
        self.model, self.batch, self.task, self.training = model, batch, TASK, True
    def add_loss(self, name, value): self.loss_parts[name] = value; self.loss = self.loss + value


def make_batch(B, device):
    g = torch.Generator().manual_seed(0)
    b = {m: torch.randn(B, L, d, generator=g) for m, d in DIMS.items()}
    b.update({f'{m}_mask': torch.ones(B, L, dtype=torch.bool) for m in DIMS})
    b['y'] = (torch.rand(B, len(CLASSES), generator=g) > 0.7).float()
    b['index'] = torch.arange(B)
    return {k: v.to(device) for k, v in b.items()}


def train_step(model, opt, batch, cb, amp):
    "One optimiser step; `cb` is None (baseline) or a CDaT callback"
    st = Step(model, batch)
    with torch.autocast(batch['y'].device.type, dtype=torch.float16, enabled=amp):
        st.out = model(batch)
        st.loss_parts = {'task': TASK.loss(st.out.logits, batch['y']), **st.out.aux_losses}
        st.loss = sum(st.loss_parts.values())
        if cb is not None: cb.after_loss(st)
    st.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); opt.zero_grad(set_to_none=True)


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


CLOCK = time.process_time # CPU time of this process: on a shared machine, other processes' load does not inflate it

def timed(fn, device):
    clock = time.perf_counter if device.type == 'cuda' else CLOCK
    sync(device); t0 = clock(); fn(); sync(device)
    return (clock() - t0) * 1e3


def fuse_3b_ms(model, batch, device, n=3):
    "Median time of CDaT's measurement: an eval, no-grad forward, then one fuse over 3B rows (each modality dropped)"
    ts = []
    def measure():
        parts = model(batch).parts
        p3, d3 = drop_each_modality(parts)
        model.fuse(p3, d3)
    with torch.no_grad():
        model.eval()
        for _ in range(n + 1): ts.append(timed(measure, device))
        model.train()
    return statistics.median(ts[1:])


def peak_bytes(fn, device):
    "Highest memory allocated above the level at the start of `fn`"
    if device.type == 'cuda':
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(device); torch.cuda.reset_peak_memory_stats(device)
        fn(); torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof: fn()
    # every allocation and free is in exactly one event: an op's own (self) memory, or a '[memory]' event
    # for frees outside any op; replayed in time order, the running sum's maximum is the peak
    evs = sorted(prof.events(), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in evs:
        cur += e.cpu_memory_usage if e.name == '[memory]' else e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def bench(name, B, kinds, a, device):
    import importlib
    torch.manual_seed(0)
    cls = getattr(importlib.import_module(MODULES[name]), name)
    batch = make_batch(B, device)
    models, opts, cbs = {}, {}, {}
    base = cls(DIMS, len(CLASSES)).to(device).train()
    with torch.no_grad(): zdim = base(batch).z.flatten(1).shape[1]
    confidnet = ConfidNet(zdim).to(device).eval()
    for k in kinds: # identical copies, so that every kind steps the same weights
        models[k] = copy.deepcopy(base)
        opts[k] = L_.adamw(L_.param_groups(models[k], 0.01), 1e-4)
        if k == 'base': cbs[k] = None
        elif k == 'ce': cbs[k] = CDaT(alpha=1e4, confidence='ce', split_fuse=a.split_fuse)
        elif k == 'reuse': cbs[k] = CDaT(alpha=1e4, confidnet=copy.deepcopy(confidnet), measure='training_pass', split_fuse=a.split_fuse)
        else: cbs[k] = CDaT(alpha=1e4, confidnet=copy.deepcopy(confidnet), official_passes=(k == 'official'),
                            split_fuse=a.split_fuse and k != 'official')
        if cbs[k] is not None and cbs[k].confidnet is not None: cbs[k].confidnet.to(device).eval()
    run = {k: (lambda k=k: train_step(models[k], opts[k], batch, cbs[k], a.amp)) for k in kinds}
    for k in kinds: run[k]() # warm-up
    first = {k: timed(run[k], device) for k in kinds}
    n = max(a.reps, min(40, int(a.budget * 1e3 / max(first.values()))))
    ts = {k: [v] for k, v in first.items()}
    for i in range(n - 1):
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
        for k in order: ts[k].append(timed(run[k], device))
    med = {k: statistics.median(v) for k, v in ts.items()}
    f3 = fuse_3b_ms(models['base'], batch, device)
    mem = {k: peak_bytes(run[k], device) for k in kinds} if not a.no_memory else {}
    return med, f3, mem, n, sum(p.numel() for p in base.parameters() if p.requires_grad)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    p.add_argument('--budget', type=float, default=10., help='seconds of timed steps per model, all kinds (default 10)')
    p.add_argument('--reps', type=int, default=3, help='least number of timed steps per kind (default 3)')
    p.add_argument('--models', nargs='*', default=list(MODULES), choices=list(MODULES))
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--tailor-batches', type=int, nargs='*', default=[16, 64])
    p.add_argument('--no-official', action='store_true', help='skip the official-semantics CDaT step')
    p.add_argument('--official-max-tailor-batch', type=int, default=16,
                   help='skip the official TAILOR step above this batch size (its memory is several times the baseline\'s; default 16)')
    p.add_argument('--split-fuse', action='store_true', help='CDaT(split_fuse=True): three B-row fusion calls, not one 3B call')
    p.add_argument('--with-ce', action='store_true', help='also time CDaT with CE confidence (no ConfidNet)')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', action='store_true', help='float16 autocast (CUDA)')
    p.add_argument('--wall', action='store_true', help='wall-clock time on CPU (default: process CPU time, robust to load)')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    global CLOCK
    if a.wall: CLOCK = time.perf_counter
    device = torch.device(a.device)
    kinds = ['base', 'cdat', 'reuse'] + (['ce'] if a.with_ce else []) + ([] if a.no_official else ['official'])
    t_start = time.time()
    print(f"torch {torch.__version__} | python {platform.python_version()} | {platform.processor() or platform.machine()} | "
          f"device {device}{' (AMP)' if a.amp else ''} | {a.threads} thread(s)")
    clock = 'wall-clock' if (a.wall or device.type == 'cuda') else 'process CPU'
    print(f"MOSEI-shaped batches, L={L}, dims {DIMS}, {len(CLASSES)} logits; median {clock} ms per training step, kinds interleaved\n")
    hdr = (f"{'model':8} {'B':>3} {'params':>11} {'base ms':>8} {'cdat ms':>8} {'cdat/base':>9} {'floor':>6} "
           f"{'<=1.1fl':>7} {'goal':>5} {'ok':>3} {'mem':>5} {'ok':>3} | {'official ms':>11} {'off/base':>8} {'off mem':>7}")
    print(hdr); print('-' * len(hdr))
    rows = []
    for name in a.models:
        for B in (a.tailor_batches if name == 'TAILOR' else [a.batch_size]):
            ks = [k for k in kinds if not (k == 'official' and name == 'TAILOR' and B > a.official_max_tailor_batch)]
            try: med, f3, mem, n, params = bench(name, B, ks, a, device)
            except (RuntimeError, MemoryError) as e:
                print(f"{name:8} {B:>3} failed: {str(e)[:150]}", flush=True); continue
            r = med['cdat'] / med['base']; floor = 1 + f3 / med['base']; goal = GOALS[name]
            mr = mem['cdat'] / mem['base'] if mem else float('nan')
            ok_t = 'yes' if (r <= goal and r <= FLOOR_SLACK * floor) else 'no'
            ok_m = '-' if not mem else ('yes' if mr <= MEM_GOAL else 'no')
            off = (f"{med['official']:11.1f} {med['official'] / med['base']:7.2f}x "
                   f"{(mem['official'] / mem['base'] if mem else float('nan')):6.2f}x") if 'official' in med else \
                  (f"{'skipped (--official-max-tailor-batch)':>28}" if 'official' in kinds else '')
            off += f" | training_pass {med['reuse'] / med['base']:.2f}x"
            if 'ce' in med: off += f" | ce {med['ce'] / med['base']:.2f}x" 
            print(f"{name:8} {B:>3} {params:>11,} {med['base']:8.1f} {med['cdat']:8.1f} {r:8.2f}x {floor:5.2f}x "
                  f"{'yes' if r <= FLOOR_SLACK * floor else 'no':>7} {goal:4.1f}x {ok_t:>3} {mr:4.2f}x {ok_m:>3} | {off}"
                  f"   ({n} steps/kind)", flush=True)
            rows.append((name, B, r, floor, mr))
    print(f"\nfloor = 1 + (eval no-grad forward + batched 3B fuse) / base step. Goals: cdat/base <= {FLOOR_SLACK:.1f} x floor and "
          f"<= {', '.join(f'{k} {v}x' for k, v in GOALS.items())}; peak memory <= {MEM_GOAL}x. Total {time.time() - t_start:.0f}s.")


if __name__ == '__main__':
    main()
