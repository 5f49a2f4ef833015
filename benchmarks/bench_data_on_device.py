"""Samples per second of one epoch, two ways, side by side, on MOSEI-shaped random tensors:

  * DataLoader: `dataset[i]` per sample + default collation (+ a host-to-device copy per batch on a GPU);
  * on device:  the whole split kept as tensors on the device, batches made by indexing (`cdatlib.learner.DeviceLoader`).

MOSEI train split (CMU-SDK/MulT GloVe features): 16,326 samples x 60 steps x text 300 / vision 35 / audio 74, float32
(about 1.6 GB). Usage:

    python benchmarks/bench_data_on_device.py                 # full size, CPU (+ CUDA when available)
    python benchmarks/bench_data_on_device.py --n 4000        # subsample for a quick run
    python benchmarks/bench_data_on_device.py --devices cuda  # one device only
"""
import argparse, copy, platform, time
import torch
from torch.utils.data import DataLoader
from cdatlib.dataset import Task, MultimodalDataset, EMOTIONS
from cdatlib.learner import to_device
from cdatlib.callbacks import DeviceLoader

MOSEI = dict(n=16_326, steps=60, dims={'text': 300, 'audio': 74, 'vision': 35})

def mosei_like(n, steps, dims, seed=0):
    "Random MOSEI-shaped multi-label dataset (6 emotions), padded like the real one (zeros at the start)"
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(n, steps, d, generator=g) for m, d in dims.items()}
    lengths = torch.randint(5, steps + 1, (n,), generator=g)
    mask = torch.arange(steps)[None] >= (steps - lengths)[:, None]   # left-padded, as in MulT's files
    y = (torch.rand(n, len(EMOTIONS), generator=g) < 0.2).float()
    task = Task('multilabel', EMOTIONS, 'mosei-emotions')
    return MultimodalDataset(feats, y, task, masks={m: mask for m in dims}, split='train', source='random')

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()
    elif device.type == 'mps': torch.mps.synchronize()

def epoch_rate(batches, device, n, to_dev):
    "Samples per second of one full pass over `batches` (every batch reaches `device`)"
    sync(device); t0 = time.perf_counter(); seen = 0
    for b in batches:
        if to_dev: b = to_device(b, device)
        seen += len(b['y'])
    sync(device)
    assert seen == n, (seen, n)
    return n / (time.perf_counter() - t0)

def bench(ds, device, batch_size, workers):
    n = len(ds)
    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                    num_workers=workers, pin_memory=device.type == 'cuda')
    next(iter(dl)) # warm-up (allocators, workers)
    r_dl = epoch_rate(dl, device, n, to_dev=True)
    t0 = time.perf_counter()
    dev_ds = copy.copy(ds).to(device); sync(device)   # a shallow copy: `ds` itself stays on the CPU
    t_move = time.perf_counter() - t0
    dl2 = DeviceLoader(dev_ds, batch_size, shuffle=True, seed=0)
    next(iter(dl2))
    r_dev = epoch_rate(dl2, device, n, to_dev=False)
    return r_dl, r_dev, t_move

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=MOSEI['n'], help='samples (default: the full MOSEI train split, 16326)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--workers', type=int, default=0, help='DataLoader worker processes')
    p.add_argument('--devices', nargs='*', default=None, help='default: cpu, plus cuda / mps when available')
    a = p.parse_args()
    devices = a.devices or ['cpu'] + (['cuda'] if torch.cuda.is_available() else []) + \
              (['mps'] if torch.backends.mps.is_available() else [])
    t0 = time.perf_counter()
    ds = mosei_like(a.n, MOSEI['steps'], MOSEI['dims'])
    gb = ds.nbytes() / 1e9
    print(f"MOSEI-shaped random data: {a.n} samples x {MOSEI['steps']} steps x text/vision/audio "
          f"{MOSEI['dims']['text']}/{MOSEI['dims']['vision']}/{MOSEI['dims']['audio']} float32 ({gb:.2f} GB, "
          f"built in {time.perf_counter() - t0:.1f}s); batch size {a.batch_size}; DataLoader workers {a.workers}")
    if a.n != MOSEI['n']: print(f"(subsampled: the full MOSEI train split has {MOSEI['n']} samples)")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':<8} {'DataLoader (samples/s)':>24} {'on device (samples/s)':>23} {'speed-up':>9} {'one-off move (s)':>17}")
    for d in devices:
        device = torch.device(d)
        name = torch.cuda.get_device_name(device) if device.type == 'cuda' else d
        r_dl, r_dev, t_move = bench(ds, device, a.batch_size, a.workers)
        print(f"{d:<8} {r_dl:>24,.0f} {r_dev:>23,.0f} {r_dev / r_dl:>8.1f}x {t_move:>17.2f}   {name}")

if __name__ == '__main__': main()
