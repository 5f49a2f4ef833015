"Set-up shared by every test file"
import builtins, os
from pathlib import Path

# The real-data tests read $CDATLIB_SHARED_DATA. A checkout that sits beside a `shared/data` folder (as in CI) uses
# that folder when the variable is not set; without either, those tests skip and say why.
_beside = Path(__file__).resolve().parents[2]/'shared'/'data'
if 'CDATLIB_SHARED_DATA' not in os.environ and _beside.is_dir(): os.environ['CDATLIB_SHARED_DATA'] = str(_beside)

import pytest

@pytest.fixture
def without_ray(monkeypatch):
    "`import ray` fails, as on a machine without the optional extra `.[tune]`"
    real = builtins.__import__
    def no_ray(name, *a, **k):
        if name == 'ray' or name.startswith('ray.'): raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', no_ray)

@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test ends with the environment it started with: `ray.init` writes variables such as RAY_AUTH_MODE=token into
    os.environ, and a later test that starts Ray after a token-less cluster came and went would inherit them"""
    saved = dict(os.environ)
    yield
    os.environ.clear(); os.environ.update(saved)
