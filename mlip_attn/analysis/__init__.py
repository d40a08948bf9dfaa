"""Long-range diagnostics and plots (attention against distance, learned exponents; `reach`:
Jacobian sensitivity against distance, ``mlip-attn analyze reach``)."""
from .attention import (attention_maps, attention_modules, attention_vs_distance,
                        exponent_histogram, learned_exponents, plot_attention_vs_distance,
                        plot_exponents)

__all__ = ["attention_maps", "attention_modules", "attention_vs_distance", "exponent_histogram",
           "learned_exponents", "plot_attention_vs_distance", "plot_exponents"]
