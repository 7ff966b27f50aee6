"""lm-evaluation-harness task YAMLs for our local data formats, so the same files run through lm-eval
(`type: lmEval`) and through our scorers (for comparisons, and to reuse lm-eval's task machinery)."""

from __future__ import annotations

from pathlib import Path

MULTIPLE_CHOICE = """task: {name}
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
"""

ROLLING_TEXT = """task: {name}
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: "{{{{text}}}}"
doc_to_target: "{{{{text}}}}"
metric_list: [{{metric: bits_per_byte}}]
"""


def write_task(directory: Path, name: str, data: Path, kind: str) -> Path:
    """Write `<directory>/<name>.yaml` for a multipleChoice JSONL (question, choices, answer) or a text JSONL."""
    template = {"multipleChoice": MULTIPLE_CHOICE, "perplexity": ROLLING_TEXT}[kind]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(template.format(name=name, data=data))
    return path
