"""Code that runs inside the workload pods (data, tokenizer, pretrain, finetune, eval, serve).

Imported as `llmops.trainer`. It never imports the operator; the operator imports `llmops.trainer.config`.
"""
