"""What each task is: corpora and readers, prompts and prefixes, gold rewards."""
