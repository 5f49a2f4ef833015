"""Forward+backward time of HyCon's losses (L_hybrid: SCL + IAMCL + IEMCL with refinement) against the batch size,
HyCon (v1) vs HyCon-v2 (pair selection), and the HyCon add-on's step against the plain step of a small fusion model.

Usage:  python benchmarks/bench_hycon.py [--sizes 16 32 64 128 256 512] [--reps 10] [--warmup 3] [--model-reps 5]
                                          [--tailor-cpu] [--threads N] [--no-gpu]

Inputs: three modalities of d = 50 (the paper's size) with random values and random sentiment labels. One timed step
is `hycon_losses(...)` + `backward()` on fresh leaf tensors; the steps compared in one table are interleaved; the table shows the median (and min-max) in milliseconds
over `--reps` steps after `--warmup` untimed ones, and v2/v1, the ratio of the medians (goal: at most 1, the paper's
Table 8 has v2 training faster). The model rows time one training step (forward, task loss, auxiliary losses,
backward; no optimiser update) at batch 64: TAILOR on MOSEI-shaped batches with and without the `HyCon` add-on's
terms, and `HyConModel` on MOSI-shaped batches with and without its contrastive losses (goal: at most 1.1x the plain
step). On a CUDA GPU everything is repeated there, with synchronisation.
"""
import argparse, platform, statistics, time
import torch
from cdatlib.dataset import MODALITIES, Task
from cdatlib.hycon import HyConOptions, HyCon, HyConModel, hycon_losses

TASK = Task('regression', ('sentiment',))

def timeit(steps, device, reps, warmup):
    "Median, min and max milliseconds of each step; the steps are interleaved, so load on the machine hits them alike"
    for _ in range(warmup):
        for step in steps: step()
    ts = [[] for _ in steps]
    for _ in range(reps):
        for t_list, step in zip(ts, steps):
            if device.type == 'cuda': torch.cuda.synchronize()
            t = time.perf_counter(); step()
            if device.type == 'cuda': torch.cuda.synchronize()
            t_list.append((time.perf_counter() - t) * 1e3)
    return [(statistics.median(t), min(t), max(t)) for t in ts]

def loss_step(K, opts, device, g):
    h0 = {m: torch.randn(K, 50, generator=g).to(device) for m in MODALITIES}
    y = torch.randn(K, 1, generator=g).to(device)
    def step():
        h = {m: x.clone().requires_grad_() for m, x in h0.items()}
        sum(hycon_losses(h, y, TASK, opts).values()).backward()
    return step

def batch_for(dims, B, L, task, device, g):
    b = {m: torch.randn(B, L, d, generator=g).to(device) for m, d in dims.items()}
    b.update({f'{m}_mask': torch.ones(B, L, dtype=torch.bool, device=device) for m in dims})
    b['y'] = (torch.randn(B, 1, generator=g) if task.kind == 'regression' else (torch.rand(B, task.n_outputs, generator=g) > 0.7).float()).to(device)
    return b

def model_step(model, batch, task, device, addon=None):
    "forward + task loss + the model's auxiliary losses (+ the add-on's terms) + backward"
    torch.manual_seed(0)
    model.to(device).train()
    if addon is not None:
        with torch.no_grad(): addon.build({m: v.shape[-1] for m, v in model(batch).h.items()})
        addon.heads.to(device)
    def step():
        out = model(batch)
        loss = task.loss(out.logits, batch['y']) + sum(out.aux_losses.values())
        if addon is not None: loss = loss + sum(addon.losses(out, batch['y'], task).values())
        loss.backward()
        model.zero_grad(set_to_none=True)
        if addon is not None: addon.heads.zero_grad(set_to_none=True)
    return step

def fmt(t): return f"{t[0]:8.2f} ({t[1]:.2f}-{t[2]:.2f})"

def run(device, sizes, reps, warmup, model_reps, tailor=True):
    g = torch.Generator().manual_seed(0)
    print(f"\n## {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"\n| batch K | HyCon v1 ms | HyCon-v2 ms | v2 / v1 |\n|---|---|---|---|")
    for K in sizes:
        t1, t2 = timeit([loss_step(K, HyConOptions(), device, g), loss_step(K, HyConOptions.v2(), device, g)], device, reps, warmup)
        print(f"| {K} | {fmt(t1)} | {fmt(t2)} | {t2[0] / t1[0]:.2f} |")
    if not model_reps: return
    # the add-on on TAILOR (MOSEI-shaped: batch 64, 60 aligned steps, six emotions; sequence h with step masks)
    dims, B, L = {'text': 300, 'audio': 74, 'vision': 35}, 64, 60
    emo = Task('multilabel', ('happy', 'sad', 'anger', 'surprise', 'disgust', 'fear'))
    print(f"\n| model, batch 64 | step | ms | / plain |\n|---|---|---|---|")
    def show(model, names, times):
        for name, t in zip(names, times): print(f"| {model} | {name} | {fmt(t)} | {t[0] / times[0][0]:.2f} |")
    try:
        if not tailor: raise ImportError('not on the CPU unless --tailor-cpu (tens of seconds per step)')
        from cdatlib.models.tailor import TAILOR
        b = batch_for(dims, B, L, emo, device, g)
        torch.manual_seed(0); tailor = TAILOR(dims, emo.n_outputs, **TAILOR.data_args({m: L for m in dims}, emo))
        steps = [model_step(tailor, b, emo, device), model_step(tailor, b, emo, device, HyCon()),
                 model_step(tailor, b, emo, device, HyCon(HyConOptions.v2()))]
        show('TAILOR', ['plain', '+ HyCon add-on', '+ HyCon-v2 add-on'], timeit(steps, device, model_reps, 1))
    except ImportError as e: print(f"# TAILOR skipped: {e}")
    # the HyCon model (MOSI-shaped: batch 64, 50 steps, text 768 / audio 74 / vision 47, sentiment)
    dims, L = {'text': 768, 'audio': 74, 'vision': 47}, 50
    b = batch_for(dims, B, L, TASK, device, g)
    steps = []
    for kw in (dict(contrastive=False), {}, dict(v2=True)):
        torch.manual_seed(0)
        steps.append(model_step(HyConModel(dims, 1, max_len=L, **kw), b, TASK, device))
    show('HyConModel', ['plain (contrastive=False)', 'HyCon', 'HyCon-v2'], timeit(steps, device, model_reps, 1))

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[16, 32, 64, 128, 256, 512])
    ap.add_argument('--reps', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--model-reps', type=int, default=5, help='timed steps of each model row (0: no model rows)')
    ap.add_argument('--tailor-cpu', action='store_true', help='also time TAILOR on the CPU (slow)')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--no-gpu', action='store_true')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    run(torch.device('cpu'), a.sizes, a.reps, a.warmup, a.model_reps, a.tailor_cpu)
    if torch.cuda.is_available() and not a.no_gpu: run(torch.device('cuda'), a.sizes, a.reps, a.warmup, a.model_reps)
