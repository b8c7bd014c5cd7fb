"""The offline half, in rooms by job whose imports run one way: ``sweep`` (run every strategy over a
grid of budgets into the outcome store and its snapshots) ← ``fit`` (the training table, tuning, the
selector and its plans, the router artifact) ← ``evaluation`` (the cross-fitted comparison that
judges them) ← ``report`` (explain, plots, HTML) ← :mod:`.quickstart` (the whole loop)."""
