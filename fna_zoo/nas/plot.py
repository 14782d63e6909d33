"""Probabilities over a search as a PNG (matplotlib, Agg): one panel per layer slot's ops and per stage's widths."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..fileio import save_figure
from .space import SearchSpace

__all__ = ['plot_probabilities']


def plot_probabilities(history: list[dict[str, Any]], space: SearchSpace, path: str | os.PathLike) -> Path:
    """Plot every slot's op probabilities and every stage's width probabilities against the step.

    Args:
        history: Snapshots `{'step', 'ops': [per slot], 'widths': [per stage]}` in step order.
        space: The search space (names of the candidates).
        path: The PNG to write (atomically).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path = Path(path)
    rows, cols = len(space.stages), max(len(st.slots) for st in space.stages) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows), squeeze=False, sharex=True, sharey=True)
    steps = [h['step'] for h in history]
    slot = 0
    for r, st in enumerate(space.stages):
        for c in range(cols):
            ax = axes[r][c]
            if c < len(st.slots):
                names = st.slots[c]
                for i, name in enumerate(names):
                    ax.plot(steps, [h['ops'][slot][i] for h in history], label=name,
                            linestyle='--' if name == 'skip' else '-')
                ax.set_title(f'stage {st.index} slot {c}', fontsize=8)
                if r == 0 or c == 0 and r == rows - 1:
                    ax.legend(fontsize=5, ncol=2)
                slot += 1
            elif c == cols - 1:
                for i, w in enumerate(st.widths):
                    ax.plot(steps, [h['widths'][r][i] for h in history], label=f'{w} ch')
                ax.set_title(f'stage {st.index} width', fontsize=8)
                ax.legend(fontsize=5)
            else:
                ax.axis('off')
            ax.tick_params(labelsize=6)
    fig.suptitle('architecture probabilities over the search (x: weight step)', fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
