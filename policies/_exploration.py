"""Exploration strategies: each is a tiny validated model whose one job is to name its VW flags.

The catalog chooses one per decision point under ``policy.exploration``; ``algorithm`` picks the
class. SquareCB is the default: it led the digits bake-off (benchmarks/digits/README.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def vw_args(self) -> str:
        raise NotImplementedError


class SquareCB(_Strategy):
    """SquareCB (Foster & Rakhlin): inverse-gap weighting over the regression oracle's scores."""

    algorithm: Literal["squarecb"] = "squarecb"
    # 30, not VW's 10: the best learning across benchmarks/learning's problems (its README has the table).
    gamma_scale: float = Field(30.0, gt=0, description="larger explores less")
    gamma_exponent: float = Field(0.5, ge=0, description="how fast exploration shrinks with examples seen")

    def vw_args(self) -> str:
        return f"--squarecb --gamma_scale {self.gamma_scale!r} --gamma_exponent {self.gamma_exponent!r}"


class EpsilonGreedy(_Strategy):
    """Epsilon-greedy: the best action, and a uniform random one with probability epsilon."""

    algorithm: Literal["epsilon_greedy"] = "epsilon_greedy"
    epsilon: float = Field(0.05, ge=0, le=1)

    def vw_args(self) -> str:
        return f"--epsilon {self.epsilon!r}"


class Bag(_Strategy):
    """Bagging: a vote of bootstrapped policies (Thompson-sampling-like), with optional epsilon."""

    algorithm: Literal["bag"] = "bag"
    size: int = Field(5, ge=2, le=32)
    epsilon: float = Field(0.0, ge=0, le=1)

    def vw_args(self) -> str:
        return f"--bag {self.size} --epsilon {self.epsilon!r}"


class Cover(_Strategy):
    """Online cover: a set of policies kept diverse to cover the good actions."""

    algorithm: Literal["cover"] = "cover"
    size: int = Field(3, ge=1, le=32)
    psi: float = Field(1.0, ge=0)

    def vw_args(self) -> str:
        return f"--cover {self.size} --psi {self.psi!r}"


class Softmax(_Strategy):
    """Softmax over scores with inverse temperature lambda."""

    algorithm: Literal["softmax"] = "softmax"
    lambda_: float = Field(1.0, gt=0, alias="lambda")

    def vw_args(self) -> str:
        return f"--softmax --lambda {self.lambda_!r}"


Exploration = Annotated[SquareCB | EpsilonGreedy | Bag | Cover | Softmax, Field(discriminator="algorithm")]
