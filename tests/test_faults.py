"""The fault matrix (bench/faults.py) as tests: every fault class injected into a full build on the
offline stand-in, each outcome asserted, and every untouched row equal to a clean build's."""

from __future__ import annotations

import pytest

from bench.faults import FAULT_NAMES, run_matrix


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return {o.fault: o for o in run_matrix(tmp_path_factory.mktemp("faults"), people=40)}


def test_every_fault_class_has_an_outcome(matrix):
    assert sorted(matrix) == sorted(FAULT_NAMES)


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_fault_outcome(matrix, fault):
    outcome = matrix[fault]
    assert outcome.ok, f"{fault}: expected {outcome.expected}, got {outcome.got}"
