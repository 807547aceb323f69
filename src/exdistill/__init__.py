"""exdistill: dataset distillation with EDD (Exclusive Dataset Distillation).

The Python API (``exdistill.api``)::

    import exdistill as xd
    ds = xd.load_dataset("digits")
    syn = xd.distill(ds, method="edd", ipc=10, seed=0, preset="quick")
    res = xd.evaluate(syn, ds, protocol="idc-quick", repeats=3, seed=0)
    syn.save("out/set"); syn = xd.SyntheticSet.load("out/set")
"""

__version__ = "0.1.0"

# After __version__ (modules below read it). The evaluation code lives in
# ``exdistill.evaluation``, so the API's ``evaluate`` shadows no module.
from exdistill.api import SyntheticSet, distill, evaluate, load_dataset  # noqa: E402

__all__ = ["SyntheticSet", "__version__", "distill", "evaluate", "load_dataset"]
