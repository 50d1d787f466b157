"""Analysis of finished runs, outside the training loop: scaling-law fits (`scaling`, ``sambay scaling fit``)."""
