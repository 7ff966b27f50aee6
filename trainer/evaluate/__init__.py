"""The Evaluation workload: `llmops-evaluate --config FILE`; scores, thresholds and the verdict."""
