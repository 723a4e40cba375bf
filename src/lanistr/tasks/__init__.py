"""Tasks (pretraining, fine-tuning, seq2seq, adaptation) and the one loop they share."""
