"""An explanation of one prediction: (token, attribution) pairs, rendered as HTML, terminal colours or a figure."""

from __future__ import annotations

import html
from typing import Any


class Explanation(list):
    """[(token, attribution), ...] toward `target`, with what the attributions add up to.

    Attributes:
      target: what was explained (a class name, or 'value' for regression).
      score: the explained output on the text (the class probability, or the value).
      baseline: the same output with every token embedding zero.
      error: completeness error, sum(attributions) - (score - baseline).
    """

    def __init__(self, pairs: list[tuple[str, float]], *, target: Any, score: float, baseline: float):
        super().__init__(pairs)
        self.target, self.score, self.baseline = target, score, baseline
        self.error = float(sum(a for _, a in pairs) - (score - baseline))

    def _scale(self) -> float:
        return max((abs(a) for _, a in self), default=0.0) or 1.0

    def html(self) -> str:
        """The tokens on green (toward the target) or red (away from it) backgrounds, by attribution."""
        scale = self._scale()
        spans = []
        for token, value in self:
            strength = min(abs(value) / scale, 1.0)
            rgb = "0, 160, 0" if value >= 0 else "200, 0, 0"
            spans.append(f'<span title="{value:+.4f}" style="background: rgba({rgb}, {0.8 * strength:.3f}); '
                         f'padding: 1px 2px; margin: 1px; border-radius: 3px">{html.escape(token)}</span>')
        head = (f"<p>toward <b>{html.escape(str(self.target))}</b> ({self.score:.4f}; baseline "
                f"{self.baseline:.4f})</p>")
        return head + "<p>" + " ".join(spans) + "</p>"

    def _repr_html_(self) -> str:  # Jupyter and Colab render an explanation in colour
        return self.html()

    def terminal(self) -> str:
        """The tokens in ANSI colours: green toward the target, red away, brighter for more."""
        scale = self._scale()
        out = []
        for token, value in self:
            level = 2 if abs(value) / scale > 0.5 else 1 if abs(value) / scale > 0.1 else 0
            colour = ("", "\033[32m", "\033[1;32m")[level] if value >= 0 else ("", "\033[31m", "\033[1;31m")[level]
            out.append(f"{colour}{token}\033[0m" if colour else token)
        return f"toward {self.target} ({self.score:.4f}): " + " ".join(out)

    def plot(self, path: str | None = "explanation.png") -> str | None:
        """A bar per token (green toward the target, red away); saved to `path` and returned."""
        import matplotlib.pyplot as plt

        tokens = [t for t, _ in self]
        values = [a for _, a in self]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(tokens)), 3.0))
        ax.bar(range(len(values)), values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right")
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_ylabel("attribution")
        ax.set_title(f"integrated gradients toward {self.target} ({self.score:.3f}; baseline {self.baseline:.3f})")
        from flaxtrain.figures import finish

        return finish(fig, path, dpi=120)
