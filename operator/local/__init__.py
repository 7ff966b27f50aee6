"""Local mode: run the lifecycle manifests on one machine and show what happened, as kubectl would."""
