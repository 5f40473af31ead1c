"""The work steps share (code, Django, health, registry, rollback), so that step modules stay thin.

Steps call work/ and drivers/; work/ never imports steps or the engine.
"""
