"""The search methods, each run over a whole chunk of problems with batched model calls.

Every runner has the signature ``(ledger, questions, prompts, strategy, settings) ->
list[Outcome]``, one outcome per problem in order; ``run_search`` (search/run.py) adds
chunking, compute and grading around them.
"""

from .adaptive import run_bon_verified, run_majority_stop
from .calls import Ledger, Outcome, Settings, derive_seed
from .sampling import run_best_of_n, run_cot, run_majority
from .tree import run_beam, run_dvts

RUNNERS = {
    "cot": run_cot,
    "majority": run_majority,
    "best_of_n": run_best_of_n,
    "beam": run_beam,
    "dvts": run_dvts,
    "majority_stop": run_majority_stop,
    "bon_verified": run_bon_verified,
}

__all__ = [
    "Ledger", "Outcome", "RUNNERS", "Settings", "derive_seed",
    "run_beam", "run_best_of_n", "run_bon_verified", "run_cot", "run_dvts", "run_majority", "run_majority_stop",
]
