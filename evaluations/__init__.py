"""Evaluations: data, model zoo, estimators, suites, reports and the `advbridge` CLI."""
