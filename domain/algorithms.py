"""The versions of the algorithms whose output the log records.

Every ``ComparisonsRequested`` (pairing), ``ContinuationDecided`` (decision) and
``Finalized`` (scoring) is stamped with the version of the algorithm that produced it, so
``batches verify`` can tell a deliberate change of algorithm from tampering.

Bump a version whenever its algorithm's output changes for the same log — a different
pair, decision, reason, context figure, score, rank or quality figure, beyond float
noise. Refactors that keep every output identical do not bump it.

* ``PAIRING_ALGORITHM_VERSION`` covers ``domain.pairing`` (and what it reads), i.e. the
  pairs, generation mode and wave of each ``ComparisonsRequested``.
* ``DECISION_ALGORITHM_VERSION`` covers ``domain.continuation`` (``decide`` and the guards)
  *and* the score fit that fills the decision's context, so bump it too when a scoring
  change moves the scores a decision sees.
* ``SCORING_ALGORITHM_VERSION`` covers the final re-fit in ``Finalized``: scores,
  standard errors, ranks, reliability and quality figures.

Events stored before stamping existed read as ``UNSTAMPED`` (0): the algorithm that made
them is not known, so verify can never call their divergences tampering.
"""

from __future__ import annotations

UNSTAMPED = 0
"""The algorithm version of an event stored before algorithm versions were recorded."""

PAIRING_ALGORITHM_VERSION = 1
DECISION_ALGORITHM_VERSION = 1
SCORING_ALGORITHM_VERSION = 1
