"""Plots (PNG, matplotlib without a display) and the self-contained HTML report."""
