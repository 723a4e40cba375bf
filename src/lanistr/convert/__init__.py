"""Weight import from other libraries."""
