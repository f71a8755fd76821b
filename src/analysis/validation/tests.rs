//! Tests of held-out validation and convergence.
