"""The paper's numbers and claims, read from ``paper_numbers.yaml`` (the one data file for them)."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")


@functools.cache
def paper() -> dict:
    return OmegaConf.to_container(OmegaConf.load(PAPER_NUMBERS), resolve=True)
