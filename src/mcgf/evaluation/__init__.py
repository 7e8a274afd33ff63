"""Evaluation protocols over any embedder: feature extraction with a cache
(:mod:`.features`), University-1652 / University-WX (:mod:`.university`), the
University-160k challenge answer files and scoring (:mod:`.challenge`) and reports
(:mod:`.report`)."""
