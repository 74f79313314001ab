"""Detection: baselines plus rules turn window summaries into alerts."""
