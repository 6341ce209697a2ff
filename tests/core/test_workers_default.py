"""`[api] workers = "auto"` (the default): chosen from the machine's cores and memory."""

from __future__ import annotations

import os

import pytest

from agent.config import ConfigError
from agent.config.core import auto_workers
from agent.config.loader import parse_config

GiB = 2**30


@pytest.mark.parametrize(("cpus", "memory", "workers"), [
    (1, 8 * GiB, 0),    # one core: a second process only competes with the writer
    (2, 1 * GiB, 0),    # little memory: each worker is ~40 MB more
    (2, 4 * GiB, 1),    # the measured case: one worker beats none, two do no better than one
    (3, 4 * GiB, 1),
    (4, 8 * GiB, 2),
    (16, 64 * GiB, 2),  # past two, the writer's ~100 us a request is the limit
])
def test_the_rule(cpus: int, memory: int, workers: int) -> None:
    assert auto_workers(cpus, memory) == workers


def test_auto_is_the_default_and_resolves_from_this_machine() -> None:
    api = parse_config({}).api
    assert api.workers == "auto"
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert api.effective_workers == auto_workers(len(os.sched_getaffinity(0)), memory)
    assert parse_config({"api": {"workers": 3}}).api.effective_workers == 3
    assert parse_config({"api": {"workers": 0}}).api.effective_workers == 0


@pytest.mark.parametrize("bad", ["many", -1, 65, True, 1.5])
def test_a_bad_value_names_the_key_and_what_is_allowed(bad: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"api": {"workers": bad}})
    assert "api.workers" in str(e.value) and '"auto" or a whole number from 0 to 64' in str(e.value)
