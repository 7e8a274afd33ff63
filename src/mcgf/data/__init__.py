"""Dataset layouts, image decoding, datasets and samplers."""
