"""The balancer in front of a stage's app hosts, as a rolling release uses it: drain, put back, errors seen.

Without `rollout.balancer` there is nothing to drain: each step says so and
the gate judges the batch by its health checks alone.
"""
from __future__ import annotations


def spec(ctx):
    return getattr(ctx.config.rollout, "balancer", None) if ctx.config.rollout else None


def describe(ctx, host, verb: str) -> str:
    if spec(ctx) is None:
        return f"no balancer configured: nothing to {verb}"
    return f"would {verb} {host.name} at the balancer"


def drain(ctx, host) -> dict:
    if spec(ctx) is None:
        return {"message": "no balancer configured (rollout.balancer): not drained"}
    raise NotImplementedError


def undrain(ctx, host) -> dict:
    if spec(ctx) is None:
        return {"message": "no balancer configured (rollout.balancer)"}
    raise NotImplementedError


def errors_since(ctx, since: float) -> dict | None:
    if spec(ctx) is None:
        return None
    raise NotImplementedError
