"""A simulated LLM judge and provider: deterministic, offline, and able to misbehave on cue."""

from infrastructure.simulation.judge import SimulatedJudge, draw_thetas
from infrastructure.simulation.provider import SimulatedProvider

__all__ = ["SimulatedJudge", "SimulatedProvider", "draw_thetas"]
