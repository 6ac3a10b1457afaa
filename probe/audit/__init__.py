"""Signer-side key audit (issue 9): collect what each server serves, keep its history, judge it."""
