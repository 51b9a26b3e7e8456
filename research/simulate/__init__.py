"""A discrete-event simulator of each scheduler's policy: it predicts a trial's makespan, wall
time and tasks per worker from its task list and a few calibrated costs per scheduler.

* :mod:`.core`: the cost model (:class:`Costs`), the event bookkeeping (:class:`Policy`, whose
  subclasses override one method) and :func:`simulate`.
* :mod:`.policies`: the policy of every registered scheduler (:data:`POLICIES`), with a greedy
  default for names it does not know.
* :mod:`.calibration`: fitting the costs from the overhead and granularity studies, and the
  versioned JSON file they are stored in (``make experiments`` writes one; the package ships
  defaults, labelled as such, for a report made without one).
* :mod:`.predict`: predictions for every trial of a results directory, and for a config that
  has not run (``python -m research predict CONFIG``).
"""

from .core import Costs, Policy, SimResult, simulate
from .policies import POLICIES, policy_for

__all__ = ["POLICIES", "Costs", "Policy", "SimResult", "policy_for", "simulate"]
