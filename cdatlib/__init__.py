__version__ = "0.0.1"

# Chapter 09 adds resuming to chapter 08's `Learner.fit` with `@patch`: importing it here means every Learner,
# however it was imported, has the full `fit(n_epochs, resume=...)`.
from . import callbacks as _callbacks
