"""Execution mode set-up shared by the entry points."""
import mindspore as ms

MODES = ("graph", "pynative")


def set_mode(mode, jit_level="O0"):
    """Graph mode with a jit level, or PyNative.

    On CPU, PyNative runs ops synchronously: MindSpore's asynchronous launch queue costs several
    milliseconds per op there, which made a tiny UNet step ~5x slower.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
    if mode == "graph":
        ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": jit_level}, max_call_depth=10000)
    else:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        if ms.get_context("device_target") == "CPU":
            ms.runtime.launch_blocking()
