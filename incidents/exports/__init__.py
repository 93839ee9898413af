"""Disclosure control for exports (DESIGN §7), computed from the clear shell alone.

Guarantees of what is implemented so far (P1, differentially private counts):

* Only reports whose witness consented to statistics count, and never duplicates or rejected
  reports; a withdrawn consent is honoured by every later export.
* Only closed quarters are published; the grid of cells (quarter × category group, optionally ×
  country from a fixed public list) is declared before looking at the data and is complete:
  every cell is present, zeros included, so neither presence nor order reveals anything.
* Counts get discrete Laplace noise from OpenDP, calibrated so that one person contributing up
  to ``contributions`` reports changes the output distribution by at most ε; negatives are
  clamped to 0 (post-processing, no privacy cost).
* The ε is charged to a hash-chained budget ledger, checked against the yearly cap and committed
  *before* any count is computed; the same request twice draws fresh noise and is charged twice.
* No output contains an id, an exact date, a timestamp, free text or row order from the data.

``periods``, ``grid`` and ``dp`` import nothing from the web layer.
"""
