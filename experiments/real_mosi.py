"""Every fusion model on the real MOSI utterance features: test metrics as mean ± std over seeds.

Usage (from the repository root, with ../shared/data beside it or CDATLIB_SHARED_DATA set):

    python experiments/real_mosi.py --seeds 0 1 2 --epochs 30
    python experiments/real_mosi.py --models MISA TAILOR      # add models later; their old rows are replaced

Each run: train with the Learner, keep the epoch with the best validation MAE, evaluate the test split once.
Splits: 'std' (SDK folds) and 'poria' (the features' speaker-independent split; 10% of its train videos -> valid).
Writes experiments/results/real_mosi_std.csv, real_mosi_poria.csv (one row per seed, plus the ridge/logistic
baseline) and real_mosi.md (mean ± std tables, seeds, command, torch version, hardware).
See nbs/14_real_mosi.ipynb for the explanation.
"""
import argparse, shlex, sys
from pathlib import Path

from cdatlib.experiments.real_mosi import (model_builders, real_mosi_path, run_real_mosi, write_results,
                                            TRAIN_DEFAULTS)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='*', default=None, help=f'default: all available ({", ".join(model_builders())})')
    p.add_argument('--seeds', nargs='*', type=int, default=[0, 1, 2])
    p.add_argument('--splits', nargs='*', default=['std', 'poria'], choices=['std', 'poria'])
    p.add_argument('--epochs', type=int, default=TRAIN_DEFAULTS['n_epochs'])
    p.add_argument('--lr', type=float, default=TRAIN_DEFAULTS['lr'])
    p.add_argument('--batch-size', type=int, default=TRAIN_DEFAULTS['batch_size'])
    p.add_argument('--device', default=None, help='cpu, cuda, ... (default: CUDA when available)')
    p.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    p.add_argument('--no-baseline', action='store_true', help='skip the ridge/logistic rows (keeps the stored ones)')
    p.add_argument('--data', default=None, help='shared data folder (default: $CDATLIB_SHARED_DATA or ../shared/data)')
    p.add_argument('--out', default=str(Path(__file__).resolve().parent / 'results'))
    a = p.parse_args(argv)
    if not real_mosi_path(a.data).exists():
        sys.exit(f"real MOSI features not found at {real_mosi_path(a.data)}: clone the repository beside shared/ "
                 f"or set CDATLIB_SHARED_DATA")
    df = run_real_mosi(models=a.models, seeds=a.seeds, splits=a.splits, n_epochs=a.epochs, lr=a.lr,
                       batch_size=a.batch_size, root=a.data, device=a.device, amp=a.amp, baseline=not a.no_baseline)
    command = 'python experiments/real_mosi.py ' + ' '.join(shlex.quote(x) for x in argv)
    settings = dict(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, optimizer='AdamW (wd 0.01), 10% warm-up + '
                    'linear decay, grad clip 1.0', selection='best valid MAE')
    md = write_results(df, a.out, command=command.strip(), settings=settings)
    print(md.read_text())


if __name__ == '__main__':
    main()
