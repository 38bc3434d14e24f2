"""Recording what a workflow produced as runs in the experiment store."""
from __future__ import annotations

from compression.data.datasets import load_digits
from compression.io.store import Store
from compression.workflows.case_base import CaseResult


def record_case(result: CaseResult, store=None) -> str:
    """Record a case's result as one run (kind 'case') in the experiment store; returns its id."""
    data = load_digits()
    d = result.to_dict()
    config = {"kind": "case", "case": result.case, "quick": result.quick, "seeds": len(result.seeds)}
    store = store if store is not None else Store()   # not `store or`: an empty Store is falsy (len 0)
    return store.record("case", f"case:{result.case}", data, config, d)
