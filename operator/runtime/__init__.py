"""The operator process: settings, leader election, metrics, and Kopf start-up."""
