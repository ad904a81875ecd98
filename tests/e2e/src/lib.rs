//! Test harness helpers (see tests/e2e/tests/).
