"""The activation memory budget: how large one chunk of attention or feed-forward may be.

Full-size SVD at 576x1024 would otherwise materialise (frames x heads x 9216 x 9216) fp32
attention scores, about 85 GB per layer for 25 frames with guidance. Chunks are exact:
chunking changes the order of work, never the result beyond float rounding.
"""
import os

MIB = 1 << 20
AUTO_CAP = 512 * MIB
AUTO_FLOOR = 16 * MIB
AUTO_FRACTION = 16
SCORE_BYTES = 12  # per attention score: fp32 logits, the softmax output and a temporary


def available_memory():
    """Bytes the OS can still hand out (MemAvailable), or a conservative guess where unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def auto_budget():
    """min(512 MiB, available / 16), at least 16 MiB."""
    return max(AUTO_FLOOR, min(AUTO_CAP, available_memory() // AUTO_FRACTION))


# The current budget in bytes, read by the networks as they run; inside a compiled graph it is a
# constant of that compilation, so set it before the first call.
BUDGET = [auto_budget()]


def set_memory_budget(megabytes=None):
    """Fix the budget in MiB; ``None`` returns to the automatic budget (a share of available memory)."""
    if megabytes is None:
        BUDGET[0] = auto_budget()
        return
    if isinstance(megabytes, bool) or not isinstance(megabytes, (int, float)) or not megabytes > 0:
        raise ValueError(f"memory budget must be a positive number of MiB, got {megabytes!r}")
    BUDGET[0] = int(megabytes * MIB)


def memory_budget():
    """Bytes one attention or feed-forward chunk may use."""
    return BUDGET[0]


def plan_row_chunk(rows, bytes_per_row, budget):
    """Rows per chunk so that one chunk's intermediates fit ``budget`` (at least one row)."""
    return max(1, min(rows, budget // max(1, bytes_per_row)))


def plan_attention_chunks(batch, queries, keys, budget):
    """(batch, query, key) chunk sizes whose attention scores fit ``budget`` bytes.

    Whole rows of keys are preferred (one exact softmax); keys are split (two passes against
    the row's maximum logit) only when a single query row does not fit.
    """
    row = keys * SCORE_BYTES
    if row > budget:
        return 1, 1, max(1, budget // SCORE_BYTES)
    query_chunk = min(queries, budget // row)
    if query_chunk < queries:
        return 1, query_chunk, keys
    return max(1, min(batch, budget // (queries * row))), queries, keys
