"""Forward+backward time per batch of every fusion model at its reference size, on MOSEI-shaped batches.

Usage:  python benchmarks/bench_models.py [--reps 10] [--warmup 3] [--threads N] [--no-gpu] [--models NaiveFusion TFN ...]

Batches are MOSEI-shaped (batch 64, 60 aligned steps; text 300 GloVe, audio 74 COVAREP, vision 35 FACET; 6 emotion
logits, BCE loss). Each model is built with its default configuration (for TFN that is CDaT's reference TFN).
For every model: `--warmup` untimed steps, then `--reps` timed steps of forward + loss + backward (gradients
zeroed between steps, no optimizer update); the table shows the median and the spread (min-max) in milliseconds.
All models are measured in the same run, one after another, on the same batch. When a CUDA GPU is present the
same is repeated on the GPU in fp32 and with mixed precision (torch.autocast; bf16 where supported, else fp16 with
a GradScaler), timed with CUDA synchronisation.
"""
import argparse, importlib, platform, statistics, sys, time
import torch

from cdatlib.dataset import Task
from cdatlib.models.core import count_parameters
from cdatlib.models.naive import NaiveFusion
from cdatlib.models.tfn import TFN

B, L = 64, 60
DIMS = {'text': 300, 'audio': 74, 'vision': 35}
TASK = Task('multilabel', ('happy', 'sad', 'anger', 'surprise', 'disgust', 'fear'), 'mosei-emotions')


def builders():
    "name -> callable(dims, n_outputs): every model available in this install, at its default size."
    b = {'NaiveFusion': NaiveFusion, 'TFN': TFN}
    for name, mod in (('MISA', 'cdatlib.models.misa'), ('TAILOR', 'cdatlib.models.tailor')):
        try: b[name] = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError) as e: print(f"# {name} skipped: {e}", file=sys.stderr)
    return b


def mosei_batch(device, seed=0):
    "A MOSEI-shaped batch in the `Batch` layout, all steps real."
    g = torch.Generator().manual_seed(seed)
    b = {m: torch.randn(B, L, d, generator=g) for m, d in DIMS.items()}
    b.update({f'{m}_mask': torch.ones(B, L, dtype=torch.bool) for m in DIMS})
    b['y'] = (torch.rand(B, TASK.n_outputs, generator=g) > 0.7).float()
    b['index'] = torch.arange(B)
    return {k: v.to(device) for k, v in b.items()}


def time_model(model, batch, device, reps, warmup, amp=False):
    "Median, min and max milliseconds of forward + loss + backward."
    model.to(device).train()
    cuda = device.type == 'cuda'
    dtype = torch.bfloat16 if (cuda and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler('cuda', enabled=amp and cuda and dtype == torch.float16)
    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            out = model(batch)
            loss = TASK.loss(out.logits, batch['y']) + sum(out.aux_losses.values())
        scaler.scale(loss).backward()
        model.zero_grad(set_to_none=True)
    for _ in range(warmup): step()
    ts = []
    for _ in range(reps):
        if cuda: torch.cuda.synchronize()
        t0 = time.perf_counter(); step()
        if cuda: torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts), max(ts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--reps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    p.add_argument('--no-gpu', action='store_true')
    p.add_argument('--models', nargs='*', default=None)
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    bs = builders()
    names = a.models or list(bs)
    print(f"torch {torch.__version__} | python {platform.python_version()} | {platform.processor() or platform.machine()} "
          f"| CPU threads {torch.get_num_threads()}")
    print(f"MOSEI-shaped batch: B={B}, L={L}, dims {DIMS}, {TASK.n_outputs} outputs; "
          f"warm-up {a.warmup}, median of {a.reps} reps (forward + loss + backward)\n")
    runs = [('cpu', torch.device('cpu'), False)]
    if torch.cuda.is_available() and not a.no_gpu:
        gpu = torch.device('cuda')
        runs += [(f'cuda fp32', gpu, False), (f'cuda amp', gpu, True)]
        print(f"GPU: {torch.cuda.get_device_name(0)}\n")
    else:
        print("no CUDA GPU here: GPU rows skipped\n")
    hdr = f"{'model':12} {'params':>11} " + ' '.join(f"{r[0] + ' ms':>26}" for r in runs)
    print(hdr); print('-' * len(hdr))
    for name in names:
        torch.manual_seed(0)
        model = bs[name](DIMS, TASK.n_outputs)
        cells = []
        for label, dev, amp in runs:
            batch = mosei_batch(dev)
            try:
                med, lo, hi = time_model(model, batch, dev, a.reps, a.warmup, amp)
                cells.append(f"{med:9.1f} ({lo:7.1f}-{hi:7.1f})")
            except RuntimeError as e:   # e.g. out of memory: report it, keep the other rows
                cells.append(f"{'failed: ' + str(e)[:16]:>26}")
        print(f"{name:12} {count_parameters(model):>11,} " + ' '.join(f"{c:>26}" for c in cells), flush=True)


if __name__ == '__main__':
    main()
