"""Data: readers for text, JSONL, CSV/TSV and CoNLL files, dataset fetching, tokenizers,
and the batches the task loops consume."""
