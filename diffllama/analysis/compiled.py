"""The loops numba compiles (``magnitude_counts``' passes, ``row_loops``' top-k sums and the statistics of rows, from the rows or from their logits),
compiled at once: a few seconds once per process, which ``compile_loops`` spends when the app starts rather than in a
visitor's first request."""

import numpy as np
import torch

from . import row_loops
from .head_stats import NO_POOLING, row_statistics, top_k_sum
from .magnitude_counts import Counts


def compile_loops() -> None:
    block, ends = torch.ones(1, 1, 1), torch.ones(1, dtype=torch.int64)
    Counts(1).window_pass(block, ends, 0, 1, np.zeros(1, dtype=np.int64))
    Counts(1).coarse_pass(block, ends, np.zeros(1 << 15, dtype=np.int64))
    top_k_sum(block, 1)
    top_k_sum(torch.ones(2, 3, 2)[:, 1:], 1)  # a strided view of a block's rows: another compiled variant
    for rows in (torch.ones(2, 2, 2), torch.ones(2, 3, 2)[:, 1:]):  # a block's rows, whole and strided (row 0 left out)
        row_statistics(rows, 1, signed=True)  # a differential map's
        row_statistics(rows, 1, signed=False, logits=rows)  # a softmax map's given its logits
        ends = np.ones(rows.shape[1], dtype=np.int64)  # and from their logits (head statistics on the CPU)
        row_loops.softmax_logit_rows(rows.numpy(), ends, 1, np.empty((4, 2, rows.shape[1])), *NO_POOLING)  # pooling
        row_loops.diff_logit_rows(rows.numpy(), ends, 0.5, 1, np.empty((4, 1, rows.shape[1])), *NO_POOLING)  # or not: one type
